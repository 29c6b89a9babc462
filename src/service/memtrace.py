"""Allocation tracing for soak runs: off unless BEACON_TRACEMALLOC_FRAMES > 0.

When on, the first SIGUSR2 starts `tracemalloc` (keeping that many frames of each
allocation's traceback; not from start-up, whose imports it would slow several times over),
and every later one writes a snapshot (`<pid>-<n>.tracemalloc`, read back with
`tracemalloc.Snapshot.load`) and a census of live objects by type (`<pid>-<n>.types.json`,
from `gc.get_objects()`) to BEACON_TRACEMALLOC_DIR. `make soak` (bench/soak.py) starts the
tracing once its processes are up, signals them again after warm-up and at the end, and
prints what grew in between. Production leaves it off: tracing costs CPU and memory on every
allocation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import itertools
import json
import os
import signal
import threading
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

from service.config import Settings

SIGNAL = signal.SIGUSR2
CHILD_SECONDS = 600  # a dumping child that takes longer is killed
_dumps = itertools.count(1)


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def limit_arenas(settings: Settings) -> bool:
    """Caps glibc's malloc arenas at `settings.malloc_arena_max` (what MALLOC_ARENA_MAX does,
    set before any thread starts); whether the cap was set. False where the C library is not
    glibc (musl has no arenas to cap) or the setting is 0."""
    if settings.malloc_arena_max <= 0:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(mallopt(M_ARENA_MAX, settings.malloc_arena_max))


def install(settings: Settings) -> bool:
    """Installs the SIGUSR2 handler when the settings ask for it; whether they did."""
    if settings.tracemalloc_frames <= 0:
        return False
    frames = settings.tracemalloc_frames
    directory = settings.tracemalloc_dir or settings.data_dir / "tracemalloc"
    directory.mkdir(parents=True, exist_ok=True)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if tracemalloc.is_tracing():
            dump_in_child(directory)
        else:
            tracemalloc.start(frames)

    signal.signal(SIGNAL, on_signal)
    return True


def dump_in_child(directory: Path) -> None:
    """`dump` in a forked copy of the process: taking a snapshot copies every trace, and the
    memory that takes would stay with this process (raising the RSS the soak measures)."""
    n = next(_dumps)
    pid = os.getpid()
    child = os.fork()
    if child == 0:  # the copy: dump and leave, whatever happens (killed if it hangs)
        code = 1
        try:
            signal.alarm(CHILD_SECONDS)
            dump(directory, f"{pid}-{n}")
            code = 0
        finally:
            os._exit(code)
    threading.Thread(target=os.waitpid, args=(child, 0), daemon=True).start()


def dump(directory: Path, name: str) -> Path:
    """Writes a snapshot and an object census to `directory`; returns the snapshot's path."""
    stem = directory / name
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    snapshot.dump(f"{stem}.tracemalloc.part")
    Path(f"{stem}.types.json").write_text(json.dumps(dict(types.most_common(300))))
    # Renamed last: a reader that sees the snapshot sees both files complete.
    return Path(f"{stem}.tracemalloc.part").rename(f"{stem}.tracemalloc")
