"""Arrays of images sized against this machine's free memory: a typo (``--image-size 100000``, ``--per-class 1e8``)
asked for terabytes and ended in NumPy's traceback, or worse, in the kernel's OOM killer half-way through."""
from __future__ import annotations

import numpy as np

from scopelite.edge.errors import UserError


def available_bytes() -> int | None:
    """Memory this machine can give now (MemAvailable), None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def image_array(n: int, size: int, what: str, hint: str) -> np.ndarray:
    """``np.empty((n, size, size, 3), uint8)``, or UserError when it would not fit in the memory free now.
    ``what``: whose images ("reading data/"), ``hint``: what to change."""
    need = n * size * size * 3
    free = available_bytes()
    if free is not None and need > 0.8 * free:
        raise UserError(f"{what}: {n:,} images of {size}x{size} px need {need / 2**30:,.1f} GB of memory and this "
                        f"machine has {free / 2**30:,.1f} GB free; {hint}")
    try:
        return np.empty((n, size, size, 3), np.uint8)
    except MemoryError:
        raise UserError(f"{what}: {n:,} images of {size}x{size} px need {need / 2**30:,.1f} GB of memory, more "
                        f"than this machine can give; {hint}") from None
