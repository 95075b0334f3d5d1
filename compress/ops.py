"""Operator counts of a TFLite graph (read with the LiteRT interpreter: no TensorFlow needed)."""
from __future__ import annotations

from scopelite.edge.runtime import op_counts

# Ops a dynamic batch leaves behind; the Edge TPU cannot map them.
DYNAMIC_SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")

__all__ = ["DYNAMIC_SHAPE_OPS", "op_counts"]
