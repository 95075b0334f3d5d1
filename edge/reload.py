"""A new model without a restart: load and check a bundle off the frame loop, swap it in between frames.

``ModelReloader.reload`` (an HTTP request's thread) or ``request`` (SIGHUP: a thread of its own)
loads the bundle through the same function the daemon started with, then checks it: it loads
(sidecar, hash, input shape and quantisation against the model: ``classifier.py``), its labels
are the running model's in the same order (the open count adds score vectors by position), and
one blank crop gives one finite score per label. A refused bundle changes nothing: the old model
keeps serving. The watch loop calls ``take`` between frames, which hands over the checked model
and the event records of every attempt (``{"event": "model_reload", "ok": ...}``).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .classifier import Classifier
from .errors import UserError
from .tta import views_of


def bundle_info(classifier: Classifier, path: str | os.PathLike) -> dict:
    """The model file, its sha256 (from the sidecar, checked against the file when it loaded) and mtime."""
    sidecar = getattr(classifier, "sidecar", None)
    path = Path(getattr(classifier, "path", None) or path)  # --fallback cpu runs another file
    try:
        mtime = round(path.stat().st_mtime, 3)
    except OSError:
        mtime = None
    return {"model": str(path), "sha256": getattr(sidecar, "sha256", None), "mtime": mtime}


class ReloadRefused(ValueError):
    """The new bundle loads but cannot replace the running one."""


class ModelReloader:
    """Holds the path of the model in use; loads and checks new ones; the loop takes them.

    Args:
        load: path -> classifier, as the daemon loaded its first model (threads, device, TTA).
        current: the classifier in use.
        path: its model file.
        also: more checks a new model must pass (each raises ``UserError``/``ValueError`` to refuse it),
            e.g. that a ``--site`` file was made for its input size.
    """

    def __init__(self, load: Callable[[str], Classifier], current: Classifier, path: str | os.PathLike,
                 also: tuple[Callable[[Classifier], None], ...] = ()):
        self._load = load
        self._also = tuple(also)
        self.labels = tuple(current.labels)
        self.path = str(path)
        self.info = bundle_info(current, path)
        self.ok = self.failed = 0
        self._loading = threading.Lock()  # one load at a time
        self._lock = threading.Lock()  # guards what the loop takes
        self._ready: Classifier | None = None
        self._events: list[dict] = []

    def check(self, clf: Classifier) -> None:
        """Raise ReloadRefused unless ``clf`` can take over the running count."""
        if tuple(clf.labels) != self.labels:
            raise ReloadRefused(f"its labels ({', '.join(clf.labels)}) are not the running model's "
                                f"({', '.join(self.labels)}): the open count needs the same classes in the same "
                                "order")
        spec = clf.input_spec
        scores = np.asarray(clf.classify(np.zeros((1, spec.height, spec.width, 3), np.uint8)))
        if scores.shape != (1, len(self.labels)) or not np.isfinite(scores).all():
            raise ReloadRefused(f"a blank crop gives scores of shape {scores.shape}"
                                f"{'' if np.isfinite(scores).all() else ' that are not finite'}, "
                                f"expected (1, {len(self.labels)})")
        for check in self._also:
            check(clf)

    def reload(self, path: str | os.PathLike | None = None, trigger: str = "http") -> dict:
        """Load and check ``path`` (None: the model file in use, e.g. replaced in place); blocks.

        Returns:
            The event record: ``ok``, the model, and its sha256/mtime/input or the ``error``.
            A good model is handed to the loop (``take``), which starts using it between frames.
        """
        path = str(path or self.path)
        t0 = time.monotonic()
        with self._loading:
            try:
                clf = self._load(path)
                self.check(clf)
            except Exception as e:  # noqa: BLE001 - whatever is wrong with the bundle, the old model keeps serving
                why = str(e) if isinstance(e, (UserError, ValueError, OSError)) else f"{type(e).__name__}: {e}"
                event = {"event": "model_reload", "trigger": trigger, "ok": False, "model": path,
                         "error": " ".join(why.split()), "serving": self.info["model"]}
                with self._lock:
                    self.failed += 1
                    self._events.append(event)
                return event
            info = bundle_info(clf, path)
            spec = clf.input_spec
            event = {"event": "model_reload", "trigger": trigger, "ok": True, **info,
                     "input": [spec.height, spec.width], "rbc_px": spec.rbc_px, "views": views_of(clf),
                     "load_ms": round(1e3 * (time.monotonic() - t0), 1)}
            with self._lock:
                self.ok += 1
                self.path, self.info = path, info
                self._ready = clf
                self._events.append(event)
            return event

    def request(self, path: str | os.PathLike | None = None, trigger: str = "SIGHUP") -> threading.Thread:
        """Reload in a thread of its own (from a signal handler: returns at once)."""
        t = threading.Thread(target=self.reload, args=(path, trigger), name="model-reload", daemon=True)
        t.start()
        return t

    def state(self) -> dict:
        """The model in use (``bundle_info``) and the reloads by result: ``{"ok", "failed", "model", "sha256",
        "mtime"}``, the one record of both (the run's summary and ``/metrics`` read it here)."""
        with self._lock:
            return {"ok": self.ok, "failed": self.failed, **self.info}

    def take(self) -> tuple[Classifier | None, list[dict]]:
        """For the loop, between frames: the checked new model (None: no new one) and the attempts' events."""
        with self._lock:
            clf, events = self._ready, self._events
            self._ready, self._events = None, []
        return clf, events
