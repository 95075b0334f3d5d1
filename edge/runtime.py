"""The one module that imports the LiteRT interpreter and loads delegates.

``ai-edge-litert`` is preferred; ``tflite_runtime`` is accepted as a fallback
(older Pi images). Nothing else in scopelite imports either package.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ._quiet import native_stderr
from .bundle import BundleError
from .errors import UserError

EDGETPU_LIBRARY = "libedgetpu.so.1"


class RuntimeUnavailable(UserError, RuntimeError):
    """No LiteRT interpreter package, or no Edge TPU, could be loaded."""


def _interpreter_module():
    before = sys.exc_info()[1]
    try:
        from ai_edge_litert import interpreter as mod  # noqa: PLC0415

        return mod, "ai-edge-litert"
    except ImportError as e:
        _unless_interrupted(e, before)
    try:
        from tflite_runtime import interpreter as mod  # noqa: PLC0415

        return mod, "tflite_runtime"
    except ImportError as e:
        _unless_interrupted(e, before)
        raise RuntimeUnavailable(
            "no LiteRT interpreter installed: pip install 'scopelite[edge]' (ai-edge-litert)"
        ) from None


def _unless_interrupted(e: ImportError, before: BaseException | None) -> None:
    """Ctrl-C while a compiled module loads comes out as ImportError("initialization failed") over the
    KeyboardInterrupt: said as "no LiteRT interpreter installed", not as the interruption it was. ``before``: what
    was being handled when the import was tried (a KeyboardInterrupt there is not the import's)."""
    seen = e.__context__
    while seen is not None and seen is not before:
        if isinstance(seen, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        seen = seen.__context__


def runtime_name() -> str:
    """Which interpreter package is in use, e.g. ``"ai-edge-litert 2.3.0"``."""
    mod, name = _interpreter_module()
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return f"{name} {version(name)}"
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return name


def _edgetpu_delegate(mod, options: dict):
    """``load_delegate(EDGETPU_LIBRARY)``, or RuntimeUnavailable in one line. A delegate whose library did not load
    is half made, and LiteRT's ``Delegate.__del__`` on it raises (AttributeError ``_library``): Python printed that
    as "Exception ignored ... Traceback" after the Error line. It is collected here, quietly, before raising."""
    import gc  # noqa: PLC0415

    hook = sys.unraisablehook

    def quiet(unraisable) -> None:
        if not (isinstance(unraisable.exc_value, AttributeError) and "Delegate" in repr(unraisable.object)):
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        try:
            return mod.load_delegate(EDGETPU_LIBRARY, options)
        except (ValueError, OSError) as e:
            why = str(e).strip() or "no device"
        gc.collect()  # the exception, its frames and the half-made delegate are gone: collect it under ``quiet``
    finally:
        sys.unraisablehook = hook
    raise RuntimeUnavailable(f"cannot load the Edge TPU delegate ({EDGETPU_LIBRARY}): {why}; check that the Coral is "
                             "plugged in and libedgetpu1-std is installed, or use --fallback cpu")


def make_interpreter(model_path: str | os.PathLike | None, num_threads: int | None = None,
                     edgetpu_device: str | None = None, plain: bool = False, model_content: bytes | None = None,
                     keep_all_tensors: bool = False):
    """Build and allocate an interpreter for ``model_path`` (or for ``model_content``, the model's bytes).

    Args:
        model_path: a ``.tflite`` file; None with ``model_content``.
        num_threads: CPU threads for the kernels (None: runtime default).
        edgetpu_device: None for CPU, else ``"usb"``, ``"pci"``, ``":0"``..., or ``""`` for any.
        plain: no default delegates (XNNPACK), so the graph's own ops stay visible.
        model_content: the model in memory, instead of a file (``cellcompress``'s diagnosis of a conversion).
        keep_all_tensors: every intermediate tensor stays readable after ``invoke`` (layer-by-layer comparisons).

    Raises:
        BundleError: the file is not a valid TFLite model.
        RuntimeUnavailable: the interpreter or the Edge TPU delegate cannot be loaded.
    """
    mod, _ = _interpreter_module()
    delegates = []
    if edgetpu_device is not None:
        delegates.append(_edgetpu_delegate(mod, {"device": edgetpu_device} if edgetpu_device else {}))
    try:
        kwargs = {}
        if plain:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if keep_all_tensors:
            kwargs["experimental_preserve_all_tensors"] = True
        if model_content is not None:
            kwargs["model_content"] = model_content
        else:
            kwargs["model_path"] = str(Path(model_path))
        with native_stderr():  # LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interp = mod.Interpreter(num_threads=num_threads, experimental_delegates=delegates or None, **kwargs)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        what = model_path if model_content is None else "the converted model"
        raise BundleError(f"cannot load {what} as a TFLite model: {msg}") from None
    return interp


def graph_ops(interp) -> list[dict]:
    """The interpreter's operators in execution order (name, inputs, outputs).

    LiteRT exposes them only through a private method; this is the one place that calls it.
    """
    return interp._get_ops_details()  # noqa: SLF001


def op_counts(model_path: str | os.PathLike) -> dict[str, int]:
    """{op name: count} of a .tflite graph (no delegates, so the graph's own ops), most frequent first."""
    import collections  # noqa: PLC0415

    ops = graph_ops(make_interpreter(model_path, plain=True))
    return dict(collections.Counter(op["op_name"] for op in ops).most_common())
