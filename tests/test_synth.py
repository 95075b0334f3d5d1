import json

import cv2
import numpy as np
import pytest

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.train import synth


def test_crops_are_deterministic_and_balanced():
    a, la = synth.make_crops(3, size=48, seed=7)
    b, lb = synth.make_crops(3, size=48, seed=7)
    c, _ = synth.make_crops(3, size=48, seed=8)
    assert a.shape == (24, 48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert np.bincount(la).tolist() == [3] * len(CLASS_NAMES)


def test_classes_differ_in_size_and_colour():
    imgs, labels = synth.make_crops(20, size=96, seed=0)
    dark = (imgs.mean(axis=3) < 120).reshape(len(imgs), -1).mean(axis=1)  # nucleus/granule area
    per = {n: dark[labels == i].mean() for i, n in enumerate(CLASS_NAMES)}
    assert per["platelet"] < per["lymphocyte"]          # platelets are tiny fragments
    assert per["basophil"] > per["neutrophil"]          # dense dark granules
    red = imgs[..., 0].astype(int) - imgs[..., 2].astype(int)
    centre = red[:, 36:60, 36:60].reshape(len(imgs), -1).mean(axis=1)
    assert centre[labels == 1].mean() > centre[labels == 4].mean() + 20  # orange eosinophil granules


def test_field_cells_are_inside_and_apart():
    rng = np.random.default_rng(3)
    img, cells = synth.make_field(rng, 640, 480, n_cells=8)
    assert img.shape == (480, 640, 3)
    assert len(cells) == 8
    for c in cells:
        x, y = c["center"]
        assert 0 < x < 640 and 0 < y < 480 and c["label"] in CLASS_NAMES
    centers = np.array([c["center"] for c in cells])
    d = np.linalg.norm(centers[:, None] - centers[None], axis=-1) + np.eye(len(cells)) * 1e9
    assert d.min() > 60


def test_write_dataset_layout(synth_dir):
    m = json.loads((synth_dir / "manifest.json").read_text())
    assert m["synthetic"] is True
    for name in CLASS_NAMES:
        assert len(list((synth_dir / "crops" / name).glob("*.png"))) == 3
    truth = json.loads((synth_dir / "microscope_truth.json").read_text())
    cap = cv2.VideoCapture(str(synth_dir / "microscope.avi"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == len(truth) == m["video"]["frames"] > 0
    fields = json.loads((synth_dir / "fields" / "truth.json").read_text())
    assert len(fields) == 2 and all((synth_dir / "fields" / f["file"]).is_file() for f in fields)


def test_an_interrupted_synth_leaves_no_half_made_dataset(tmp_path, monkeypatch):
    """Ctrl-C half-way left crops/ and fields without manifest.json: the next fit read them as real data."""
    from conftest import invoke_cli
    from scopelite.train import synth

    real = synth.write_dataset

    def cut(out, *a, **kw):
        from pathlib import Path

        (Path(out) / "crops" / "basophil").mkdir(parents=True)
        (Path(out) / "crops" / "basophil" / "0.png").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_dataset", cut)
    r = invoke_cli("celltrain", "synth", str(tmp_path / "s"), "--per-class", "1", "--fields", "0", "--no-video")
    assert r.returncode != 0 and "interrupted" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing at all: neither s nor a partial folder
    monkeypatch.setattr(synth, "write_dataset", real)
    r = invoke_cli("celltrain", "synth", str(tmp_path / "s"), "--per-class", "1", "--fields", "0", "--no-video")
    assert r.returncode == 0 and (tmp_path / "s" / "manifest.json").is_file()
    monkeypatch.setattr(synth, "write_dataset", cut)  # made again and cut: the whole one before stays
    invoke_cli("celltrain", "synth", str(tmp_path / "s"), "--per-class", "1", "--fields", "0", "--no-video")
    assert (tmp_path / "s" / "manifest.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_synth_into_the_working_folder(tmp_path, monkeypatch):
    """celltrain synth . (an empty folder the user stands in) wrote there; then it ended in a traceback."""
    from conftest import invoke_cli

    import os
    import stat

    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for n in (1, 2):  # made, then made again over its own output
        r = invoke_cli("celltrain", "synth", ".", "--per-class", str(n), "--fields", "0", "--no-video")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-1500:]
        assert len(list((tmp_path / "here" / "crops" / "monocyte").iterdir())) == n
        assert "celltrain fit --data crops " in r.stdout  # the class folders are in crops/, not here
        (tmp_path / "here" / "notes.txt").write_text("mine")  # a user's own file in it: made again, it stays
    assert (tmp_path / "here" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]  # nothing left beside it
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["crops", "fields", "manifest.json", "notes.txt"]
    mask = os.umask(0o022)
    try:  # a new folder gets the mode mkdir gives (mkdtemp's 0700 kept other accounts out)
        r = invoke_cli("celltrain", "synth", str(tmp_path / "new"), "--per-class", "1", "--fields", "0", "--no-video")
    finally:
        os.umask(mask)
    assert r.returncode == 0 and stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755


def test_an_existing_folder_is_filled_from_a_work_folder_on_its_own_disk(tmp_path):
    """A USB stick's root (a mount point) given as the folder: the work folder was made beside it, on the other
    disk; the old contents were removed, the move failed (cross-device) and the new copy was left hidden there."""
    from scopelite.edge.outputs import folder_in_place

    dest = tmp_path / "stick"
    dest.mkdir()
    (dest / "crops").mkdir()
    with folder_in_place(dest, owned=lambda e: e.name == "crops") as tmp:
        assert tmp.parent == dest and tmp.name.startswith(".scopelite-partial-")
        (tmp / "crops").mkdir()
        (tmp / "crops" / "new.png").write_bytes(b"x")
    assert sorted(p.name for p in dest.rglob("*")) == ["crops", "new.png"]
    with pytest.raises(KeyboardInterrupt):  # cut while filling: nothing changes, nothing is left
        with folder_in_place(dest, owned=lambda e: e.name == "crops") as tmp:
            (tmp / "crops").mkdir()
            raise KeyboardInterrupt
    assert sorted(p.name for p in dest.rglob("*")) == ["crops", "new.png"]


def test_synth_ended_by_sigterm_leaves_no_hidden_partial_folder(tmp_path):
    """kill / timeout / a scheduler's SIGTERM: a hidden .scopelite-partial-* folder (gigabytes in a long run) was left
    beside OUT, and a rerun did not remove it. Now it ends as Ctrl-C does."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = Path(sys.executable).parent / "celltrain"
    p = subprocess.Popen([str(exe), "synth", str(tmp_path / "sy"), "--per-class", "1", "--fields", "5000",
                          "--no-video"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".scopelite-partial-*/fields/*")):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Error: interrupted" in err and "Traceback" not in err, err[-2000:]
    assert not list(tmp_path.glob(".scopelite-*")) and not (tmp_path / "sy").exists()
