"""Memory checks before large allocations: a clear error instead of the kernel's out-of-memory kill.

A stage that is about to hold a large array (the counts read from an h5ad file, the dense
float32 expression matrix of ``preprocess``) calls :func:`require` with the number of bytes it
needs. When that is more than the memory available now (``MemAvailable`` of ``/proc/meminfo``,
else ``psutil`` when installed), :class:`InsufficientMemoryError` says how much is needed, how
much is available and what to do. Where the available memory cannot be read (no Linux, no
psutil) nothing is checked. ``XTCDR_MEMORY_CHECK=0`` switches the check off (e.g. with swap).
"""
from __future__ import annotations

import os

__all__ = ["InsufficientMemoryError", "available_bytes", "require", "gb"]


class InsufficientMemoryError(MemoryError):
    """A stage needs more memory than the machine has available."""


def gb(nbytes: float) -> str:
    """``nbytes`` as GB with one decimal (``'3.2 GB'``)."""
    return f"{nbytes / 1e9:.1f} GB"


def available_bytes() -> int | None:
    """Memory available to new allocations, in bytes, or None when it cannot be read.

    Linux: ``MemAvailable`` of ``/proc/meminfo`` (free memory plus the page cache the kernel
    can drop). Elsewhere ``psutil.virtual_memory().available`` when psutil is installed.
    """
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def require(nbytes: float, what: str, advice: str) -> None:
    """Raise :class:`InsufficientMemoryError` when ``nbytes`` exceed the available memory.

    Parameters
    ----------
    nbytes
        What the allocation needs, in bytes.
    what
        The allocation, as the start of a sentence (``"reading the counts of 190,000 cells"``).
    advice
        What the user can do instead (fewer genes, a cell filter, a larger machine).
    """
    if os.environ.get("XTCDR_MEMORY_CHECK", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    available = available_bytes()
    if available is None or nbytes <= available:
        return
    raise InsufficientMemoryError(
        f"{what} needs about {gb(nbytes)} of memory, but only {gb(available)} are available "
        f"(MemAvailable in /proc/meminfo). {advice} To try anyway, set XTCDR_MEMORY_CHECK=0.")
