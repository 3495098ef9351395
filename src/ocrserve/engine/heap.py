"""Giving the C heap's free memory back to the operating system after a large call.

onnxruntime's arena regions, shrunk after each run (``session.py``), and every tensor outside
them (the sessions' outputs, NumPy's crops and batches) come from malloc. glibc keeps what is
freed for reuse, in as many heaps as threads have allocated from, and raises its
mmap threshold to the largest block freed so far, so after a few large pages tens of MB
tensors also come from those heaps: a process's resting RSS only grows, to its peak over every
page seen (issue 12 item 5: 300 -> 667 MB over the speed set, each page's peak on top of that).
``malloc_trim(0)`` hands the free pages of every heap back (``madvise``), keeping the heaps.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        trim = libc.malloc_trim  # glibc only: musl and others lack it
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    fn: Callable[[int], int] = trim
    return fn


_TRIM = _malloc_trim()


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS; False where the C library cannot (not glibc).

    >>> release_free_heap()  # doctest: +SKIP
    True
    """
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def resident_bytes() -> int | None:
    """This process's resident set now, or None where /proc cannot say."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class HeapTrimmer:
    """Trims the heap after a call that left the process ``slack`` bytes above where the last
    trim left it, so a process's resting RSS stays near its floor without paying for a trim
    after every small call. Thread-safe; a call that finds another trimming goes on.

    A trim after every page of the speed set kept the resting RSS at 190-245 MB (667 without)
    and its peak at 695 MB (788), but cost +7% wall and +9% CPU (12 ms a call, and the pages
    handed back are faulted in again by the next page): hence the slack (issue 12 item 5).

    >>> trimmer = HeapTrimmer(slack=64 << 20)
    >>> trimmer.maybe_trim()  # doctest: +SKIP
    True
    """

    def __init__(self, slack: int) -> None:
        self.slack = slack
        self.trims = 0
        self._floor = 0
        self._lock = threading.Lock()

    def maybe_trim(self) -> bool:
        if _TRIM is None:
            return False
        rss = resident_bytes()
        if rss is None or rss < self._floor + self.slack:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            _TRIM(0)
            self.trims += 1
            self._floor = resident_bytes() or 0
        finally:
            self._lock.release()
        return True
