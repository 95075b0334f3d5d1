"""Matplotlib, headless, and figures written atomically."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save(fig, path: Path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` via a temporary file, then close it. A failed write leaves no temporary file and
    raises an OSError that names ``path`` (matplotlib's names no file)."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        tmp.replace(path)
    except OSError as e:  # a full disk: a truncated hidden .NAME.tmp.png was left in the run folder
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        pyplot().close(fig)
