"""scopelite.edge: run a scopelite model bundle on a device (no TensorFlow needed)."""
from .bundle import CLASS_NAMES, BundleError, Sidecar, load_sidecar
from .errors import UserError

__all__ = ["CLASS_NAMES", "BundleError", "Sidecar", "UserError", "load_sidecar"]
