"""Handing freed heap memory back to the OS (glibc only; a no-op elsewhere).

A Beacon process frees nearly everything a call allocates, but glibc keeps freed chunks in its
arenas, and a page that still holds one live chunk stays resident: under steady load the
resident size creeps up while the live heap stays flat (issue 26: both `serve` processes of
the soak grew about 1.3 MiB a minute with Python's own heap flat). Two settings:

- `malloc_arena_max` caps the arenas glibc creates for threads (default 8 per core; gRPC's
  and Dramatiq's threads each get one), set once at start-up with mallopt(M_ARENA_MAX);
- every `malloc_trim_seconds` a daemon thread calls malloc_trim(0), which returns every whole
  free page of every arena to the OS (madvise), so resident memory follows the live heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

from service.config import Settings

log = logging.getLogger("beacon.malloc")

M_ARENA_MAX = -8  # glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  # only glibc has it
        libc.malloc_trim  # noqa: B018
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def trim() -> bool:
    """Returns free heap pages to the OS; whether any were."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


def configure(settings: Settings) -> threading.Thread | None:
    """Applies the settings (call at start-up, before threads start); the trimming thread."""
    if _LIBC is None:
        return None
    if settings.malloc_arena_max > 0:
        _LIBC.mallopt(M_ARENA_MAX, settings.malloc_arena_max)
    if settings.malloc_trim_seconds <= 0:
        return None
    thread = threading.Thread(
        target=_trim_every, args=(settings.malloc_trim_seconds,), name="malloc-trim", daemon=True
    )
    thread.start()
    return thread


def _trim_every(seconds: float) -> None:
    stop = threading.Event()
    while not stop.wait(seconds):
        trim()
