"""The one import point for TensorFlow and Keras.

tensorflow-model-optimization does not support Keras 3, which TensorFlow >= 2.16
ships as ``tf.keras``. scopelite trains and compresses on Keras 2 (``tf-keras``),
which TensorFlow only selects when TF_USE_LEGACY_KERAS=1 is set *before* it is
first imported. This module sets it, and everything else imports
``tf``/``keras`` (and ``tfmot``) from here.
"""
from __future__ import annotations

import os
import sys
import warnings

from scopelite.edge import _quiet
from scopelite.edge.errors import warn

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":  # pragma: no cover
    raise ImportError(
        "TensorFlow was imported before scopelite.train._keras could set TF_USE_LEGACY_KERAS=1; "
        "import scopelite first or export TF_USE_LEGACY_KERAS=1"
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
_quiet.tensorflow_env()  # TF_CPP_MIN_LOG_LEVEL=3 unless SCOPELITE_VERBOSE=1

# TensorFlow 2.21 prints its start-up lines (oneDNN, cudart, CPU features) before absl reads
# TF_CPP_MIN_LOG_LEVEL, and CUDA's "failed call to cuInit" at the first device query: both
# happen here, inside the block that holds native noise back (real errors still pass).
with _quiet.native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    _GPUS = tf.config.list_physical_devices("GPU")

if not _quiet.verbose():  # Python-level messages from TensorFlow that are noise for our users
    tf.get_logger().setLevel("ERROR")
    # tf.lite: our representative set starts at the input's full range on purpose
    warnings.filterwarnings("ignore", message=r"Statistics for quantized inputs were expected")
    from absl import logging as absl_logging  # noqa: E402 - comes with TensorFlow

    absl_logging.set_verbosity(absl_logging.ERROR)
if not _GPUS and _quiet.nvidia_device_present():  # pragma: no cover - needs an NVIDIA machine
    warn("an NVIDIA GPU is present but TensorFlow cannot use it (CUDA libraries missing or not matching "
         f"the driver), so this runs on the CPU; {_quiet.ENV}=1 shows TensorFlow's own reason")


def tfmot():
    """tensorflow_model_optimization, imported lazily (it is slow to import)."""
    import tensorflow_model_optimization as mod  # noqa: PLC0415

    return mod


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"python": sys.version.split()[0], "tensorflow": tf.__version__, "tf_keras": keras.__version__}
    for pkg in ("numpy", "opencv-python-headless", "tensorflow-model-optimization", "ai-edge-litert", "scopelite"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


__all__ = ["keras", "tf", "tfmot", "versions"]
