"""Matplotlib, headless, and figures written atomically."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save(fig, path: Path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` via a temporary file, then close it."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    tmp.replace(path)
