"""Quiet tools: TensorFlow's and LiteRT's start-up chatter stays out of the user's way.

TensorFlow 2.21 logs through absl before ``absl::InitializeLog()`` runs, so
``TF_CPP_MIN_LOG_LEVEL`` no longer hides its start-up lines (oneDNN, cudart,
cpu_feature_guard), and LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate
for CPU.`` from C++. Both write to file descriptor 2, below Python. ``native_stderr()``
points fd 2 at a temporary file around the calls that print them, always restores it,
and then passes on every line that is not known noise: a real error still reaches the user.

``SCOPELITE_VERBOSE=1`` (a CLI's ``--verbose`` sets it) turns all of this off.
This module imports neither TensorFlow nor LiteRT.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading

ENV = "SCOPELITE_VERBOSE"

# Lines that say nothing a user can act on. Anything else written to fd 2 is passed on.
_NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"cudart_stub\.cc", r"Could not find cuda drivers",
    r"cpu_feature_guard\.cc", r"This TensorFlow binary is optimized to use available CPU",
    r"^To enable the following instructions: .*rebuild TensorFlow",
    r"failed call to cuInit",  # no GPU: said in our words by scopelite.train._keras when it matters
    r"Unable to register cu(DNN|FFT|BLAS) factory", r"computation_placer\.cc", r"TF-TRT Warning",
    r"Created TensorFlow Lite XNNPACK delegate for CPU",
    r"generator_dataset_op\.cc.*Memory patch applied",  # tf.data's allocator note, at a Keras 3 fit's first epoch
    r"^fully_quantize: \d+, inference_type: \d+",
    r"Estimated count of arithmetic ops",
    r"^\[[^\]@]+ @ 0x[0-9a-f]+\] ",  # FFmpeg's own lines ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found")
    r"^Unexpected element\. Expected: ",  # OpenCV's AVI parser on a file that is not one
]))


def verbose() -> bool:
    """True when the user asked for the libraries' own messages (``SCOPELITE_VERBOSE=1``)."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def set_verbose(on: bool = True) -> None:
    """Set ``SCOPELITE_VERBOSE`` (child processes inherit it); call before TensorFlow is imported."""
    os.environ[ENV] = "1" if on else "0"


def verbose_option(fn):
    """``--verbose`` for a click group: TensorFlow's and LiteRT's own messages are shown."""
    import click  # noqa: PLC0415

    def _set(ctx, param, value):
        if value:
            set_verbose(True)
            tensorflow_env()  # undo our defaults in case they were set already

    return click.option("--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_set,
                        help=f"Show TensorFlow's and LiteRT's own log lines (also: {ENV}=1).")(fn)


def tensorflow_env() -> None:
    """Environment for a quiet TensorFlow; must run before it is first imported."""
    if verbose():
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3":
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO/WARNING/ERROR once absl is set up
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


# fd 2 is the process's: blocks in several threads at once (a camera reopened while a model reloads) share one
# redirect, made by the first block in and undone by the last one out: {"depth", "saved", "hold"}
_REDIRECT: dict = {"depth": 0, "saved": None, "hold": None}
_REDIRECT_LOCK = threading.Lock()


def _flush() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


@contextlib.contextmanager
def native_stderr():
    """Hold back native (C/C++) noise written to fd 2 inside the block; pass on the rest.

    Lines are held in a temporary file and written out when the block ends (also on an
    exception), minus those matching known noise; blocks open in several threads at once share the
    redirect, and the last to end passes the lines on. A no-op when verbose, or when fd 2 cannot be
    duplicated (closed, odd sandboxes).
    """
    if verbose():
        yield
        return
    with _REDIRECT_LOCK:
        if _REDIRECT["depth"] == 0:
            _flush()
            try:
                saved = os.dup(2)
            except OSError:
                saved = None
            hold = None
            if saved is not None:
                try:
                    hold = tempfile.TemporaryFile(mode="w+b")
                    os.dup2(hold.fileno(), 2)
                except OSError:
                    os.close(saved)
                    saved, hold = None, None
            _REDIRECT.update(saved=saved, hold=hold)
        _REDIRECT["depth"] += 1
    try:
        yield
    finally:
        with _REDIRECT_LOCK:
            _REDIRECT["depth"] -= 1
            if _REDIRECT["depth"] == 0 and _REDIRECT["saved"] is not None:
                _flush()
                os.dup2(_REDIRECT["saved"], 2)
                os.close(_REDIRECT["saved"])
                hold = _REDIRECT["hold"]
                _REDIRECT.update(saved=None, hold=None)
                _pass_on(hold)


def _pass_on(hold) -> None:
    try:
        hold.seek(0)
        text = hold.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    finally:
        hold.close()
    kept = [line for line in text.splitlines(keepends=True) if line.strip() and not _NOISE.search(line)]
    if kept:
        try:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass


def nvidia_device_present() -> bool:
    """Whether the machine has an NVIDIA GPU device node (the kernel driver is loaded)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def is_noise(line: str) -> bool:
    """Whether ``line`` is one of the library messages this module holds back (for tests)."""
    return bool(_NOISE.search(line))
