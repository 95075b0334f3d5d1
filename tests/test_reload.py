"""A new model without a restart: checked off the frame loop, swapped between frames, a bad one refused.

In-process with fake classifiers (which frame used which model), then the real loader on the packaged
model and broken copies of it, then the daemon itself: SIGHUP and POST /model/reload on a looped folder.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_broken
from scopelite.edge.bundle import CLASS_NAMES, BundleError, InputSpec
from scopelite.edge.classifier import FakeClassifier
from scopelite.edge.config import WatchConfig
from scopelite.edge.packaged import default_model
from scopelite.edge.reload import ModelReloader
from scopelite.edge.tta import TTAClassifier
from scopelite.edge.sources import FakeSource
from scopelite.edge.watch import run_watch

LABELS = ["dark", "mid", "bright"]


def _one_hot(label: int, labels=LABELS):
    return lambda crops: np.tile(np.eye(len(labels))[label], (len(crops), 1))


def _frames(n, shape=(30, 40, 3)):
    return [np.full(shape, 10, np.uint8) for _ in range(n)]


def _run_with_reload_at(frame: int, models: dict, new: str, n_frames: int = 8, config=WatchConfig(), frames=None):
    """Run the loop; right after ``frame``'s record, reload ``new`` (as an HTTP thread would, done by the next frame)."""
    reloader = ModelReloader(lambda path: models[path], models["old"], "old")
    recs = []

    def emit(rec):
        recs.append(rec)
        if rec.get("frame") == frame and "event" not in rec:
            reloader.reload(new)

    s = run_watch(config, FakeSource(frames or _frames(n_frames)), models["old"], emit, reloader=reloader)["summary"]
    return recs, s, reloader


def test_a_good_model_takes_over_between_frames_and_the_count_goes_on():
    models = {"old": FakeClassifier(LABELS, InputSpec(8, 8), fn=_one_hot(0)),
              "new": FakeClassifier(LABELS, InputSpec(8, 8), fn=_one_hot(2))}
    recs, s, reloader = _run_with_reload_at(3, models, "new")
    frames = [r for r in recs if "event" not in r]
    events = [r for r in recs if r.get("event") == "model_reload"]
    assert [r["label"] for r in frames] == ["dark"] * 4 + ["bright"] * 4  # frames 0-3 old, 4-7 new
    assert len(events) == 1 and events[0]["ok"] and events[0]["model"] == "new" and events[0]["frame"] == 4
    assert recs.index(events[0]) == 4  # emitted between frame 3 and frame 4
    assert s["tally"]["counts"] == {"dark": 4, "mid": 0, "bright": 4} and s["frames"] == 8  # one tally across both models
    assert s["model_reloads"]["ok"] == 1 and s["model_reloads"]["failed"] == 0
    assert reloader.path == "new"
    # the views each model is run with are in its reload line: the summary's "views" is the last model's alone (a
    # walk-through's run used 8 views between two reloads and its summary said 1)
    models["tta"] = TTAClassifier(models["new"], 8)
    recs, s, _ = _run_with_reload_at(3, models, "tta")
    assert [r["views"] for r in recs if r.get("event") == "model_reload"] == [8] and s["views"] == 8
    recs, s, _ = _run_with_reload_at(3, models, "new")
    assert [r["views"] for r in recs if r.get("event") == "model_reload"] == [1] and s["views"] == 1


def test_a_reload_done_after_the_last_frame_still_has_its_line():
    """A reload that finished between the last frame and the stop (SIGHUP just before SIGTERM) was counted in the
    summary's model_reloads but had no event line: the log could not say which model the next start runs."""
    import threading

    old = FakeClassifier(LABELS, InputSpec(8, 8), fn=_one_hot(0))
    reloader = ModelReloader(lambda path: FakeClassifier(LABELS, InputSpec(8, 8), fn=_one_hot(2)), old, "old")
    recs, stop = [], threading.Event()

    def emit(rec):
        recs.append(rec)
        if rec.get("frame") == 7 and "event" not in rec:
            reloader.reload("new")
            stop.set()  # the SIGTERM right after

    s = run_watch(WatchConfig(), FakeSource(_frames(20)), old, emit, stop=stop, reloader=reloader)["summary"]
    events = [r for r in recs if r.get("event") == "model_reload"]
    assert [r["label"] for r in recs if "event" not in r] == ["dark"] * 8  # no frame left for the new model
    assert len(events) == 1 and events[0]["ok"] and events[0]["model"] == "new" and recs[-1] is events[0]
    assert events[0]["frame"] == 8 and events[0]["after_last_frame"] and s["model_reloads"]["ok"] == 1


@pytest.mark.parametrize("new, why", [
    ("broken", "cannot load"),
    ("labels", "are not the running model's"),
    ("nan", "not finite"),
])
def test_a_bad_model_is_refused_and_the_old_one_keeps_serving(new, why):
    def broken(path):
        raise BundleError(f"cannot load {path} as a TFLite model: corrupt")

    old = FakeClassifier(LABELS, InputSpec(8, 8), fn=_one_hot(0))
    models = {"old": old,
              "labels": FakeClassifier(["dark", "bright", "mid"], InputSpec(8, 8), fn=_one_hot(2)),
              "nan": FakeClassifier(LABELS, InputSpec(8, 8), fn=lambda c: np.full((len(c), 3), np.nan))}
    reloader = ModelReloader(lambda path: broken(path) if path == "broken" else models[path], old, "old")
    recs = []

    def emit(rec):
        recs.append(rec)
        if rec.get("frame") == 2 and "event" not in rec:
            reloader.reload(new)

    s = run_watch(WatchConfig(), FakeSource(_frames(6)), old, emit, reloader=reloader)["summary"]
    frames = [r for r in recs if "event" not in r]
    events = [r for r in recs if r.get("event") == "model_reload"]
    assert [r["label"] for r in frames] == ["dark"] * 6  # never stopped, never changed
    assert len(events) == 1 and not events[0]["ok"] and why in events[0]["error"]
    assert events[0]["serving"] == "old" and events[0]["model"] == new
    assert s["model_reloads"]["failed"] == 1 and s["model_reloads"]["ok"] == 0 and reloader.path == "old"


def test_field_mode_crops_at_the_new_models_scale():
    """A model with another input size and another red-cell scale: the next frame is cropped for it."""
    from scopelite.train.synth import make_field

    rng = np.random.default_rng(3)
    field = make_field(rng, 320, 240, n_cells=3)[0]
    seen = {"old": [], "new": []}

    def clf(name, spec):
        def fn(crops):
            seen[name].append(crops.shape[1:3])
            return np.tile(np.eye(len(CLASS_NAMES))[6], (len(crops), 1))
        return FakeClassifier(CLASS_NAMES, spec, fn=fn)

    models = {"old": clf("old", InputSpec(32, 32, rbc_px=6.0)), "new": clf("new", InputSpec(64, 64, rbc_px=16.0))}
    recs, s, _ = _run_with_reload_at(1, models, "new", config=WatchConfig(mode="field", crop_size=120, track=False),
                                     frames=[field] * 4)
    frames = [r for r in recs if "event" not in r]
    # a fixed crop of 120 frame px shows a red cell at the model's scale: 120 * rbc_px / input side
    assert [r["scale"]["rbc_px"] for r in frames] == [22.5, 22.5, 30.0, 30.0]
    assert seen["old"] and set(seen["old"]) == {(32, 32)} and seen["new"] and set(seen["new"]) == {(64, 64)}
    assert s["differential"]["white_total"] + s["differential"]["platelets"] > 0  # one count across the swap


# --------------------------------------------------------------------------- the real loader


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The packaged model copied as a bundle, and broken copies: corrupt, mismatched, no sidecar, other labels."""
    t = tmp_path_factory.mktemp("reload")
    good = t / "good" / "model.tflite"
    good.parent.mkdir()
    shutil.copy(default_model(), good)
    sc = json.loads(default_model().with_suffix(".json").read_text())
    sc["file"] = "model.tflite"
    good.with_suffix(".json").write_text(json.dumps(sc))
    out = {"good": good, **make_broken(good, t / "broken")}
    labels = t / "labels" / "model.tflite"
    labels.parent.mkdir()
    shutil.copy(good, labels)
    other = dict(sc, labels=list(reversed(sc["labels"])))
    labels.with_suffix(".json").write_text(json.dumps(other))
    out["labels"] = labels
    return out


def _load(path):
    from scopelite.edge.classifier import make_classifier

    return make_classifier(path)


@pytest.mark.parametrize("bad, why", [("corrupt", "cannot load"), ("mismatch", "sidecar says"),
                                      ("nosidecar", "no sidecar"), ("labels", "are not the running model's"),
                                      ("missing", "not found"), ("folder", "is a folder with no approved model")])
def test_real_bundles_refused_with_a_reason(bundles, bad, why, tmp_path):
    """A folder holding no model.tflite was refused as "model file not found: FOLDER", as if it were missing."""
    reloader = ModelReloader(_load, _load(bundles["good"]), bundles["good"])
    given = tmp_path if bad == "folder" else bundles.get(bad, bundles["good"].parent / "missing.tflite")
    event = reloader.reload(given)
    assert not event["ok"] and why in event["error"], event
    assert reloader.take() == (None, [event]) and reloader.path == str(bundles["good"])


def test_real_bundle_reloads_with_its_hash_and_mtime(bundles):
    from scopelite.edge.bundle import sha256_file

    reloader = ModelReloader(_load, _load(bundles["good"]), bundles["good"])
    event = reloader.reload()  # the file in use, e.g. replaced in place
    assert event["ok"] and event["model"] == str(bundles["good"]) and event["sha256"] == sha256_file(bundles["good"])
    assert event["mtime"] == round(bundles["good"].stat().st_mtime, 3) and event["input"] == [96, 96]
    new, events = reloader.take()
    assert new is not None and new.labels == tuple(CLASS_NAMES) and events == [event]


# --------------------------------------------------------------------------- the daemon: SIGHUP and HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url, body: bytes | None = None):
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_daemon_reloads_on_sighup_and_post_and_refuses_bad_bundles(bundles, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"f{i}.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    live = tmp_path / "live" / "model.tflite"  # the model in use, replaced in place later
    live.parent.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(bundles["good"].with_suffix(suffix), live.with_suffix(suffix))
    port, out = _free_port(), tmp_path / "frames.jsonl"
    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "watch", str(folder), "--loop", "--fps", "20", "--model", str(live),
                          "--http", f"127.0.0.1:{port}", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def events():
        lines = out.read_text().splitlines() if out.exists() else []
        return [json.loads(x) for x in lines if '"model_reload"' in x]

    def frames_after(n):
        recs = [json.loads(x) for x in out.read_text().splitlines()]
        return [r for r in recs if "frame" in r and "event" not in r and r["frame"] > n]

    try:
        def up():
            try:
                return p.poll() is not None or _http(base + "/healthz")[0] == 200
            except OSError:  # not listening yet
                return False

        _wait_for(up)
        assert p.poll() is None, p.communicate()[1]
        p.send_signal(signal.SIGHUP)  # the same file again: loads, is checked, swapped in
        ev = _wait_for(lambda: events()[0:1])[0]
        assert ev["ok"] and ev["trigger"] == "SIGHUP" and ev["model"] == str(live)
        assert _wait_for(lambda: frames_after(ev["frame"]))  # frames go on
        shutil.copy(bundles["corrupt"], live)  # a bad copy in place: refused, the old model keeps serving
        p.send_signal(signal.SIGHUP)
        ev = _wait_for(lambda: events()[1:2])[0]
        assert not ev["ok"] and "sha256 differs" in ev["error"] and ev["serving"] == str(live)
        assert _wait_for(lambda: frames_after(ev["frame"] + 3)) and p.poll() is None
        code, body = _http(base + "/model/reload", json.dumps({"model": str(bundles["labels"])}).encode())
        assert code == 422 and "are not the running model's" in json.loads(body)["error"]
        code, body = _http(base + "/model/reload", json.dumps({"model": str(bundles["good"])}).encode())
        reply = json.loads(body)
        assert code == 200 and reply["ok"] and reply["model"] == str(bundles["good"]) and reply["trigger"] == "http"
        assert _http(base + "/model/reload", b"[1, 2]")[0] == 400
        for bad in ({"model": ""}, {"model": " "}, {"modle": str(bundles["good"])}):  # reloaded the file in use: ok
            assert _http(base + "/model/reload", json.dumps(bad).encode())[0] == 400, bad
        import os  # a path relative to the daemon's working folder (this test's): recorded whole
        code, body = _http(base + "/model/reload", json.dumps({"model": os.path.relpath(bundles["good"])}).encode())
        assert code == 200 and json.loads(body)["model"] == str(bundles["good"])
        ev = _wait_for(lambda: events()[4:5])[0]
        assert ev["ok"] and ev["model"] == str(bundles["good"])
        _wait_for(lambda: frames_after(ev["frame"]))
        # the folder cellcompress approved it into, as --model takes it (before: "is a directory", refused)
        code, body = _http(base + "/model/reload", json.dumps({"model": str(bundles["good"].parent)}).encode())
        assert code == 200 and json.loads(body)["model"] == str(bundles["good"])
        ev = _wait_for(lambda: events()[5:6])[0]
        _wait_for(lambda: frames_after(ev["frame"]))
        metrics = _http(base + "/metrics")[1].decode()
        assert 'scopelite_model_reloads_total{result="ok"} 4' in metrics
        assert 'scopelite_model_reloads_total{result="failed"} 2' in metrics
        assert f'scopelite_model_info{{file="{bundles["good"]}"' in metrics
        assert "scopelite_model_mtime_seconds " in metrics
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    # the operator's journal (stderr) says each reload too, a refused one as a warning with the reason
    assert err.count("model reloaded (") == 4 and err.count("warning: model reload (") == 2, err[-2000:]
    assert "refused: " in err and "sha256 differs" in err and f"still serving {live}" in err
    summary = json.loads(out.read_text().splitlines()[-1])["summary"]
    assert summary["model_reloads"]["ok"] == 4 and summary["model_reloads"]["failed"] == 2
    assert summary["model_reloads"]["model"] == str(bundles["good"])


def test_the_status_page_reads_the_reloaders_counts_and_model_where_they_are_kept():
    """/metrics and the run's summary show one record (ModelReloader.state), not a copy kept in step by events."""
    from scopelite.edge.httpd import Status

    old = FakeClassifier(LABELS, InputSpec(8, 8), fn=_one_hot(0))
    models = {"old": old, "new": FakeClassifier(LABELS, InputSpec(8, 8), fn=_one_hot(2)),
              "labels": FakeClassifier(["dark", "bright", "mid"], InputSpec(8, 8), fn=_one_hot(2))}
    reloader = ModelReloader(lambda path: models[path], old, "old")
    status = Status(LABELS, model=reloader.state)
    reloader.reload("labels")
    reloader.reload("new")  # no event handed to the status: it reads the reloader
    metrics = status.metrics_text()
    assert 'scopelite_model_reloads_total{result="ok"} 1' in metrics
    assert 'scopelite_model_reloads_total{result="failed"} 1' in metrics
    assert 'scopelite_model_info{file="new"' in metrics
    assert reloader.state() == {"ok": 1, "failed": 1, "model": "new", "sha256": None, "mtime": None}
    assert 'scopelite_model_reloads_total{result="ok"} 0' in Status(LABELS).metrics_text()  # no reloader: none


def test_a_sighup_while_the_daemon_starts_is_a_reload_not_its_end(bundles, tmp_path, monkeypatch):
    """systemctl reload right after a start: the SIGHUP came while the model was loading, before its handler was
    in, and ended the run (systemd does not restart a unit a SIGHUP ended). Now it is kept and asked for once the
    reloader is up. (On the code before, this SIGHUP ends the test process itself.)"""
    from click.testing import CliRunner

    from scopelite.edge import cli, shutdown

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.random.default_rng(i).integers(0, 255, (96, 96, 3), np.uint8))
    real, calls = cli._classifier, []

    def loading(*a, **k):  # the model loads: a SIGHUP arrives meanwhile (the first load only)
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGHUP)
        return real(*a, **k)

    monkeypatch.setattr(cli, "_classifier", loading)
    previous = signal.getsignal(signal.SIGHUP)
    out = tmp_path / "frames.jsonl"
    try:
        # enough frames for the deferred reload (a thread loading the model) to finish before the run ends: with 6,
        # the run ended first once under a full test run's load (session 34's CI) and no event was written
        r = CliRunner().invoke(cli.main, ["watch", str(folder), "--loop", "--max-frames", "300", "--model",
                                          str(bundles["good"]), "--out", str(out)])
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert r.exit_code == 0, r.output
    events = [json.loads(x) for x in out.read_text().splitlines() if '"model_reload"' in x]
    assert [(e["trigger"], e["ok"]) for e in events] == [("SIGHUP", True)] and len(calls) == 2
    assert shutdown.defer(None)() is False  # no such signal (Windows): nothing deferred
