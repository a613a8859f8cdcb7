"""Keep freed heap memory in the process, so large arrays reuse pages instead of faulting them in.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with
fresh pages from the kernel and unmaps them again on free. A network at batch 16
allocates tens of activations of 30-130 MB per forward pass: each of those pages
is then faulted in and zero-filled again, every batch. On one CPU core that
costs about ten times the arithmetic of an element-wise layer
(``bench/model.py`` measures the whole effect: most of the shipped predictor's
speed-up on CPU).

Turning off mmap for allocations and trimming of the heap's top makes a freed
block available to the next allocation of that size, which is exactly the
pattern of a loop over same-shaped batches. The price: the process keeps the
heap it grew to, and batches of changing shapes leave holes in it that the
next shape cannot always use, so a heap never trimmed grows with the number of
shape changes. :class:`ShapeChangeTrim` therefore hands the free pages back
when the batch shape changes, which in the pipeline is rare: every batch of a
video but its last is full. That suits a CPU inference actor, which does
nothing but run batches (``bench/memory.py`` runs one over 10 and 100 batches
of mixed sizes). Video tasks do not use it: their allocations are of every size
and lifetime, and their memory with it has not been measured.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Free memory at the heap's top that glibc keeps before trimming (mallopt takes an int).
_KEEP_BYTES = 2**31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning it to the kernel.

    Process-wide and idempotent. Returns True when the settings are in effect, False
    where the C library is not glibc (musl, macOS) or refused them; nothing else changes.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        accepted = (libc.mallopt(_M_MMAP_MAX, 0) == 1
                    and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) == 1)
    except (OSError, AttributeError):
        return False
    _applied = accepted
    log.debug("glibc malloc keeps freed memory: %s", accepted)
    return accepted


def release_freed_memory() -> None:
    """Hand the free pages of every heap back to the kernel, where freed memory is kept.

    A no-op unless :func:`keep_freed_memory` is in effect (otherwise glibc trims
    on its own). The memory stays mapped, so only its pages are faulted in again.
    """
    if _applied:
        ctypes.CDLL(None).malloc_trim(0)


class ShapeChangeTrim:
    """Keeps freed memory while batches keep their shape; releases it when the shape changes.

    Call it with each batch's shape before running the batch.
    """

    def __init__(self) -> None:
        self._shape: tuple[int, ...] | None = None

    def __call__(self, shape: tuple[int, ...]) -> None:
        if self._shape is not None and shape != self._shape:
            release_freed_memory()
        self._shape = shape
