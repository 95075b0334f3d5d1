"""scopelite.edge: run a scopelite model bundle on a device (no TensorFlow needed)."""
import os

# OpenCV reads this when it is first imported, so it is set here, before any module of this package imports it:
# an image that would unpack to more than sources.MAX_SIDE squared pixels (a 1 MB PNG of 30000x30000 px: 5 GB) is
# refused from its header, never decoded (sources.read_image_rgb says so).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(4096 * 4096))

from .bundle import CLASS_NAMES, BundleError, Sidecar, load_sidecar
from .errors import UserError

__all__ = ["CLASS_NAMES", "BundleError", "Sidecar", "UserError", "load_sidecar"]
