"""Bad input, everywhere: one ``Error:`` line, the right exit code, no traceback, nothing lost.

A table of cases across celltrain, cellcompress and celledge (the rows of issue 16 and the
ones that already worked, so they stay working), run in-process through click's CliRunner;
subprocesses only where a signal or a real file system is needed; then a bounded fuzz of
images, .npz files, models and sidecars. Nothing here trains or converts a model: celledge
runs the packaged int8 model, the rest fails before any long work, as it must.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, default_signals, invoke_cli, make_broken, run_cli
from scopelite.edge.packaged import default_model

UNWRITABLE = "/sys/scopelite-bad-input"  # sysfs: nobody may create files there, root included


def _png(path: Path, shape=(96, 96, 3), value=120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every file the table names, made once: images, folders, models, .npz files, configs."""
    t = tmp_path_factory.mktemp("bad_input")
    model = default_model()
    p = {"c": t, "model": model, "img": _png(t / "cell.png"), "tiny": _png(t / "tiny.png", (1, 1, 3))}
    p.update(make_broken(model, t / "broken"))
    sc = json.loads(model.with_suffix(".json").read_text())
    for name, change in {"badjson": None, "schema": {"schema": "other"}, "nolabels": {"labels": []},
                         "hash": {"sha256": "0" * 64}}.items():
        m = t / name / model.name
        m.parent.mkdir()
        shutil.copy(model, m)
        text = "{not json" if change is None else json.dumps({**sc, **change})
        m.with_suffix(".json").write_text(text)
        p[name] = m
    p["mcopy"] = t / "mcopy" / model.name  # a good model of the user's own, with its sidecar
    p["mcopy"].parent.mkdir()
    shutil.copy(model, p["mcopy"])
    shutil.copy(model.with_suffix(".json"), p["mcopy"].with_suffix(".json"))
    p["mcopy_json"] = p["mcopy"].with_suffix(".json")
    p["bad_png"] = t / "bad.png"
    p["bad_png"].write_bytes(b"not a png")
    p["empty_png"] = t / "empty.png"
    p["empty_png"].write_bytes(b"")
    p["text_jpg"] = t / "notes.jpg"
    p["text_jpg"].write_text("a text file\n")
    for i in range(3):  # good, truncated, good: the truncated one sorts between them
        _png(t / "mixed" / f"img{i}.png", value=60 + 60 * i)
    _truncate(t / "mixed" / "img1.png")
    p["mixed"] = t / "mixed"
    for i in range(2):
        _truncate(_png(t / "allbad" / f"img{i}.png"))
    p["allbad"] = t / "allbad"
    _png(t / "huge" / "a.png")
    _png(t / "huge" / "b.png", (4100, 16, 3))  # taller than 4096 px: refused, counted
    p["huge"] = t / "huge"
    (t / "emptydir").mkdir()
    p["emptydir"] = t / "emptydir"
    run = t / "run"  # a training run compressed into its int8 folder, with its plots beside
    (run / "int8").mkdir(parents=True)
    shutil.copy(model, run / "int8" / "model.tflite")
    shutil.copy(model.with_suffix(".json"), run / "int8" / "model.json")
    _png(run / "curves.png", (60, 80, 3))
    p["run"] = run
    for sid in ("20261204-221658-8791d4", "20261204-231002-0a1b2c"):  # celledge watch --sessions's folder
        (t / "sessions" / sid / "crops").mkdir(parents=True)
        (t / "sessions" / sid / "state.json").write_text("{}")
        (t / "sessions" / sid / "cells.jsonl").write_text("")
        _png(t / "sessions" / sid / "crops" / "1.png")
    p["sessions"] = t / "sessions"
    (t / "gifs" / "sub").mkdir(parents=True)  # images of a kind not read: named, not left out without a word
    (t / "gifs" / "sub" / "a.gif").write_bytes(b"GIF89a")
    p["gifs"] = t / "gifs"
    (t / "gifmix").mkdir()
    (t / "gifmix" / "b.GIF").write_bytes(b"GIF89a")
    _png(t / "gifmix" / "a.png")
    p["gifmix"] = t / "gifmix"
    p["junk_avi"] = t / "junk.avi"
    p["junk_avi"].write_bytes(os.urandom(2000))
    p["outdir"] = t / "outdir"
    p["outdir"].mkdir()
    fake = t / "fake" / "model.keras"
    fake.parent.mkdir()
    fake.write_bytes(b"PK not a zip")
    p["fake_keras"] = fake
    (fake.parent / "split.json").write_text("{}")  # a training run's own file beside its model
    (t / "otherrun").mkdir()  # another training run's folder
    (t / "otherrun" / "model.keras").write_bytes(b"PK not a zip")
    (t / "otherrun" / "model.json").write_text("{}")
    # .npz files: good, truncated, empty, text, object arrays, damaged compressed data, missing classes
    np.savez(t / "good.npz", images=np.zeros((16, 8, 8, 3), np.uint8), labels=np.arange(16) % 8)
    np.savez(t / "trunc.npz", images=np.zeros((16, 8, 8, 3), np.uint8), labels=np.arange(16) % 8)
    _truncate(t / "trunc.npz")
    (t / "empty.npz").write_bytes(b"")
    (t / "text.npz").write_text("images,labels\n1,2\n")
    np.savez(t / "obj.npz", images=np.array([None] * 4, dtype=object), labels=np.arange(4))
    np.savez(t / "three.npz", images=np.zeros((6, 8, 8, 3), np.uint8), labels=np.arange(6) % 3)
    np.savez(t / "float.npz", images=np.zeros((16, 8, 8, 3), np.float32), labels=np.arange(16) % 8)
    np.savez(t / "keys.npz", x=np.zeros(3), y=np.zeros(3))
    np.savez_compressed(t / "gz.npz", images=np.zeros((64, 8, 8, 3), np.uint8), labels=np.arange(64) % 8)
    raw = bytearray((t / "gz.npz").read_bytes())
    raw[80:120] = b"x" * 40
    (t / "gzbad.npz").write_bytes(bytes(raw))
    (t / "noclasses").mkdir()
    for name in ("lymphocyte", "Neutrophils", "blast", "plural/Lymphs", "plural/Neutrophils"):
        d = t / name if "/" in name else t / "misnamed" / name  # misnamed: one misnamed class, one the model has not
        d.mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(d / f"{i}.png"), np.full((24, 24, 3), 40 * i + 60, np.uint8))
    for name, edit in (("ten", {"epochs": "ten"}), ("resnet", {"arch": "resnet"}), ("lr", {"learning_rate": -1}),
                       ("size", {"image_size": None})):  # a run's config.json edited by hand
        (t / "edited" / name).mkdir(parents=True)
        (t / "edited" / name / "config.json").write_text(json.dumps({"out": "r", "arch": "tiny", "image_size": 16,
                                                                      "epochs": 1, **edit}))
    (t / "killedsoup" / "members" / "0").mkdir(parents=True)  # --preset few-shot killed in its first member
    (t / "notes").mkdir()  # a user's own files of the names --report writes
    (t / "notes" / "differential.json").write_text('{"my": "own notes"}')
    (t / "mine").mkdir()  # a user's own files of the names bench and audit write
    (t / "mine" / "bench.json").write_text('{"my": "own figures"}')
    (t / "mine" / "exclusions.txt").write_text("lymphocyte/3.png\n")
    (t / "sess" / "s1").mkdir(parents=True)  # a session's folder
    (t / "sess" / "s1" / "state.json").write_text("{}")
    (t / "sess" / "s1" / "cells.jsonl").write_text("")
    (t / "typed-split.json").write_text('{"class_names": ["lymphocyte"], "train": 5}')  # a hand-edited split
    (t / "no-train-split.json").write_text('{"class_names": ["lymphocyte"], "train": [], "val": ["lymphocyte/0.png"]}')
    (t / "bad.yaml").write_text("epochs: [1\n")
    (t / "deep.yaml").write_text("mode: " + "[" * 10000 + "]" * 10000 + "\n")  # a RecursionError traceback
    (t / "deep_site.json").write_text("[" * 100000 + "]" * 100000)
    (t / "list.yaml").write_text("- 1\n- 2\n")
    (t / "keys.yaml").write_text("epochs: 1\nfrobnicate: 2\n")
    (t / "listval.yaml").write_text("epochs: [1, 2]\n")
    (t / "float.yaml").write_text("epochs: 1.5\n")
    (t / "base60.yaml").write_text("epochs: 1:30\n")  # YAML 1.1 base 60: read as 90 without a word
    np.savez(t / "apack.npz", **{k: np.zeros(2, np.int64) for k in ("blob", "offsets", "labels", "ids", "split",
                                                                     "class_names")})  # a pack's arrays
    (t / "userout").mkdir()  # a user's own files under the names cellcompress writes
    (t / "userout" / "report.md").write_text("mine")
    (t / "userout" / "model_float16.tflite").write_bytes(b"a model of mine, no sidecar")
    (t / "hex.yaml").write_text("epochs: 0x20\n")  # YAML 1.1 hexadecimal: read as 32 without a word
    (t / "twice.yaml").write_text("epochs: 3\nepochs: 5\n")  # the last one won without a word
    (t / "count60.yaml").write_text("count: 1:00\n")  # read as 60
    (t / "nul.json").write_text('{"model": "a\\u0000b"}')  # a NUL in a path value: a ValueError traceback
    (t / "fifo").mkdir()
    os.mkfifo(t / "fifo" / "ff.png")  # a named pipe that looks like an image: classify waited for ever
    (t / "bom.json").write_bytes(b'\xef\xbb\xbf{"epochs": 2}\n')  # Notepad's byte-order mark
    (t / "dotus.yaml").write_text("lr: ._5\n")  # not a number to PyYAML: text, refused by --lr
    (t / "twodocs.yaml").write_text("epochs: 2\n---\nlr: 1\n")
    (t / "lr_twice.yaml").write_text("lr: 1e-3\nlearning-rate: 3e-4\n")  # the last one won without a word
    (t / "numdata.yaml").write_text("data: 2024.10\n")  # a folder's name YAML reads as the number 2024.1
    (t / "datedata.yaml").write_text("out: 2024-10-01\n")  # as a date
    (t / "booldata.yaml").write_text("data: no\n")  # as false
    (t / "seed.yaml").write_text("seed: -1\n")
    (t / "numbers.yaml").write_text('lr: 3e-4\nweight_decay: 1e-4\nepochs: "30"\nbatch_size: 32.0\n'
                                    "weights: null\n")
    for c in ("lymphocyte", "neutrophil"):
        for i in range(3):
            _png(t / "classes" / c / f"{c}{i}.png", (32, 32, 3), 60 + 40 * i)
    for c in ("blast", "Blast", "smudge"):  # two folders of one class in another case
        for i in range(3):
            _png(t / "cased" / c / f"{c}{i}.png", (32, 32, 3), 60 + 40 * i)
    (t / "notarun").mkdir()
    from scopelite.train.synth import make_field

    cv2.imwrite(str(t / "field.png"), make_field(np.random.default_rng(0), 640, 480)[0][..., ::-1])
    (t / "exported").mkdir()
    (t / "exported" / "export.json").write_text('{"last_export": {}, "files": []}')  # celledge export wrote it
    (t / "other-export").mkdir()
    (t / "other-export" / "export.json").write_text('{"unrelated": true}')  # another program's file of that name
    os.mkfifo(t / "nobody.jsonl")  # a named pipe no program reads
    odd = t / "odd"  # beside a good image: a folder named like one, and a link to an image that is gone
    (odd / "x.jpg").mkdir(parents=True)
    _png(odd / "good.png")
    (odd / "gone.png").symlink_to(t / "deleted.png")
    (t / "tpu").mkdir()  # an Edge TPU model on a machine without libedgetpu (copied to a Pi before the runtime)
    shutil.copy(model, t / "tpu" / "m_edgetpu.tflite")
    (t / "tpu" / "m_edgetpu.json").write_text(json.dumps({**sc, "file": "m_edgetpu.tflite", "runtimes": ["edgetpu"]}))
    (t / "strip").mkdir()
    cv2.imwrite(str(t / "strip" / "a.png"), np.full((1, 1500, 3), 200, np.uint8))  # a line of a frame
    (t / "site.json").write_text('{\n "schema": "scopelite-site/1",\n "frames": 5\n}\n')  # a document, indented
    (t / "film.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST")  # a video's first bytes: not an image
    for name, (w, h), n in (("tiny.avi", (8, 8), 3), ("empty.avi", (64, 64), 0), ("cut.mp4", (64, 64), 20)):
        v = cv2.VideoWriter(str(t / name), cv2.VideoWriter_fourcc(*("mp4v" if name.endswith("mp4") else "MJPG")), 10,
                            (w, h))  # frames too small to read; none at all; an MP4 cut short (its index lost)
        for _ in range(n):
            v.write(np.full((h, w, 3), 100, np.uint8))
        v.release()
    _truncate(t / "cut.mp4")
    return p


def _args(template: str, p: dict) -> list[str]:
    """``"classify {model} {img}"`` -> arguments with the corpus' paths; ``{tmp}`` is a fresh folder."""
    return [a.format(**{k: str(v) for k, v in p.items()}) for a in template.split()]


# (id, command, arguments, exit code, text of the Error line (None: no Error line), stderr text, stdout text)
CASES = [
    # ---- celledge classify
    ("classify-k0", "celledge", "classify -k 0 {img}", 2, "'-k'", None, None),
    ("classify-k-neg", "celledge", "classify -k -1 {img}", 2, "'-k'", None, None),
    ("classify-k-huge", "celledge", "classify -k 100 {img}", 0, None, None, "\t"),
    ("classify-threads0", "celledge", "classify --threads 0 {img}", 2, "--threads", None, None),
    ("classify-threads-huge", "celledge", "classify --threads 100000 {img}", 2, "1<=x<=64", None, None),  # crashed
    ("watch-wbc-nan", "celledge", "watch {mixed} --mode field --wbc nan", 2, "not a finite number", None, None),
    ("watch-wbc-huge", "celledge", "watch {mixed} --mode field --wbc 1e308", 2, "--wbc", None, None),
    ("watch-min-score-nan", "celledge", "watch {mixed} --min-score nan", 2, "not a finite number", None, None),
    ("watch-fps-tiny", "celledge", "watch {mixed} --fps 1e-10", 2, "--fps", None, None),  # overflowed a sleep
    ("watch-out-dash", "celledge", "watch {mixed} --out -", 0, None, None, '"summary"'),  # stdout, not a file "-"
    ("watch-config-deep", "celledge", "watch {mixed} --config {c}/deep.yaml", 2, "nested too deeply", None, None),
    ("watch-config-base60", "celledge", "watch {mixed} --config {c}/count60.yaml", 2, "count: expected a whole "
     "number, got '1:00'", None, None),  # counted 60 frames
    ("watch-site-deep", "celledge", "watch {mixed} --mode field --site {c}/deep_site.json", 2, "nested too deeply",
     None, None),
    ("watch-mp4-cut-short", "celledge", "watch {c}/cut.mp4", 2, "cut short before its end was written", None, None),
    ("watch-video-tiny-frames", "celledge", "watch {c}/tiny.avi", 2, "smaller than 16 px", None, None),  # exit 0
    ("watch-video-no-frames", "celledge", "watch {c}/empty.avi --mode field", 2, "holds no frames", None, None),
    ("watch-out-model", "celledge", "watch {mixed} --model {mcopy} --out {mcopy}", 2, "is the model this run reads",
     None, None),  # wrote its JSON lines over the model
    ("watch-out-sidecar", "celledge", "watch {mixed} --model {mcopy} --out {mcopy_json}", 2,
     "is the model's sidecar this run reads", None, None),
    ("calibrate-out-dash", "celledge", "calibrate {mixed} --out -", 2, "give a file name", None, None),
    # an output path typed for another option destroyed another model, a sidecar, a run's files (exit 0)
    ("watch-out-other-model", "celledge", "watch {mixed} --out {mcopy}", 2, "is named like a model file", None, None),
    ("watch-out-keras-name", "celledge", "watch {mixed} --out {tmp}/model.keras", 2, "named like a model file", None,
     None),
    ("watch-out-other-sidecar", "celledge", "watch {mixed} --out {mcopy_json}", 2, "is a model's sidecar", None, None),
    ("calibrate-out-sidecar", "celledge", "calibrate {mixed} --out {mcopy_json}", 2, "is a model's sidecar", None,
     None),
    ("calibrate-out-model", "celledge", "calibrate {mixed} --out {mcopy}", 2, "named like a model file", None, None),
    ("calibrate-out-config", "celledge", "calibrate {mixed} --out {c}/list.yaml", 2, "holds something else, not a "
     "site file", None, None),  # replaced the daemon's YAML config with exit 0
    ("watch-out-in-report", "celledge", "watch {mixed} --mode field --report {tmp}/rep --out {tmp}/rep/differential.json",
     2, "or a file it writes", None, None),  # the lines lost, the report left half JSON
    ("watch-out-in-sessions", "celledge", "watch {mixed} --mode field --sessions {tmp}/s --out {tmp}/s/x/lines.jsonl",
     2, "is inside a folder of --sessions", None, None),
    ("watch-out-is-report", "celledge", "watch {mixed} --mode field --report {tmp}/rep --out {tmp}/rep", 2,
     "is --report", None, None),  # the report lost after the whole count
    ("watch-out-is-sessions", "celledge", "watch {mixed} --mode field --sessions {tmp}/s --out {tmp}/s", 2,
     "--sessions", None, None),
    ("watch-out-beside-sessions", "celledge", "watch {mixed} --mode field --sessions {tmp} --report {tmp} --out "
     "{tmp}/frames.jsonl", 0, None, None, None),  # one folder for the lines, the report and the sessions: fine
    ("choose-out-pipe", "celltrain", "choose {fake_keras} --out {c}/nobody.jsonl", 2, "is a device or pipe", None,
     None),  # said after every candidate was scored
    ("choose-out-dev-full", "celltrain", "choose {fake_keras} --out /dev/full", 2, "is a device or pipe", None,
     None),
    ("evaluate-run-unwritable", "celltrain", "evaluate /sys/kernel", 2, "cannot be written", None, None),
    ("choose-out-model", "celltrain", "choose {fake_keras} --out {fake_keras}", 2, "named like a model file", None,
     None),
    ("choose-out-run-file", "celltrain", "choose {fake_keras} --out {c}/fake/split.json", 2,
     "a training run's own file", None, None),
    ("choose-out-yaml", "celltrain", "choose {fake_keras} --out {c}/keys.yaml", 2, "holds something else", None,
     None),  # replaced a config (a report.json, a manifest.json) with exit 0
    ("pack-out-other-npz", "celltrain", "pack {c}/misnamed {c}/no-train-split.json {c}/good.npz", 2,
     "holds something else, not a pack", None, None),  # a dataset .npz was replaced
    ("pack-split-typed", "celltrain", "pack {c}/misnamed {c}/typed-split.json {tmp}/p.npz", 2, "is damaged", None,
     None),  # a TypeError traceback
    ("pack-split-no-train", "celltrain", "pack {c}/misnamed {c}/no-train-split.json {tmp}/p.npz", 2,
     "names no train images", None, None),  # a pack of val only, exit 0
    ("choose-out-image", "celltrain", "choose {fake_keras} --out {img}", 2, "named like an image", None, None),
    ("pack-out-split", "celltrain", "pack {c}/misnamed {c}/fake/split.json {c}/fake/split.json", 2, "ending in .npz",
     None, None),
    ("pack-out-in-data", "celltrain", "pack {c}/misnamed {c}/fake/split.json {c}/misnamed/x.npz", 2, "inside DATA",
     None, None),
    ("compress-out-other-run", "cellcompress", "{fake_keras} --int8 --out {c}/otherrun", 2,
     "another training run's folder", None, None),
    ("watch-print-config-classes", "celledge", "watch {mixed} --save-dir {tmp}/s --save-classes lymphocyt "
     "--print-config", 2, "not labels of this model", None, None),  # printed a site file that then failed
    ("watch-size-folder", "celledge", "watch {mixed} --size 640x480", 0, None, "--size asks a camera", None),
    ("watch-config-nul-path", "celledge", "watch {mixed} --config {c}/nul.json", 2, "holds a NUL character", None,
     None),
    ("classify-fifo", "celledge", "classify {c}/fifo/ff.png", 2, "is not a file (a pipe or a device)", None, None),
    ("classify-fifo-folder", "celledge", "classify {c}/fifo", 2, "is not a file (a pipe or a device)", None, None),
    ("calibrate-size-folder", "celledge", "calibrate {mixed} --size 640x480 --out {tmp}/site.json", 2, "red cells",
     "--size asks a camera", None),  # accepted and ignored without a word (these images then hold no red cells)
    ("watch-save-cap-inf", "celledge", "watch {mixed} --save-dir {tmp}/s --save-below 0.5 --save-cap-mb inf", 2,
     "inf is not in the range 1<=x<=", None, None),
    ("fit-lr-nan", "celltrain", "fit --data {tmp} --lr nan", 2, "not a finite number", None, None),
    ("fit-image-size-17", "celltrain", "fit --data {c}/misnamed --out {tmp}/r --image-size 17", 2, "32 px or more", None,
     None),  # was a Keras traceback and a half-made run folder
    ("classify-threads-neg", "celledge", "classify --threads -3 {img}", 2, "--threads", None, None),
    ("classify-threads-word", "celledge", "classify --threads many {img}", 2, "--threads", None, None),
    ("classify-device-banana", "celledge", "classify --device banana {img}", 2, "not a device", None, None),
    ("classify-device-usbx", "celledge", "classify --device usb:x {img}", 2, "not a device", None, None),
    ("classify-device-usb-cpu-model", "celledge", "classify --device usb {img}", 2, "not compiled for the Edge TPU",
     None, None),
    ("watch-sessions-in-export", "celledge", "watch {mixed} --mode field --sessions {c}/exported/s", 2,
     "is in the cells celledge export wrote", None, None),  # its session folders became classes for fit
    ("classify-name-too-long", "celledge", "classify {tmp}/" + "a" * 300 + ".png", 2,
     "longer than the file system allows", None, None),  # exit 1 and 300 a's: "file system error"
    ("classify-odd-folder", "celledge", "classify {c}/odd", 2, "2 of 3 images could not be read",
     "gone.png cannot be read (a link to a file that is not there)", "good.png"),  # "[Errno 2] No such file ..."
    # and "x.jpg is not a file (a pipe or a device)" of the folder x.jpg
    ("watch-out-fifo-no-reader", "celledge", "watch {img} --out {c}/nobody.jsonl", 2,
     "named pipe that no program read within 10 s", None, None),  # waited for a reader for ever, without a word
    ("classify-edgetpu-unloadable", "celledge", "classify --model {c}/tpu/m_edgetpu.tflite {img}", 2,
     "cannot load the Edge TPU delegate", None, None),  # then "Exception ignored in Delegate.__del__ ... Traceback"
    ("watch-save-cap-huge", "celledge", "watch {img} --save-dir {tmp}/sv --save-below 1 --save-cap-mb 1e303", 2,
     "--save-cap-mb", None, None),  # OverflowError traceback
    ("watch-token-not-ascii", "celledge", "watch {img} --http 127.0.0.1:0 --http-token pässwort", 2,
     "must be ASCII", None, None),  # a header is read as Latin-1: the exact token was refused
    ("calibrate-strip", "celledge", "calibrate {c}/strip --out {tmp}/s.json", 2, "no frames to calibrate on",
     "smaller than 16 px a side", None),  # cv2.error traceback from a resize
    ("watch-out-document", "celledge", "watch {mixed} --out {c}/site.json", 2, "holds something other than JSON "
     "lines", None, None),  # lines appended to a site file: --site then read "not valid JSON", exit 0 here
    ("classify-field", "celledge", "classify {c}/field.png", 0, None, "hold more than one cell's crop", "\t"),
    ("classify-field-as-given", "celledge", "classify --rescale none {c}/field.png", 0, None,
     "were classified whole (--rescale none)", "\t"),  # a field shrunk to 96 px, classified without a word
    ("watch-sessions-other-export-json", "celledge", "watch {mixed} --mode field --sessions {c}/other-export/s "
     "--print-config", 0, None, None, "sessions:"),
    ("classify-video", "celledge", "classify {c}/film.avi", 2, "is a video, not an image: celledge watch", None,
     None),  # said "not an image, or corrupt" of a film
    ("classify-tta3", "celledge", "classify --tta 3 {img}", 2, "--tta", None, None),
    ("classify-fallback-gpu", "celledge", "classify --fallback gpu {img}", 2, "--fallback", None, None),
    ("classify-no-args", "celledge", "classify", 2, "Missing argument", None, None),
    ("classify-model-only", "celledge", "classify {model}", 2, "at least one IMAGE", None, None),
    ("classify-missing-image", "celledge", "classify {tmp}/missing.png", 2, "does not exist", None, None),
    ("classify-missing-model", "celledge", "classify --model {tmp}/none.tflite {img}", 2, "does not exist", None, None),
    ("classify-model-is-dir", "celledge", "classify --model {emptydir} {img}", 2,
     "is a folder with no approved model in it", None, None),
    ("classify-a-run-folder-as-images", "celledge", "classify {img} {run}", 2, "holds a model", None, None),
    # its curves.png were classified as blood cells by the packaged model
    ("watch-model-is-an-empty-dir", "celledge", "watch {img} --model {emptydir}", 2, "no approved model", None, None),
    ("calibrate-model-is-an-empty-dir", "celledge", "calibrate {img} --out {tmp}/s.json --model {emptydir}", 2,
     "no approved model", None, None),
    ("classify-corrupt-model", "celledge", "classify {corrupt} {img}", 2, "cannot load", None, None),
    ("classify-mismatch", "celledge", "classify {mismatch} {img}", 2, "input shape", None, None),
    ("classify-no-sidecar", "celledge", "classify {nosidecar} {img}", 2, "no sidecar", None, None),
    ("classify-sidecar-not-json", "celledge", "classify {badjson} {img}", 2, "not valid JSON", None, None),
    ("classify-sidecar-schema", "celledge", "classify {schema} {img}", 2, "not a scopelite sidecar", None, None),
    ("classify-sidecar-no-labels", "celledge", "classify {nolabels} {img}", 2, "labels", None, None),
    ("classify-sidecar-hash", "celledge", "classify {hash} {img}", 2, "sha256", None, None),
    ("classify-not-png", "celledge", "classify {bad_png}", 2, "could not be read", "skipped", None),
    ("classify-empty-file", "celledge", "classify {empty_png}", 2, "could not be read", None, None),
    ("classify-text-as-jpg", "celledge", "classify {text_jpg}", 2, "could not be read", None, None),
    ("classify-empty-dir", "celledge", "classify {emptydir}", 2, "no images", None, None),
    ("classify-mixed-folder", "celledge", "classify {mixed}", 2, "1 of 3 images", "skipped", "img2.png"),
    ("classify-1x1", "celledge", "classify {tiny}", 0, None, "far smaller", "tiny.png"),
    ("classify-ok", "celledge", "classify {img}", 0, None, None, "cell.png"),
    ("classify-json", "celledge", "classify --json {img}", 0, None, None, '"label"'),
    ("classify-bad-option", "celledge", "classify --bogus {img}", 2, "No such option", None, None),
    # ---- celledge watch
    ("watch-k0", "celledge", "watch {mixed} -k 0", 2, "'-k'", None, None),
    ("watch-threads0", "celledge", "watch {mixed} --threads 0", 2, "--threads", None, None),
    ("watch-device-banana", "celledge", "watch {mixed} --device banana", 2, "not a device", None, None),
    ("watch-crop-size-huge", "celledge", "watch {mixed} --mode field --crop-size 100000", 2, "--crop-size", None,
     None),
    ("watch-crop-size-tiny", "celledge", "watch {mixed} --mode field --crop-size 4", 2, "--crop-size", None, None),
    ("watch-mode-bad", "celledge", "watch {mixed} --mode blob", 2, "--mode", None, None),
    ("watch-fps0", "celledge", "watch {mixed} --fps 0", 2, "--fps", None, None),
    ("watch-max-frames0", "celledge", "watch {mixed} --max-frames 0", 2, "--max-frames", None, None),
    ("watch-size-word", "celledge", "watch {mixed} --size big", 2, "WIDTHxHEIGHT", None, None),
    ("watch-size-zero", "celledge", "watch {mixed} --size 0x10", 2, "WIDTHxHEIGHT", None, None),
    ("watch-min-score", "celledge", "watch {mixed} --min-score 2", 2, "--min-score", None, None),
    ("watch-backoff0", "celledge", "watch {mixed} --backoff-cap 0", 2, "--backoff-cap", None, None),
    ("watch-http-word", "celledge", "watch {mixed} --http nope", 2, "HOST:PORT", None, None),
    ("watch-http-port", "celledge", "watch {mixed} --http 127.0.0.1:70000", 2, "HOST:PORT", None, None),
    ("watch-missing", "celledge", "watch {tmp}/nope.avi", 2, "not found", None, None),
    ("watch-empty-dir", "celledge", "watch {emptydir}", 2, "no images", None, None),
    ("watch-gif-folder", "celledge", "watch {gifs}", 2, "1 image of a kind not read (.gif: ", None, None),
    ("watch-gif-mixed", "celledge", "watch {gifmix} --mode field", 0, None, "1 image of a kind not read (.gif: ",
     '"frames": 1'),
    ("classify-gif-mixed", "celledge", "classify {gifmix}", 0, None, "1 image of a kind not read (.gif: ", None),
    ("classify-gif-folder", "celledge", "classify {gifs}", 2, "1 image of a kind not read (.gif: ", None, None),
    ("calibrate-gif-folder", "celledge", "calibrate {gifs} --out {tmp}/s.json", 2, "1 image of a kind not read (.gif",
     None, None),
    ("watch-junk-video", "celledge", "watch {junk_avi} --exit-on-eof", 2, "cannot read", "as a video", None),
    ("watch-camera-index-huge", "celledge", "watch 2147483648 --exit-on-eof", 2, "not found", None, None),  # C int
    ("watch-camera-dev-huge", "celledge", "watch /dev/video99999999999999999999 --exit-on-eof", 2, "cannot open video "
     "source", None, None),  # OverflowError traceback
    ("watch-camera-unicode-digit", "celledge", "watch \u00b2 --exit-on-eof", 2, "not found", None, None),  # int('²')
    ("calibrate-camera-huge", "celledge", "calibrate 99999999999999999999 --out {tmp}/s.json", 2, "not found", None,
     None),
    ("watch-report-not-ours", "celledge", "watch {mixed} --mode field --report {c}/notes", 2, "not an earlier report",
     None, None),  # replaced without a word
    ("watch-out-session-log", "celledge", "watch {mixed} --out {c}/sess/s1/reviews.jsonl", 2, "inside a session's "
     "folder", None, None),  # frame lines appended to the session's review log
    ("calibrate-out-session-state", "celledge", "calibrate {mixed} --out {c}/sess/s1/state.json", 2, "inside a "
     "session's folder", None, None),  # said "a training run's own file"
    ("watch-text-file", "celledge", "watch {c}/list.yaml", 2, "as a video (not a video file", None, None),
    ("watch-one-image", "celledge", "watch {img} --mode field", 0, None, "no colour", '"frames": 1'),
    ("watch-one-text-as-jpg", "celledge", "watch {text_jpg}", 2, "none of the 1 images", "cannot decode", None),
    ("watch-one-tiny-image", "celledge", "watch {tiny}", 2, "none of the 1 images", "smaller than 16 px", None),
    ("classify-grey", "celledge", "classify {img}", 0, None, "1 of 1 images hold no colour", "cell.png"),
    ("classify-grey-json", "celledge", "classify --json {img}", 0, None, "hold no colour", '"no_colour": true'),
    ("watch-no-camera", "celledge", "watch /dev/video99 --exit-on-eof", 2, "cannot open video source", None, None),
    ("watch-truncated-between", "celledge", "watch {mixed}", 0, None, "img1.png", '"unreadable": 1'),
    ("watch-truncated-loop", "celledge", "watch {mixed} --loop --max-frames 5", 0, None, "img1.png",
     '"frames": 5'),
    ("watch-all-unreadable", "celledge", "watch {allbad}", 2, "none of the 2 images", "skipped", None),
    ("watch-all-unreadable-loop", "celledge", "watch {allbad} --loop", 2, "none of the 2 images", None, None),
    ("watch-frame-too-large", "celledge", "watch {huge}", 0, None, "larger than 4096", '"unreadable": 1'),
    ("classify-too-large", "celledge", "classify {huge}", 2, "1 of 2 images could not be read", "larger than 4096",
     "a.png"),
    ("watch-out-unwritable", "celledge", f"watch {{mixed}} --out {UNWRITABLE}/w.jsonl", 2, "cannot be written",
     None, None),
    ("watch-out-disk-full", "celledge", "watch {mixed} --out /dev/full", 2, "no space left", None, None),
    ("watch-out-is-dir", "celledge", "watch {mixed} --out {emptydir}", 2, "--out", None, None),
    ("watch-save-dir-unwritable", "celledge", f"watch {{mixed}} --save-dir {UNWRITABLE} --save-below 0.5", 2,
     "cannot be written", None, None),
    ("watch-save-dir-no-rule", "celledge", "watch {mixed} --save-dir {tmp}/s", 2, "needs --save-classes", None,
     None),
    ("watch-save-classes-unknown", "celledge", "watch {mixed} --save-dir {tmp}/s --save-classes foo", 2,
     "not labels", None, None),
    ("watch-save-below-no-dir", "celledge", "watch {mixed} --save-below 0.5", 2, "Error: --save-below needs --save-dir",
     None, None),
    ("watch-dev-null", "celledge", "watch /dev/null", 2, "'/dev/null' is not a video file, an image or a folder",
     None, None),
    ("watch-save-classes-no-dir", "celledge", "watch {mixed} --save-classes basophil", 2,
     "Error: --save-classes needs --save-dir", None, None),
    ("watch-crop-size-crop-mode", "celledge", "watch {mixed} --crop-size 300", 2, "--crop-size needs --mode field",
     None, None),
    ("watch-save-cap0", "celledge", "watch {mixed} --save-dir {tmp}/s --save-cap-mb 0", 2, "--save-cap-mb", None,
     None),
    ("watch-mismatch", "celledge", "watch {mixed} --model {mismatch}", 2, "sidecar says", None, None),
    ("watch-corrupt-model", "celledge", "watch {mixed} --model {corrupt}", 2, "cannot load", None, None),
    ("watch-ok-max-frames", "celledge", "watch {mixed} --max-frames 1", 0, None, None, '"max frames"'),
    ("watch-ok-out-file", "celledge", "watch {mixed} --out {tmp}/w.jsonl", 0, None, None, None),
    ("watch-ok-save", "celledge", "watch {mixed} --save-dir {tmp}/s --save-below 1.0", 0, None, None, '"frames": 2'),
    # ---- celledge info and the group
    ("info-mismatch", "celledge", "info {mismatch}", 2, "does not match", None, None),
    ("info-corrupt", "celledge", "info {corrupt}", 2, "cannot load", None, None),
    ("info-no-sidecar", "celledge", "info {nosidecar}", 2, "no sidecar", None, None),
    ("info-missing", "celledge", "info {tmp}/none.tflite", 2, "does not exist", None, None),
    ("info-ok", "celledge", "info {model}", 0, None, None, "cpu: works here"),
    ("celledge-no-command", "celledge", "frobnicate", 2, "No such command", None, None),
    ("celledge-bad-option", "celledge", "--bogus", 2, "No such option", None, None),
    # ---- cellcompress
    ("compress-max-drop-neg", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --max-drop -1 -1", 2, "--max-drop",
     None, None),
    ("compress-max-drop-nan", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --max-drop 1 nan", 2,
     "--max-drop", None, None),
    ("compress-max-drop-inf", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --max-drop inf inf", 2,
     "0 to 100 points", None, None),  # turned the gate off and wrote Infinity (not JSON) into model.json
    ("compress-compiler-without-edgetpu", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --compiler {img}", 2,
     "add --edgetpu", None, None),  # ignored without a word
    ("compress-qat-ranges-without-qat", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --qat-ranges both", 2,
     "add --qat", None, None),
    ("compress-max-drop-word", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --max-drop a b", 2, "--max-drop",
     None, None),
    ("compress-out-unwritable", "cellcompress", f"{{fake_keras}} --int8 --out {UNWRITABLE}/o", 2,
     "cannot be written", None, None),
    ("compress-out-is-file", "cellcompress", "{fake_keras} --int8 --out {img}", 2, "--out", None, None),
    ("compress-missing-model", "cellcompress", "{tmp}/none.keras --int8 --out {tmp}/o", 2, "does not exist", None,
     None),
    ("compress-unknown-subcommand", "cellcompress", "frobnicate --int8 --out {tmp}/o", 2, "does not exist", None,
     None),
    ("compress-tflite-input", "cellcompress", "{corrupt} --int8 --out {tmp}/o", 2, "this takes the model.keras of a "
     "training run", None, None),
    ("compress-fake-keras", "cellcompress", "{fake_keras} --int8 --out {tmp}/o", 2, "no sidecar", None, None),
    ("compress-representative", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --representative 2", 2,
     "--representative", None, None),
    ("compress-io-dtype", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --io-dtype float", 2, "--io-dtype",
     None, None),
    ("compress-bad-option", "cellcompress", "{fake_keras} --int4 --out {tmp}/o", 2, "No such option", None, None),
    ("bench-tta-word", "cellcompress", "bench {fake_keras} --out {tmp}/b --tta x", 2, "comma-separated", None, None),
    ("bench-out-unwritable", "cellcompress", f"bench {{fake_keras}} --out {UNWRITABLE}/b", 2, "cannot be written",
     None, None),
    ("bench-limit-neg", "cellcompress", "bench {fake_keras} --out {tmp}/b --limit -1", 2, "--limit", None, None),
    ("bench-missing", "cellcompress", "bench {tmp}/none.keras --out {tmp}/b", 2, "does not exist", None, None),
    ("bench-out-users-files", "cellcompress", "bench {model} --out {c}/mine", 2,
     "holds bench.json that cellcompress bench did not write", None, None),  # replaced, exit 0
    ("audit-out-users-files", "celltrain", "audit {c}/good.npz --out {c}/mine", 2,
     "holds exclusions.txt that audit did not write", None, None),  # a lab's own list replaced, exit 0
    # ---- celltrain
    ("fit-data-a-sessions-folder", "celltrain", "fit --data {sessions} --out {tmp}/r", 2,
     "export the cells you reviewed first", None, None),  # said "move 20261204-.../ out of" each session
    ("fit-npz-truncated", "celltrain", "fit --data {c}/trunc.npz --out {tmp}/r", 2, "truncated", None, None),
    ("fit-npz-empty", "celltrain", "fit --data {c}/empty.npz --out {tmp}/r", 2, "empty", None, None),
    ("fit-npz-text", "celltrain", "fit --data {c}/text.npz --out {tmp}/r", 2, "not a .npz file", None, None),
    ("fit-npz-missing", "celltrain", "fit --data {tmp}/none.npz --out {tmp}/r", 2, "not found", None, None),
    ("fit-data-missing", "celltrain", "fit --data {tmp}/nodata --out {tmp}/r", 2, "not found", None, None),
    ("fit-out-unwritable", "celltrain", f"fit --out {UNWRITABLE}/r", 2, "cannot be written", None, None),
    ("fit-out-is-file", "celltrain", "fit --out {img}", 2, "--out", None, None),
    ("fit-no-out", "celltrain", "fit --epochs 1", 2, "give --out", None, None),
    ("fit-out-is-data", "celltrain", "fit --data {c}/misnamed --out {c}/misnamed", 2, "is --data", None, None),
    ("fit-out-in-data", "celltrain", "fit --data {c}/misnamed --out {c}/misnamed/r", 2, "is inside --data", None,
     None),  # fit wrote its run into the class folders: next time its folders were classes
    ("fit-data-a-file", "celltrain", "fit --data {img} --out {tmp}/r", 2, "is a file, not a folder", None, None),
    ("fit-weights-empty", "celltrain", "fit --weights {empty} --out {tmp}/r", 2, "--weights is empty", None, None),
    ("fit-weights-a-folder", "celltrain", "fit --weights {tmp} --out {tmp}/r", 2, "is a folder", None, None),
    ("fit-preset-epochs", "celltrain", "fit --preset few-shot --out {tmp}/r --epochs 3", 2,
     "(--average-last: from --preset/--config", None, None),  # named an option the user had not typed
    ("fit-preset-arch", "celltrain", "fit --preset few-shot --out {tmp}/r --arch tiny", 2,
     "(--weights: from --preset/--config", None, None),
    ("fit-resume-epochs", "celltrain", "fit --resume {tmp} --epochs 40 --data {tmp}", 2,
     "--data, --epochs would be ignored", None, None),  # were ignored silently: the run kept its own
    ("fit-resume-preset", "celltrain", "fit --resume {tmp} --preset few-shot", 2, "--preset/--config would be",
     None, None),
    ("fit-epochs0", "celltrain", "fit --out {tmp}/r --epochs 0", 2, "--epochs", None, None),
    ("fit-arch", "celltrain", "fit --out {tmp}/r --arch resnet", 2, "--arch", None, None),
    ("fit-aug", "celltrain", "fit --out {tmp}/r --aug frobnicate=1", 2, "--aug", None, None),
    ("fit-lr0", "celltrain", "fit --out {tmp}/r --lr 0", 2, "--lr", None, None),
    ("fit-config-yaml", "celltrain", "fit --config {c}/bad.yaml --out {tmp}/r", 2, "not valid YAML", None, None),
    ("fit-config-list", "celltrain", "fit --config {c}/list.yaml --out {tmp}/r", 2, "mapping", None, None),
    ("fit-misnamed-class", "celltrain", "fit --data {c}/misnamed --weights shipped --out {tmp}/r", 2,
     "rename Neutrophils/ to neutrophil/", None, None),
    ("fit-plural-classes", "celltrain", "fit --data {c}/plural --weights shipped --out {tmp}/r", 2,
     "rename Lymphs/ to lymphocyte/", None, None),
    ("fit-foreign-class", "celltrain", "fit --data {c}/misnamed --weights shipped --out {tmp}/r", 2,
     "move blast/ out of", None, None),
    ("fit-config-keys", "celltrain", "fit --config {c}/keys.yaml --out {tmp}/r", 2, "unknown keys", None, None),
    ("fit-config-list-value", "celltrain", "fit --config {c}/listval.yaml --out {tmp}/r", 2, "is not a single value",
     None, None),  # a TypeError traceback
    ("fit-config-float-epochs", "celltrain", "fit --config {c}/float.yaml --out {tmp}/r", 2, "is not a whole number",
     None, None),  # read as 1 without a word
    ("fit-config-base60", "celltrain", "fit --config {c}/base60.yaml --out {tmp}/r", 2, "epochs: '1:30' is not a "
     "whole number", None, None),  # trained 90 epochs
    ("compress-folder-not-run", "cellcompress", "{c}/notarun --int8 --out {tmp}/o", 2,
     "model.keras not found: give a run folder", None, None),  # "File '...' is a directory"
    ("compress-out-users-files", "cellcompress", "{fake_keras} --int8 --out {c}/userout", 2,
     "that cellcompress did not write", None, None),  # report.md replaced, model_float16.tflite deleted, exit 0
    ("fit-data-pack", "celltrain", "fit --data {c}/apack.npz --out {tmp}/r --arch tiny --image-size 16 --epochs 1",
     2, "is a pack from celltrain pack: celltrain fit --backend keras3", None, None),  # "holds [...]; expected ..."
    ("fit-batch-huge", "celltrain", "fit --data {c}/classes --out {tmp}/r --arch tiny --image-size 16 --epochs 1 "
     "--batch-size 10000000", 2, "10000000 is not in the range 1<=x<=8192", None, None),  # TF ran out of memory
    ("fit-config-hex", "celltrain", "fit --config {c}/hex.yaml --out {tmp}/r", 2, "epochs: '0x20' is not a "
     "whole number", None, None),  # trained 32 epochs
    ("fit-config-twice", "celltrain", "fit --config {c}/twice.yaml --out {tmp}/r", 2, "twice.yaml:2: epochs: given "
     "twice (also line 1)", None, None),
    ("fit-config-bom-json", "celltrain", "fit --config {c}/bom.json --data {c}/nowhere --out {tmp}/r", 2,
     "data folder", None, None),  # read, then the missing data is named
    ("fit-config-dot-underscore", "celltrain", "fit --config {c}/dotus.yaml --out {tmp}/r", 2, "'._5' is not a "
     "number", None, None),
    ("fit-config-two-documents", "celltrain", "fit --config {c}/twodocs.yaml --out {tmp}/r", 2, "expected a single "
     "document in the stream but found another document", None, None),
    ("fit-config-two-spellings", "celltrain", "fit --config {c}/lr_twice.yaml --out {tmp}/r", 2, "lr and "
     "learning-rate are the same option; give it once", None, None),
    ("fit-config-endless", "celltrain", "fit --config /dev/zero --out {tmp}/r", 2, "is not a file (a pipe or a device)",
     None, None),  # read the whole file into memory (a file of a GB of spaces too)
    ("fit-config-number-path", "celltrain", "fit --config {c}/numdata.yaml --out {tmp}/r", 2, "data: 2024.1 is not a "
     "name: YAML read it as a number; put the value in quotes", None, None),  # click's Path: a TypeError traceback
    ("fit-config-date-path", "celltrain", "fit --config {c}/datedata.yaml", 2, "YAML read it as a date", None, None),
    ("fit-config-bool-path", "celltrain", "fit --config {c}/booldata.yaml --out {tmp}/r", 2, "YAML read it as true "
     "or false", None, None),
    ("fit-config-seed-neg", "celltrain", "fit --config {c}/seed.yaml --out {tmp}/r", 2, "--seed", None, None),
    ("fit-seed-neg", "celltrain", "fit --seed -1 --out {tmp}/r", 2, "--seed", None, None),  # a numpy traceback
    ("fit-train-seed-huge", "celltrain", "fit --train-seed 4294967296 --out {tmp}/r", 2, "--train-seed", None,
     None),  # after the run folder was made
    ("synth-seed-neg", "celltrain", "synth {tmp}/s --seed -1", 2, "--seed", None, None),
    ("evaluate-seed-neg", "celltrain", "evaluate {c}/fake --seed -1", 2, "--seed", None, None),
    ("compress-seed-neg", "cellcompress", "{fake_keras} --int8 --out {tmp}/o --seed -1", 2, "--seed", None, None),
    ("bench-seed-huge", "cellcompress", "bench {fake_keras} {fake_keras} --out {tmp}/b --seed 4294967296", 2,
     "--seed", None, None),
    ("fit-image-size-huge", "celltrain", "fit --data {c}/classes --out {tmp}/r --image-size 100000", 2,
     "GB of memory", None, None),  # NumPy's ArrayMemoryError traceback
    ("audit-image-size-huge", "celltrain", "audit {c}/classes --out {tmp}/a --image-size 100000", 2, "GB of memory",
     None, None),
    ("synth-per-class-huge", "celltrain", "synth {tmp}/s --per-class 100000000 --no-video", 2, "GB of memory",
     None, None),
    ("synth-into-real-data", "celltrain", "synth {c}/classes --per-class 1 --fields 0 --no-video", 2,
     "not made by celltrain synth", None, None),  # mixed its crops in and marked the folder synthetic
    ("fit-config-yaml-numbers-read", "celltrain", "fit --config {c}/numbers.yaml --data {c}/nowhere --out {tmp}/r", 2,
     "not found", None, None),  # 3e-4 (a string to PyYAML), "30", 30.0 and null are read as click reads them
    ("fit-exclude-pipe", "celltrain", "fit --data {c}/classes --exclude {c}/nobody.jsonl --out {tmp}/r --arch tiny "
     "--image-size 16", 2, "is not a file (a folder, a pipe or a device)", None, None),  # "not found" of a pipe
    ("fit-exclude-binary", "celltrain", "fit --data {c}/classes --exclude {img} --out {tmp}/r --arch tiny "
     "--image-size 32", 2, "not a text file of image ids", None, None),  # UnicodeDecodeError traceback
    ("fit-resume-epochs-ten", "celltrain", "fit --resume {c}/edited/ten", 2, "epochs: 'ten' is not a whole number",
     None, None),  # a TypeError traceback mid-way
    ("fit-resume-arch", "celltrain", "fit --resume {c}/edited/resnet", 2, "arch: 'resnet' is not one of", None,
     None),  # a traceback after the whole training
    ("fit-resume-lr-neg", "celltrain", "fit --resume {c}/edited/lr", 2, "learning_rate: -1 is not more than 0", None,
     None),  # trained with it
    ("fit-resume-size-null", "celltrain", "fit --resume {c}/edited/size", 2, "image_size is null", None, None),
    ("fit-into-killed-soup", "celltrain", "fit --out {c}/killedsoup --arch tiny --image-size 16 --epochs 1", 2,
     "holds the members of a --soup run", None, None),  # a plain run was made beside the soup's members
    ("fit-resume-not-run", "celltrain", "fit --resume {c}/notarun", 2, "not a run folder", None, None),
    ("audit-npz-empty", "celltrain", "audit {c}/empty.npz --out {tmp}/a", 2, "empty", None, None),
    ("audit-npz-truncated", "celltrain", "audit {c}/trunc.npz --out {tmp}/a", 2, "truncated", None, None),
    ("audit-npz-objects", "celltrain", "audit {c}/obj.npz --out {tmp}/a", 2, "object arrays", None, None),
    ("audit-npz-damaged", "celltrain", "audit {c}/gzbad.npz --out {tmp}/a", 2, "damaged", None, None),
    ("audit-npz-classes", "celltrain", "audit {c}/three.npz --out {tmp}/a", 2, "no images of class", None,
     None),
    ("audit-npz-float", "celltrain", "audit {c}/float.npz --out {tmp}/a", 2, "uint8", None, None),
    ("audit-npz-keys", "celltrain", "audit {c}/keys.npz --out {tmp}/a", 2, "expected 'images'", None, None),
    ("audit-no-class-folders", "celltrain", "audit {c}/noclasses --out {tmp}/a", 2, "no class folders", None,
     None),
    ("audit-missing", "celltrain", "audit {tmp}/none --out {tmp}/a", 2, "does not exist", None, None),
    ("audit-out-unwritable", "celltrain", f"audit {{c}}/good.npz --out {UNWRITABLE}/a", 2, "cannot be written",
     None, None),
    ("synth-unwritable", "celltrain", f"synth {UNWRITABLE}/s", 2, "cannot be written", None, None),
    ("synth-per-class0", "celltrain", "synth {tmp}/s --per-class 0", 2, "--per-class", None, None),
    ("evaluate-missing", "celltrain", "evaluate {tmp}/none", 2, "does not exist", None, None),
    ("evaluate-tflite", "celltrain", "evaluate {model}", 2, "is a tflite model; this takes the model.keras of a "
     "training run", None, None),  # named cellcompress, which the user had not run
    ("average-out-not-empty", "celltrain", "average {fake_keras} {fake_keras} --out {c}/misnamed", 2, "is not empty",
     None, None),  # the average's files were mixed into the folder
    ("average-same-twice", "celltrain", "average {c}/fake {c}/fake/model.keras --out {tmp}/s", 2, "is given twice",
     None, None),  # "averaging 2 models" of one, exit 0
    ("average-out-unwritable", "celltrain", f"average {{fake_keras}} {{fake_keras}} --out {UNWRITABLE}/a", 2,
     "cannot be written", None, None),  # said after the models were loaded and averaged
    ("average-missing", "celltrain", "average {tmp}/none --out {tmp}/s", 2, "does not exist", None, None),
    ("choose-empty-name", "celltrain", "choose ={fake_keras} --out {tmp}/c.json", 2, "the NAME before '=' is empty",
     None, None),  # scored under the name ''
    ("fit-classes-differ-in-case", "celltrain", "fit --data {c}/cased --out {tmp}/r --arch tiny --image-size 16 "
     "--epochs 1", 2, "class folders Blast/ and blast/", None, None),  # trained, then the sidecar refused the labels
    ("audit-classes-differ-in-case", "celltrain", "audit {c}/cased --out {tmp}/a", 2, "name one class (blast",
     None, None),  # exit 0, blast: 0 images
    ("explain-missing-image", "celltrain", "explain {tmp} {tmp}/none.png", 2, "does not exist", None, None),
    ("explain-out-in-images", "celltrain", "explain {fake_keras} {c}/classes --out {c}/classes/cams", 2,
     "is inside IMAGES folder", None, None),  # the overlays were written among the cells, read as cells next time
    ("explain-out-unwritable", "celltrain", f"explain {{fake_keras}} {{img}} --out {UNWRITABLE}/x", 2,
     "cannot be written", None, None),  # said after the model had loaded (here: "not a model" instead)
    ("celltrain-no-command", "celltrain", "frobnicate", 2, "No such command", None, None),
    # an empty path ("$VAR" unset) read or wrote the current folder, or was dropped, with exit 0
    ("fit-data-empty", "celltrain", "fit --data {empty} --out {tmp}/r", 2, "is empty (an unset variable?)", None,
     None),  # trained on generated smears
    ("classify-empty", "celledge", "classify {empty}", 2, "is empty (an unset variable?)", None, None),
    ("calibrate-empty", "celledge", "calibrate {empty} --out {tmp}/s.json", 2, "is empty", None, None),
    ("watch-source-empty", "celledge", "watch {empty}", 2, "SOURCE is empty", None, None),
    ("watch-sessions-empty", "celledge", "watch {mixed} --mode field --sessions {empty}", 2, "is empty (an unset",
     None, None),  # the count was not recorded
    ("watch-report-empty", "celledge", "watch {mixed} --mode field --report {empty}", 2, "is empty (an unset", None,
     None),
    ("watch-http-empty", "celledge", "watch {mixed} --http {empty}", 2, "--http is empty", None, None),
    ("watch-count-huge", "celledge", "watch {mixed} --mode field --sessions {tmp}/s --count "
     "1000000000000000000000000000000000", 2, "more than a session holds (5000 cells)", None, None),  # every cell held
    ("watch-count-huge-no-session", "celledge", "watch {mixed} --mode field --count 10000", 0, None, None, None),
    ("watch-min-score-crop", "celledge", "watch {mixed} --min-score 0.9", 0, None, "--min-score 0.9 is for field "
     "mode", None),  # ignored without a word
    ("export-out-empty", "celledge", "export {tmp} --out {empty}", 2, "is empty", None, None),
    ("compress-data-empty", "cellcompress", "bench {fake_keras} {fake_keras} --data {empty}", 2, "is empty", None,
     None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_corpus(case, corpus, tmp_path):
    _, cli, template, code, error, stderr_has, stdout_has = case
    r = invoke_cli(cli, *_args(template, {**corpus, "tmp": tmp_path, "empty": ""}))
    if error is None:
        assert r.returncode == code, (r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]
        assert not [x for x in r.stderr.splitlines() if x.startswith("Error")], r.stderr[-2000:]
    else:
        assert_one_line_error(r, error, code=code)
    if stderr_has:
        assert stderr_has in r.stderr, r.stderr[-2000:]
    if stdout_has:
        assert stdout_has in r.stdout, r.stdout[-2000:]
    if cli == "celltrain" and " --out " in f" {template} ":  # a failed run leaves no --out folder behind
        assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()
    if cli == "cellcompress":  # a refused conversion writes nothing
        assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


def test_corpus_is_large_and_covers_the_three_clis():
    assert len(CASES) >= 80 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1] for c in CASES} == {"celltrain", "cellcompress", "celledge"}


def test_watch_summary_and_out_file_say_what_was_skipped(corpus, tmp_path):
    out = tmp_path / "w.jsonl"
    r = invoke_cli("celledge", "watch", str(corpus["mixed"]), "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    s = lines[-1]["summary"]
    assert s["frames"] == 2 and s["unreadable"] == 1 and s["stopped"] == "end of stream"
    assert [x for x in r.stderr.splitlines() if "img1.png" in x][0].startswith("warning: skipped")


def test_watch_out_starts_a_new_line_after_a_torn_one(corpus, tmp_path):
    """A log whose last line was cut (power lost, kill -9) got the next run's first line glued onto it: both lost."""
    out = tmp_path / "w.jsonl"
    out.write_text('{"frame": 1}\n{"frame": 7, "label": "neutro')
    r = invoke_cli("celledge", "watch", str(corpus["mixed"]), "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines[:2] == ['{"frame": 1}', '{"frame": 7, "label": "neutro']
    assert all(isinstance(json.loads(x), dict) for x in lines[2:]) and len(lines) > 3
    out.write_text('{"frame": 7, "label": "neutro')  # the only line there, torn: still appended to, not refused
    assert invoke_cli("celledge", "watch", str(corpus["mixed"]), "--out", str(out)).returncode == 0
    assert out.read_text().splitlines()[0] == '{"frame": 7, "label": "neutro'
    assert invoke_cli("celledge", "watch", str(corpus["mixed"]), "--out", str(out)).returncode == 0  # and again


def test_watch_out_waits_for_a_pipes_reader_that_starts_late(corpus, tmp_path):
    """A consumer started just after the daemon (systemd ordering) found it gone: the pipe had no reader yet."""
    import subprocess
    import threading

    pipe = tmp_path / "lines"
    os.mkfifo(pipe)
    got = []

    def reader():
        time.sleep(1.5)
        got.append(subprocess.run(["cat", str(pipe)], capture_output=True, text=True, timeout=60).stdout)

    t = threading.Thread(target=reader)
    t.start()
    r = invoke_cli("celledge", "watch", str(corpus["mixed"]), "--out", str(pipe))
    t.join(60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert got and '"summary"' in got[0]


def test_classify_as_given_warns_of_a_camera_frame_not_of_a_large_crop(corpus, tmp_path):
    """--rescale none: a 640x480 frame is shrunk whole (warned); a 575x575 crop of one cell is not a field."""
    big = tmp_path / "crop575.png"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(corpus["img"])), (575, 575)))
    r = invoke_cli("celledge", "classify", "--rescale", "none", str(big))
    assert r.returncode == 0 and "classified whole" not in r.stderr, r.stderr


def test_classify_says_no_stain_verdict_and_why_a_grey_frame_was_classified_as_given(tmp_path):
    """A colour image with nothing to measure the stain by gave ``"unlike_training": false``, a verdict it never
    reached (watch says null); a grey 640x480 frame under the default --rescale each was said classified whole
    "(--rescale none)", an option never given (a walk-through of session 37)."""
    plain, grey = tmp_path / "plain.png", tmp_path / "grey.png"
    cv2.imwrite(str(plain), np.full((200, 200, 3), (200, 190, 120), np.uint8))  # a cyan-ish empty background
    rng = np.random.default_rng(0)
    cv2.imwrite(str(grey), cv2.GaussianBlur(rng.integers(0, 255, (480, 640), dtype=np.uint8), (0, 0), 3))
    r = invoke_cli("celledge", "classify", "--json", str(plain))
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["stain_distance"] is None and rec["unlike_training"] is None
    r = invoke_cli("celledge", "classify", str(grey))
    assert r.returncode == 0, r.stderr
    assert "camera-sized" in r.stderr and "--rescale none" not in r.stderr and "no red cell" in r.stderr, r.stderr


def test_classify_says_which_side_of_a_strip_is_too_small(tmp_path):
    """A 4000x20 px strip was said "only 4000x20 px, far smaller than the model's 96x96 input" (a hunt of session
    37): its shorter side is what is too small."""
    strip = tmp_path / "strip.png"
    cv2.imwrite(str(strip), np.full((20, 4000, 3), (180, 160, 200), np.uint8))
    r = invoke_cli("celledge", "classify", str(strip))
    assert r.returncode == 0, r.stderr
    assert "its shorter side, 20 px, is far smaller than the model's" in r.stderr and "only" not in r.stderr, r.stderr


def test_synth_folders_make_a_synthetic_model(tmp_path):
    """`celltrain synth OUT` writes OUT/manifest.json and OUT/crops/<class>/: --data OUT/crops is synthetic."""
    from scopelite.edge.bundle import CLASS_NAMES
    from scopelite.train import data

    for c in CLASS_NAMES:
        _png(tmp_path / "crops" / c / "0.png", (16, 16, 3))
    assert not data.load(str(tmp_path / "crops"), 16).synthetic
    (tmp_path / "manifest.json").write_text(json.dumps({"synthetic": True, "generator": "scopelite.train.synth"}))
    ds = data.load(str(tmp_path / "crops"), 16)
    assert ds.synthetic and "synthetic" in ds.description


def test_folders_one_level_above_the_class_folders_are_refused_with_the_folder_to_give(tmp_path):
    """`celltrain synth data/` writes data/crops/<class>/ and data/fields/: `fit --data data/` took crops and
    fields as a model of two classes; a dataset split beforehand (train/val/test of class folders), three."""
    from scopelite.edge.bundle import CLASS_NAMES
    from scopelite.edge.errors import UserError
    from scopelite.train import data

    for c in CLASS_NAMES[:3]:
        _png(tmp_path / "crops" / c / "0.png", (16, 16, 3))
    _png(tmp_path / "fields" / "field_000.png", (16, 16, 3))
    with pytest.raises(UserError, match=f"the folder celltrain synth writes.*give {tmp_path / 'crops'}$"):
        data.load(str(tmp_path), 16)
    assert data.load(str(tmp_path / "crops"), 16).counts()[CLASS_NAMES[0]] == 1
    # a split made beforehand read as three classes (the test images trained on); the advice is not the test part
    for part in ("train", "val", "test"):
        for c in CLASS_NAMES[:2]:
            _png(tmp_path / "presplit" / part / c / "0.png", (16, 16, 3))
    with pytest.raises(UserError, match=f"split made beforehand .*, or only {tmp_path / 'presplit' / 'train'}$"):
        data.load(str(tmp_path / "presplit"), 16)
    # any other nesting is a dataset of its own classes, as before
    for group, cells in (("normal", CLASS_NAMES[:2]), ("leukemic", CLASS_NAMES[2:4])):
        for c in cells:
            _png(tmp_path / "groups" / group / c / "0.png", (16, 16, 3))
    assert data.load(str(tmp_path / "groups"), 16).class_names == ("leukemic", "normal")


def test_foreign_class_folders_are_refused_only_when_fine_tuning_the_8_classes(corpus):
    """Beside some of the 8 classes, a folder that is none of them is a misnamed class when a model of the 8 is
    fine-tuned; trained from scratch, the names are the model's own classes."""
    from scopelite.edge.errors import UserError
    from scopelite.train import data

    own = data.load(str(corpus["c"] / "misnamed"), 16)
    assert set(own.class_names) == {"blast", "lymphocyte", "neutrophils"}
    from scopelite.edge.bundle import CLASS_NAMES

    with pytest.raises(UserError, match="rename Neutrophils/ to neutrophil/"):
        data.load(str(corpus["c"] / "misnamed"), 16, classes=CLASS_NAMES)
    with pytest.raises(UserError, match="rename Lymphs/ to lymphocyte/; rename Neutrophils/ to neutrophil/"):
        data.load(str(corpus["c"] / "plural"), 16, classes=CLASS_NAMES)  # none of the 8 at all
    mine = data.load(str(corpus["c"] / "plural"), 16, classes=["neutrophils", "lymphs", "other"])
    assert mine.class_names == ("neutrophils", "lymphs", "other")  # a model of its own classes keeps their order


def test_failed_fit_removes_the_out_folder_it_made(corpus, tmp_path):
    """Past the up-front checks (a .npz without every class): the run folder made for it goes again."""
    r = invoke_cli("celltrain", "fit", "--data", str(corpus["c"] / "three.npz"), "--out", str(tmp_path / "r"),
                   "--arch", "tiny", "--image-size", "16")
    assert_one_line_error(r, "no images of class", code=2)
    assert not (tmp_path / "r").exists()
    # --soup K: the first member finds the mistake; neither it nor OUT/members stays
    r = invoke_cli("celltrain", "fit", "--data", str(corpus["c"] / "three.npz"), "--soup", "2", "--out",
                   str(tmp_path / "s"), "--arch", "tiny", "--image-size", "16")
    assert_one_line_error(r, "no images of class", code=2)
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------- file systems


def _readonly_mount(folder: Path):
    """A command prefix that runs in a private mount namespace with ``folder`` a read-only tmpfs, or None."""
    if not shutil.which("unshare"):
        return None
    folder.mkdir(exist_ok=True)
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro,size=1m tmpfs {folder}"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o ro,size=1m tmpfs {folder} && exec "$@"', "sh"]


def test_read_only_file_system(corpus, tmp_path):
    ro = tmp_path / "ro"
    prefix = _readonly_mount(ro)
    if prefix is None:
        pytest.skip("cannot mount a read-only tmpfs here (needs unshare and mount rights)")
    bin_dir = Path(sys.executable).parent

    def run(*args):
        return subprocess.run([*prefix, str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=120)

    assert_one_line_error(run("cellcompress", str(corpus["fake_keras"]), "--int8", "--out", str(ro / "o")),
                          "read-only file system", code=2)
    assert_one_line_error(run("celltrain", "synth", str(ro / "s")), "read-only file system", code=2)
    assert_one_line_error(run("celledge", "watch", str(corpus["mixed"]), "--out", str(ro / "w.jsonl")),
                          "read-only file system", code=2)
    assert_one_line_error(run("celledge", "watch", str(corpus["mixed"]), "--save-dir", str(ro / "s"),
                              "--save-below", "1"), "read-only file system", code=2)


def test_disk_full_mid_run_leaves_whole_lines(tmp_path):
    """The line that does not fit is cut back: every line in the file is whole JSON."""
    from scopelite.edge.errors import UserError
    from scopelite.edge.outputs import LineSink

    sink = LineSink(tmp_path / "w.jsonl")
    sink.write(json.dumps({"frame": 0}))
    real_write = os.write

    def short_then_full(fd, data):  # half a line goes out, then the disk is full
        os.write = real_write
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    os.write = short_then_full
    try:
        with pytest.raises(UserError, match="no space left"):
            sink.write(json.dumps({"frame": 1, "label": "x" * 100}))
    finally:
        os.write = real_write
        sink.close()
    assert [json.loads(x) for x in (tmp_path / "w.jsonl").read_text().splitlines()] == [{"frame": 0}]


def test_a_full_disk_at_an_atomic_write_names_the_file(tmp_path, monkeypatch):
    """A full disk at write or fsync raises an OSError without a file name: the run's Error line said
    "file system error at: no space left on device", naming nothing (a session's crop or state file)."""
    from scopelite.edge.bundle import write_bytes_atomic
    from scopelite.edge.errors import describe_os_error

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "crops" / "7.png"
    target.parent.mkdir()
    with pytest.raises(OSError) as e:
        write_bytes_atomic(target, b"x" * 10)
    assert describe_os_error(e.value).startswith(f"file system error at {target}: no space left on device")
    assert list(target.parent.iterdir()) == []  # no temporary file left
    assert describe_os_error(OSError(28, "No space left on device")).startswith("file system error: no space")
    # an error in our own words (no strerror) keeps its paths as they are spelled
    ours = "cannot use /data/DS/Sessions"
    assert describe_os_error(OSError(ours)) == f"file system error: {ours}"


def test_line_sink_follows_a_rotated_file_and_makes_its_folders(tmp_path):
    """logrotate renames the file (then compresses and removes it): the next line starts a new file at the path,
    not an endless write into the renamed or deleted one. Missing folders on the way are made (--print-config
    judged such a path writable by its nearest folder; the run then could not open it)."""
    from scopelite.edge.errors import UserError
    from scopelite.edge.outputs import LineSink

    path = tmp_path / "new" / "deeper" / "frames.jsonl"
    sink = LineSink(path)
    sink.write("1")
    path.rename(path.with_name("frames.jsonl.1"))
    sink.write("2")
    path.unlink()
    sink.write("3")
    sink.write("4")
    sink.close()
    assert path.with_name("frames.jsonl.1").read_text() == "1\n" and path.read_text() == "3\n4\n"
    r, w = os.pipe()  # a pipe (stdout into another program): never "rotated", never reopened
    try:
        pipe = LineSink(f"/dev/fd/{w}")
        assert pipe._id is None
        pipe.write("5")
        assert os.read(r, 10) == b"5\n"
        pipe.close()
    finally:
        os.close(r)
        os.close(w)
    gone = tmp_path / "moved" / "f.jsonl"  # a folder moved away later is not made again: one clear error
    sink = LineSink(gone)
    shutil.rmtree(gone.parent)
    with pytest.raises(UserError, match="cannot be opened"):
        sink.write("6")
    sink.close()


# ---------------------------------------------------------------------------------- signals and streams


def _start_watch(*args):
    exe = Path(sys.executable).parent / "celledge"
    return subprocess.Popen([str(exe), "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def _term_within(p, seconds: float) -> tuple[float, str, str]:
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    return time.monotonic() - t0, out, err


def _silent_server():
    """A TCP server that accepts connections and never says a word (a hung RTSP camera)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []

    def accept():
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return srv, conns


def test_hung_stream_open_is_bounded_and_sigterm_is_quick():
    srv, conns = _silent_server()
    try:
        url = f"rtsp://127.0.0.1:{srv.getsockname()[1]}/live"
        t0 = time.monotonic()
        r = run_cli("celledge", "watch", url, "--exit-on-eof", timeout=60)
        took = time.monotonic() - t0
        assert_one_line_error(r, "cannot open video source", code=2)
        assert took < 20, f"the open took {took:.1f} s (OpenCV's own limit is 30 s)"
        p = _start_watch(url)  # reconnecting forever; SIGTERM while an open hangs
        time.sleep(2.5)
        dt, out, err = _term_within(p, 2)
        assert dt < 2.0 and "Traceback" not in err, (dt, err[-2000:])
        assert p.returncode == 0 and '"summary"' in out, err[-2000:]  # a clean stop, not the forced one
    finally:
        srv.close()
        for c in conns:
            c.close()


def test_sigterm_in_a_busy_field_loop(tmp_path):
    """Field mode on the largest frames taken (4096 px a side), looped: SIGTERM still ends it within 2 s."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (4096, 4096, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "field.png"), big)
    p = _start_watch(str(tmp_path), "--mode", "field", "--crop-size", "4096", "--loop")
    time.sleep(3.5)
    assert p.poll() is None, p.stderr.read()[-2000:]
    dt, out, err = _term_within(p, 2)
    assert dt < 2.0 and "Traceback" not in err, (dt, err[-2000:])


def test_a_second_signal_inside_the_first_handler_does_not_deadlock():
    """The SIGINT/SIGTERM handler set the stop Event in the main thread; a second signal, run inside the first
    handler while it held the Event's lock, waited for that lock for ever (a burst of Ctrl-C hung the daemon)."""
    code = textwrap.dedent("""
        import signal, threading
        from scopelite.edge import shutdown
        signal.signal(signal.SIGINT, signal.default_int_handler)  # (ignored in a job a script started with &)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop = threading.Event()
        undo = shutdown.install(stop)
        handler = signal.getsignal(signal.SIGINT)
        with stop._cond:  # the main thread inside stop.set() or stop.wait() when the next signal's handler runs
            handler(signal.SIGINT, None)
        hup = signal.getsignal(signal.SIGTERM)
        with stop._cond:
            hup(signal.SIGTERM, None)
        came = shutdown.defer(signal.SIGHUP)
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert came()
        undo()
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_stop_signal_just_before_the_end_still_leaves_the_rest_of_a_burst_ignored():
    """Helper 69: a signal the watcher had not read yet when the run ended put the default handler back, and the
    rest of the burst was a KeyboardInterrupt traceback at exit."""
    code = textwrap.dedent("""
        import os, signal, threading
        from scopelite.edge import shutdown
        for _ in range(50):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            stop = threading.Event()
            undo = shutdown.install(stop, grace=5)
            os.kill(os.getpid(), signal.SIGINT)
            undo()
            assert stop.wait(2) and signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_signals_ignored_at_the_start_stay_ignored_and_a_lost_wakeup_byte_still_stops():
    code = textwrap.dedent("""
        import os, signal, threading, time
        from scopelite.edge import shutdown
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # started with Ctrl-C ignored (`cmd &` in a script)
        stop = threading.Event()
        undo = shutdown.install(stop)
        os.kill(os.getpid(), signal.SIGINT)
        assert not stop.wait(0.6) and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        undo()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stop = threading.Event()
        undo = shutdown.install(stop, grace=5)
        signal.set_wakeup_fd(-1)  # the byte lost (a full pipe): the handler's note still stops the work
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(3)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_command_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path):
    (tmp_path / "slow_cli.py").write_text("import time\nprint('importing', flush=True)\ntime.sleep(1.5)\n"
                                          "def main():\n    return 0\n")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from scopelite.edge._entry import run; run('slow_cli')"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert p.stdout.readline().strip() == "importing"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0 and "interrupted" not in err, err[-1000:]


def test_a_burst_of_ctrl_c_ends_the_daemon(tmp_path):
    """Helper 67: SIGINT sent again and again for 0.3 s hung `watch` and `review` in 1-5 of 8 runs."""
    fields = tmp_path / "fields"
    fields.mkdir()
    cv2.imwrite(str(fields / "a.png"), np.full((64, 64, 3), 200, np.uint8))
    for _ in range(3):
        p = _start_watch(str(fields), "--mode", "field", "--loop", "--fps", "5")
        time.sleep(2.0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.3 and p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise AssertionError("watch hung after a burst of SIGINT")
        assert "Traceback" not in err, err[-2000:]


# ---------------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(base: str, p) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("daemon did not become healthy")


def test_http_head_real_url_and_unreadable_metric(corpus):
    port = _free_port()
    p = _start_watch(str(corpus["mixed"]), "--loop", "--fps", "20", "--http", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, p)
        for path in ("/", "/snapshot.jpg", "/metrics"):
            req = urllib.request.Request(base + path, method="HEAD")
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200 and int(r.headers["Content-Length"]) > 0 and r.read() == b""
        time.sleep(0.5)
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert int(next(x for x in metrics.splitlines() if x.startswith("scopelite_unreadable_total ")).split()[1]) >= 1
        # a client that sends nothing is cut off, and the daemon keeps serving
        idle = socket.create_connection(("127.0.0.1", port))
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert r.status == 200
        idle.settimeout(10)
        t0 = time.monotonic()
        assert idle.recv(10) == b"" and time.monotonic() - t0 < 8
        idle.close()
    finally:
        dt, _, err = _term_within(p, 2)
    assert f"serving http://127.0.0.1:{port}/" in err and "network interface" not in err, err[-2000:]
    assert dt < 2.0


def test_http_beyond_loopback_warns(corpus):
    port = _free_port()
    p = _start_watch(str(corpus["mixed"]), "--loop", "--fps", "20", "--http", f"0.0.0.0:{port}")
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", p)
    finally:
        _, _, err = _term_within(p, 2)
    warning = [x for x in err.splitlines() if x.startswith("warning:")]
    assert warning and "every network interface" in warning[0] and f"serving http://0.0.0.0:{port}/" not in err
    assert f":{port}/" in err.split("serving http://", 1)[1].splitlines()[0]  # this machine's address, the real port
    assert "changes need the token" in warning[0]


# ---------------------------------------------------------------------------------- fuzz

FUZZ_SEED = 16
FUZZ_BUDGET_S = 20.0


def _mutations(data: bytes, rng: np.random.Generator, n: int):
    """Truncations, flipped bytes and pure noise of ``data``, ``n`` in all."""
    for i in range(n):
        kind = i % 3
        if kind == 0:
            yield data[: int(rng.integers(0, max(len(data), 1)))]
        elif kind == 1:
            b = bytearray(data)
            for j in rng.integers(0, len(b), size=int(rng.integers(1, 16))):
                b[j] = int(rng.integers(0, 256))
            yield bytes(b)
        else:
            yield rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()


def test_fuzz_images_and_npz_files(tmp_path):
    """Random and truncated bytes as images (classify, watch) and as .npz files (the data loader)."""
    from scopelite.edge.errors import UserError
    from scopelite.train import data

    rng = np.random.default_rng(FUZZ_SEED)
    t_end = time.monotonic() + FUZZ_BUDGET_S / 2
    ok, buf = cv2.imencode(".png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, b in enumerate(_mutations(buf.tobytes(), rng, 24)):
        (folder / f"{i:03d}.{('png', 'jpg', 'bmp')[i % 3]}").write_bytes(b)
    r = invoke_cli("celledge", "classify", str(folder), "--json")
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr[-3000:]
    r = invoke_cli("celledge", "watch", str(folder))
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr[-3000:]
    npz = tmp_path / "good.npz"
    np.savez_compressed(npz, images=rng.integers(0, 255, (16, 8, 8, 3), dtype=np.uint8), labels=np.arange(16) % 8)
    for i, b in enumerate(_mutations(npz.read_bytes(), rng, 60)):
        if time.monotonic() > t_end:
            break
        f = tmp_path / f"f{i}.npz"
        f.write_bytes(b)
        try:
            data.load(str(f), 8)
        except UserError:
            pass


_MODEL_FUZZ = r"""
import json, sys, numpy as np
from pathlib import Path
from scopelite.edge.bundle import BundleError, load_sidecar, sha256_file
from scopelite.edge.classifier import make_classifier
from scopelite.edge.errors import UserError
folder, n = Path(sys.argv[1]), 0
for m in sorted(folder.glob("m*/model.tflite")):
    try:
        clf = make_classifier(m)
        clf.classify(np.zeros((1, clf.input_spec.height, clf.input_spec.width, 3), np.uint8))
    except UserError:
        pass
    n += 1
for s in sorted(folder.glob("s*/model.tflite")):
    try:
        load_sidecar(s)
    except BundleError:
        pass
    n += 1
print("fuzzed", n)
"""


def test_fuzz_models_and_sidecars(tmp_path):
    """Truncated and flipped model bytes (hash updated so the loader reaches them) and mangled sidecars.

    In a child process: a crash in native code must fail this test, not end the whole run."""
    from scopelite.edge.bundle import sha256_file

    rng = np.random.default_rng(FUZZ_SEED)
    model = default_model()
    sc = json.loads(model.with_suffix(".json").read_text())
    for i, b in enumerate(_mutations(model.read_bytes(), rng, 9)):
        m = tmp_path / f"m{i}" / "model.tflite"
        m.parent.mkdir()
        m.write_bytes(b)
        m.with_suffix(".json").write_text(json.dumps({**sc, "file": "model.tflite", "sha256": sha256_file(m)}))
    text = json.dumps(sc).encode()
    for i, b in enumerate(_mutations(text, rng, 30)):
        s = tmp_path / f"s{i}" / "model.tflite"
        s.parent.mkdir()
        shutil.copy(model, s)
        s.with_suffix(".json").write_bytes(b)
    values = [None, 0, -1, 1.5, "", "x", [], {}, True, 10**12]
    for i, key in enumerate(["labels", "input", "output", "runtimes", "format", "schema_version", "file"]):
        for j, v in enumerate(values):
            s = tmp_path / f"s-{key}-{j}" / "model.tflite"
            s.parent.mkdir()
            shutil.copy(model, s)
            s.with_suffix(".json").write_text(json.dumps({**sc, "file": "model.tflite", key: v}))
    r = subprocess.run([sys.executable, "-c", _MODEL_FUZZ, str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "fuzzed" in r.stdout, r.stderr[-3000:]


def test_error_after_a_progress_bar_starts_its_own_line(capfd):
    from tqdm import tqdm

    from scopelite.edge.errors import print_error

    bar = tqdm(total=10, desc="reading", file=sys.stderr)
    bar.update(3)
    print_error("cannot decode x.png")
    err = capfd.readouterr().err
    assert "\nError: cannot decode x.png\n" in err and not tqdm._instances


def test_classify_refuses_two_models(corpus):
    r = invoke_cli("celledge", "classify", str(corpus["model"]), "--model", str(corpus["model"]), str(corpus["img"]))
    assert_one_line_error(r, "two models", code=2)


def test_a_video_cut_short_is_read_as_far_as_it_goes_and_said_so(tmp_path):
    """A video file that ends before the frames its header announces (a copy interrupted): its frames are used,
    one warning says so, and FFmpeg's own lines ("[mjpeg @ 0x...] overread") stay out of the way; a file that is
    no video at all is one Error line, without the container parser's complaint."""
    from scopelite.train.synth import make_field

    whole = tmp_path / "scan.avi"
    w = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 240))
    for i in range(24):
        w.write(cv2.cvtColor(make_field(np.random.default_rng(i), 320, 240)[0], cv2.COLOR_RGB2BGR))
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    r = run_cli("celledge", "watch", str(cut), "--mode", "field")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]
    assert 0 < summary["frames"] < 24
    assert f"ended after {summary['frames']} of the 24 frames its header announces" in r.stderr
    assert " @ 0x" not in r.stderr, r.stderr
    r = run_cli("celledge", "watch", str(whole), "--mode", "field")
    assert r.returncode == 0 and "header announces" not in r.stderr
    not_video = tmp_path / "clip.mp4"
    not_video.write_bytes(whole.read_bytes()[:3000])  # an AVI's first bytes, named .mp4
    r = run_cli("celledge", "watch", str(not_video), "--exit-on-eof")
    assert_one_line_error(r, "cannot read", "as a video", code=2)


def test_a_camera_that_will_not_open_is_said_on_stderr_while_watch_keeps_trying():
    """watch on a missing camera retries (a daemon waits for its camera) and says so on stderr, not only in JSON
    lines; its summary names the camera."""
    p = _start_watch("/dev/video99", "--backoff-cap", "1")
    time.sleep(3.0)
    dt, out, err = _term_within(p, 2)
    assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "warning: /dev/video99:" in err and "trying again in" in err and "attempt 1;" in err, err
    assert json.loads(out.splitlines()[-1])["summary"]["source"] == "/dev/video99"


def test_an_image_bomb_is_refused_from_its_header(tmp_path):
    """A small PNG that unpacks to 5000x5000 px (75 MB; 30000 px: 5 GB in 9 s) is refused before it is decoded,
    with the same message as a large frame: OpenCV's pixel limit is set when scopelite.edge is first imported."""
    bomb = tmp_path / "bomb.png"
    cv2.imwrite(str(bomb), np.zeros((5000, 5000, 3), np.uint8))
    assert bomb.stat().st_size < 2_000_000
    from conftest import run_cli

    r = run_cli("celledge", "classify", str(bomb))
    assert r.returncode == 2 and "more than 4096x4096 px" in r.stderr, r.stderr[-1500:]  # said from the header
    from scopelite.edge.sources import MAX_SIDE  # the pixel limit set in edge/__init__.py is this side squared

    assert os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == str(MAX_SIDE * MAX_SIDE)


def test_sessions_are_refused_where_their_folders_would_be_read_as_images_or_classes(tmp_path):
    """--sessions in the folder of images watched (the session's crops became fields of the next run) or in a
    training set of class folders (a session folder became a ninth class); a port in use no longer leaves an
    empty open session behind (the next run on another folder took it over)."""
    import socket

    src = tmp_path / "fields"
    for i in range(2):
        _png(src / f"{i}.png", value=100 + 50 * i)
    for where in (src, src / "sessions"):
        assert_one_line_error(invoke_cli("celledge", "watch", str(src), "--mode", "field", "--sessions", str(where)),
                              "the folder of images watched", code=2)
    assert_one_line_error(invoke_cli("celledge", "watch", str(src), "--mode", "field", "--save-dir", str(src / "saved"),
                                     "--save-below", "1"), "--save-dir", "the folder of images watched", code=2)
    r = invoke_cli("celledge", "watch", str(src), "--mode", "field", "--save-dir", str(src / ".saved"), "--save-below",
                   "1", "--print-config")  # a hidden folder is never read as fields
    assert r.returncode == 0, r.stderr
    data = tmp_path / "pbc"
    for c in ("basophil", "neutrophil"):
        _png(data / c / "0.png")
    assert_one_line_error(invoke_cli("celledge", "watch", str(src), "--mode", "field", "--sessions", str(data)),
                          "class folders of images", code=2)
    assert sorted(p.name for p in src.iterdir()) == ["0.png", "1.png"]  # nothing written into the fields
    used = tmp_path / "used"  # a sessions folder in use (a session in it) beside two folders of images: its own
    (used / "20260101-000000-abcdef").mkdir(parents=True)
    (used / "20260101-000000-abcdef" / "state.json").write_text("{}")
    for c in ("saved", "other"):
        _png(used / c / "0.png")
    r = invoke_cli("celledge", "watch", str(src), "--mode", "field", "--sessions", str(used), "--print-config")
    assert r.returncode == 0, r.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        assert_one_line_error(invoke_cli("celledge", "watch", str(src), "--mode", "field", "--sessions",
                                         str(tmp_path / "sessions"), "--http", f"127.0.0.1:{port}"),
                              "cannot listen", code=2)
    finally:
        busy.close()
    assert not (tmp_path / "sessions").exists() or not [d for d in (tmp_path / "sessions").iterdir()
                                                          if (d / "state.json").exists()]
    r = invoke_cli("celledge", "watch", str(src), "--mode", "field", "--http", "127.0.0.1:99999", "--print-config")
    assert_one_line_error(r, "is not HOST:PORT", code=2)


def test_outputs_never_replace_an_input_a_device_or_a_link(tmp_path):
    """--out named like an image or video is refused (it was the source image, now JSON: a lost slide); a pipe or
    device is refused by calibrate (its file is renamed over the path: /dev/full became a JSON file); through a
    symlink the file it names is written and the link kept."""
    from conftest import invoke_cli

    from scopelite.edge.bundle import write_json_atomic
    from scopelite.train.synth import make_field

    src = tmp_path / "fields"
    src.mkdir()
    img = src / "0.jpg"
    cv2.imwrite(str(img), make_field(np.random.default_rng(0), 320, 240, n_cells=3)[0])
    before = img.read_bytes()
    for cmd in (("calibrate", str(src), "--out", str(img)), ("watch", str(src), "--mode", "field", "--out", str(img))):
        r = invoke_cli("celledge", *cmd)
        assert r.returncode == 2 and "named like an image or a video" in r.stderr, r.stderr[-800:]
    assert img.read_bytes() == before
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    r = invoke_cli("celledge", "calibrate", str(src), "--out", str(fifo))
    assert r.returncode == 2 and "is a device or pipe" in r.stderr and not fifo.is_file()
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json_atomic(link, {"a": 1})
    assert link.is_symlink() and json.loads(real.read_text()) == {"a": 1}
    with pytest.raises(OSError):
        write_json_atomic(fifo, {"a": 1})
    assert not fifo.is_file()


def test_out_onto_the_packaged_models_sidecar_is_refused(tmp_path, monkeypatch):
    """Without --model the run reads the packaged model: --out onto it or its sidecar is refused too."""
    import scopelite.edge.packaged as packaged

    model = tmp_path / "pkg" / default_model().name
    model.parent.mkdir()
    shutil.copy(default_model(), model)
    shutil.copy(default_model().with_suffix(".json"), model.with_suffix(".json"))
    monkeypatch.setattr(packaged, "default_model", lambda: model)
    before = model.with_suffix(".json").read_bytes()
    for out, what in ((model.with_suffix(".json"), "the model's sidecar"), (model, "the model")):
        r = invoke_cli("celledge", "watch", str(tmp_path), "--out", str(out))
        assert_one_line_error(r, f"is {what} this run reads", code=2)
    assert model.with_suffix(".json").read_bytes() == before


def test_a_run_folder_with_an_equals_sign_in_its_name_is_a_candidate_not_a_name(tmp_path):
    """celltrain choose runs/lr=1e-4: read as NAME=RUN, then refused as 'no such run folder 1e-4'."""
    from scopelite.train.cli import _parse_candidates

    run = tmp_path / "lr=1e-4"
    run.mkdir()
    assert _parse_candidates(None, None, (str(run), f"b={run}")) == {"lr=1e-4": str(run), "b": str(run)}


def test_choose_replaces_its_own_scores_of_any_size_and_age(tmp_path):
    """choose --out replaces only its own kind of file: an earlier one without a schema (before session 30), or one
    of megabytes (--ensembles of a dozen candidates), is its own; a config is not."""
    from scopelite.train.choose import SCHEMA, is_choice

    old, big, other = tmp_path / "old.json", tmp_path / "big.json", tmp_path / "other.json"
    old.write_text(json.dumps({"candidates": {}, "chosen": "a tta1"}))
    big.write_text(json.dumps({"schema": SCHEMA, "ensembles": {f"e{i}": "x" * 100 for i in range(20000)}}))
    other.write_text(json.dumps({"schema": "scopelite.site/1", "chosen": 1}))
    assert big.stat().st_size > 2**20
    assert is_choice(old) and is_choice(big) and not is_choice(other) and not is_choice(tmp_path / "none.json")


def test_an_edge_tpu_model_without_its_library_is_one_line_in_a_real_process(corpus):
    """The half-made delegate's __del__ printed "Exception ignored ... Traceback" after the Error line, at exit of a
    real process (in-process runs hide it in a pytest warning)."""
    r = run_cli("celledge", "classify", "--model", str(corpus["c"] / "tpu" / "m_edgetpu.tflite"), str(corpus["img"]))
    assert_one_line_error(r, "cannot load the Edge TPU delegate")
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def _two_class_run(tmp_path: Path) -> tuple[Path, Path]:
    """tmp_path/data (10 plain images of two classes) and tmp_path/run, a tiny one-epoch fit on it."""
    data = tmp_path / "data"
    for c, v in (("lymphocyte", 60), ("neutrophil", 180)):
        for i in range(10):
            _png(data / c / f"{c}{i}.png", (24, 24, 3), v + i)
    run = tmp_path / "run"
    r = run_cli("celltrain", "fit", "--data", str(data), "--out", str(run), "--arch", "tiny", "--image-size", "16",
                "--epochs", "1", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    return data, run


def test_outputs_inside_the_runs_own_dataset_are_refused(tmp_path):
    """cellcompress --out, bench --out and explain --out inside the data a run was trained on (or beside the class
    folder given): their files became a class of the next fit (bench.png a ninth class; an empty folder one with no
    images), exit 0."""
    data, run = _two_class_run(tmp_path)
    model = str(run / "model.keras")
    for args in (("cellcompress", model, "--int8", "--out", str(data / "int8")),
                 ("cellcompress", "bench", model, "--out", str(data / "bench"))):
        assert_one_line_error(invoke_cli(*args), "the data the run was trained on")
    assert_one_line_error(invoke_cli("celltrain", "explain", str(run), str(data / "lymphocyte"), "--out",
                                     str(data / "cams")), "a dataset of class folders")
    project = tmp_path  # run/ and data/ side by side: the usual project, not a dataset (explain's help example)
    r = invoke_cli("celltrain", "explain", str(run), str(data / "lymphocyte"), "--out", str(project / "cams"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = invoke_cli("celltrain", "explain", str(run), str(data / "lymphocyte" / "lymphocyte0.png"))
    assert r.returncode == 0 and (run / "explain").is_dir(), r.stderr[-2000:]
    assert sorted(p.name for p in data.iterdir()) == ["lymphocyte", "neutrophil"]


def test_a_diverged_model_is_refused_wherever_it_would_be_scored(tmp_path):
    """A model whose weights are all NaN was refused by convert and average but scored as a real one by evaluate
    (12.5 %, evaluation.json written), choose (named best), bench and explain ("score": NaN, invalid JSON), exit 0."""
    from scopelite.edge.bundle import sha256_file
    from scopelite.train._keras import keras

    data, run = _two_class_run(tmp_path)
    m = keras.models.load_model(run / "model.keras", compile=False)
    m.set_weights([np.full_like(w, np.nan) for w in m.get_weights()])
    m.save(run / "model.keras")
    sc = json.loads((run / "model.json").read_text())
    sc["sha256"] = sha256_file(run / "model.keras")  # as a diverged fit would have written it
    (run / "model.json").write_text(json.dumps(sc))
    for args in (("celltrain", "evaluate", str(run)),
                 ("celltrain", "choose", str(run), "--tta", "1", "--out", str(tmp_path / "choose.json")),
                 ("cellcompress", "bench", str(run / "model.keras"), "--out", str(tmp_path / "bench"), "--limit", "8"),
                 ("celltrain", "explain", str(run), str(data / "lymphocyte" / "lymphocyte0.png"), "--out",
                  str(tmp_path / "cams"))):
        assert_one_line_error(invoke_cli(*args), "weight arrays hold NaN or infinity (its training diverged)")
    assert not (run / "evaluation.json").exists() and not (tmp_path / "choose.json").exists()


def test_synth_stops_at_a_write_that_fails_and_leaves_no_manifest(tmp_path):
    """cv2.imwrite's False and VideoWriter's silent failures were not looked at: under a file-size limit (a full disk)
    synth said "wrote 16 crops" with none on disk, or recorded a video cut short as 96 frames, exit 0."""
    import resource

    def limit(kib):
        def pre():
            resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))  # Python ignores SIGXFSZ: EFBIG
        return pre

    for args, kib, said in ((("--fields", "0", "--no-video"), 4, "synth_00000.png: file too large"),
                            (("--fields", "0"), 200, "frames reached the disk")):
        out = tmp_path / f"s{kib}"
        r = run_cli("celltrain", "synth", str(out), "--per-class", "2", *args, preexec_fn=limit(kib))
        assert_one_line_error(r, said)
        assert not out.exists() or not list(out.iterdir()), list(out.rglob("*"))  # no manifest over missing files


def test_an_evaluation_whose_figure_fails_leaves_no_earlier_confusion_figure(tiny_run, tmp_path, monkeypatch):
    """evaluate writes its JSON first (its numbers survive a figure that fails); an earlier evaluation's
    confusion.png was then left beside the new evaluation.json, read as its figure (a hunt of session 37)."""
    import errno

    from matplotlib.figure import Figure

    from scopelite.train.evaluate import evaluate

    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run, ignore=shutil.ignore_patterns("int8"))
    (run / "confusion.png").write_bytes(b"an earlier evaluation's figure")

    def full(self, fname, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(OSError):
        evaluate(run / "model.keras", log=lambda _: None)
    assert (run / "evaluation.json").is_file() and not (run / "confusion.png").exists()


def test_a_failed_figure_write_leaves_no_temporary_file_and_no_earlier_benchs_figure(tmp_path, monkeypatch):
    """A full disk at a figure left a truncated hidden .confusion.tmp.png in the run folder, with an Error line
    naming no file; bench into an earlier bench's folder left its bench.png beside the new json, csv and md."""
    import errno

    from matplotlib.figure import Figure

    from scopelite.compress.bench import summarise, write_results
    from scopelite.edge.errors import describe_os_error
    from scopelite.train._plot import pyplot, save

    def full(self, fname, **kw):  # half the file goes out, then the disk is full
        Path(fname).write_bytes(b"\x89PNG" * 100)
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(OSError) as e:
        save(pyplot().figure(), tmp_path / "confusion.png")
    assert describe_os_error(e.value).startswith(f"file system error at {tmp_path / 'confusion.png'}: file too large")
    assert list(tmp_path.iterdir()) == []
    acc = {"m": {"clean": 0.9, "noise/1": 0.8}}
    summary, left_out = summarise(acc, ["noise"], [1])
    result = {"images": 8, "data": "d", "seed": 0, "suite": "scopelite", "tta": [1], "corruptions": ["noise"],
              "severities": [1], "reference": "m", "mCE_left_out": left_out, "models": summary, "accuracy": acc}
    (tmp_path / "bench.png").write_bytes(b"an earlier bench's figure")
    with pytest.raises(OSError):
        write_results(result, tmp_path, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.json", "bench.md"]
