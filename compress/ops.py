"""Read a TFLite graph's operators with the LiteRT interpreter (no TensorFlow needed)."""
from __future__ import annotations

import collections
import os

from scopelite.edge import runtime

# Ops a dynamic batch leaves behind; the Edge TPU cannot map them.
DYNAMIC_SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")


def op_counts(model_path: str | os.PathLike) -> dict[str, int]:
    """{op name: count} of the model's main graph, most frequent first."""
    interp = runtime.make_interpreter(model_path, plain=True)
    names = [op["op_name"] for op in interp._get_ops_details()]  # noqa: SLF001 - only way without TF
    return dict(collections.Counter(names).most_common())
