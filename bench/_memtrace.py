"""What grew inside the soak's processes: tracemalloc snapshots and object censuses that
`service.memtrace` writes on SIGUSR2 (the soak sets BEACON_TRACEMALLOC_FRAMES), diffed."""

from __future__ import annotations

import asyncio
import json
import os
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from service.memtrace import SIGNAL

# Frames of these files say where an allocation came from better than the library below them.
OURS = ("/src/service/", "/src/workers/")


def start(pids: dict[str, int]) -> None:
    """Has every process start tracing (the first signal starts it, see service.memtrace)."""
    for pid in pids.values():
        os.kill(pid, SIGNAL)


async def dump(directory: Path, pids: dict[str, int], within: float = 300.0) -> dict[str, Path]:
    """Signals every process to write a snapshot; the new snapshot of each (by name) that
    arrived within `within` seconds."""
    before = {name: _snapshots(directory, pid) for name, pid in pids.items()}
    for pid in pids.values():
        os.kill(pid, SIGNAL)
    found: dict[str, Path] = {}
    deadline = time.monotonic() + within
    while len(found) < len(pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        for name, pid in pids.items():
            fresh = _snapshots(directory, pid) - before[name]
            if fresh and name not in found:
                found[name] = fresh.pop()
    return found


def _snapshots(directory: Path, pid: int) -> set[Path]:
    return set(directory.glob(f"{pid}-*.tracemalloc")) if directory.exists() else set()


def _where(trace: tracemalloc.Traceback) -> str:
    """The allocating line and, when it is not ours, the innermost line of ours above it."""
    frames = list(reversed(trace))  # most recent first (a Traceback lists the oldest first)
    first = f"{_short(frames[0].filename)}:{frames[0].lineno}"
    ours = next((f for f in frames if any(o in f.filename for o in OURS)), None)
    if ours is None or ours is frames[0]:
        return first
    return f"{first} <- {_short(ours.filename)}:{ours.lineno}"


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def growth(start: Path, end: Path, top: int) -> list[str]:
    """The `top` allocation sites that grew most between two snapshots, then the object
    types whose count grew most."""
    old = tracemalloc.Snapshot.load(str(start))
    new = tracemalloc.Snapshot.load(str(end))
    total = sum(s.size for s in new.statistics("filename")) - sum(
        s.size for s in old.statistics("filename")
    )
    lines = [f"    traced memory {total / 2**20:+.2f} MiB; top sites by growth:"]
    by_site: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for stat in new.compare_to(old, "traceback"):
        where = _where(stat.traceback)
        by_site[where] += stat.size_diff
        counts[where] += stat.count_diff
    for where, size in by_site.most_common(top):
        lines.append(f"      {size / 1024:+9.1f} KiB {counts[where]:+8d} blocks  {where}")
    types_old = _types(start)
    types_new = _types(end)
    if types_old and types_new:
        diff = Counter({k: types_new.get(k, 0) - types_old.get(k, 0) for k in types_new})
        grown = [f"{k} {v:+d}" for k, v in diff.most_common(12) if v > 0]
        lines.append(f"    live objects by type (gc): {', '.join(grown) or 'no type grew'}")
    return lines


def _types(snapshot: Path) -> dict[str, int]:
    path = snapshot.with_name(snapshot.name.replace(".tracemalloc", ".types.json"))
    if not path.exists():
        return {}
    loaded: dict[str, int] = json.loads(path.read_text())
    return loaded


def report(starts: dict[str, Path], ends: dict[str, Path], top: int) -> list[str]:
    lines = ["", "Allocation growth after warm-up (tracemalloc, per process):"]
    for name in sorted(ends):
        if name not in starts:
            continue
        lines.append(f"  {name}:")
        try:
            lines += growth(starts[name], ends[name], top)
        except (OSError, ValueError, EOFError) as exc:
            lines.append(f"    unreadable snapshot: {exc!r}")
    missing = sorted(set(starts) ^ set(ends))
    if missing:
        lines.append(f"  no snapshot pair for: {', '.join(missing)}")
    return lines
