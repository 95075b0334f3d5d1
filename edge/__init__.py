"""scopelite.edge: run a scopelite model bundle on a device (no TensorFlow needed)."""
import os

# OpenCV reads this when it is first imported, so it is set here, before any module of this package imports it:
# an image that would unpack to more than sources.MAX_SIDE squared pixels (a 1 MB PNG of 30000x30000 px: 5 GB) is
# refused from its header, never decoded (sources.read_image_rgb says so).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(4096 * 4096))

__all__ = ["CLASS_NAMES", "BundleError", "Sidecar", "UserError", "load_sidecar"]


def __getattr__(name: str):
    """The package's names, imported when first asked for: importing the package itself stays light (numpy and
    OpenCV load with the module that needs them), so a console command can take Ctrl-C from its first moment
    (``_entry``)."""
    if name in ("CLASS_NAMES", "BundleError", "Sidecar", "load_sidecar"):
        from . import bundle

        return getattr(bundle, name)
    if name == "UserError":
        from .errors import UserError

        return UserError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
