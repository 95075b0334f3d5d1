"""Field mode: the classical detector finds the cells of generated fields."""
import numpy as np

from scopelite.edge import field
from scopelite.train.synth import make_field


def test_detector_recall_and_precision_on_generated_fields():
    rng = np.random.default_rng(123)
    tp = dets = truth = 0
    for _ in range(25):
        img, cells = make_field(rng, 640, 480, n_cells=int(rng.integers(4, 13)))
        found = field.detect(img)
        m = field.match(found, [tuple(c["center"]) for c in cells], radius=20)
        tp, dets, truth = tp + m["true_positives"], dets + m["detections"], truth + m["truth"]
    assert tp / truth >= 0.95, (tp, truth)
    assert tp / dets >= 0.95, (tp, dets)


def test_detector_ignores_an_empty_smear_and_a_colour_cast():
    rng = np.random.default_rng(1)
    img, cells = make_field(rng, 320, 240, n_cells=0)
    assert cells == [] and field.detect(img) == []
    cast = np.clip(img.astype(int) + [0, -15, 20], 0, 255).astype(np.uint8)  # bluish white balance
    assert field.detect(cast) == []


def test_crop_is_centred_and_reflects_at_the_border():
    img = np.zeros((100, 100, 3), np.uint8)
    img[0:10, 0:10] = 200
    det = field.Detection(x=5, y=5, box=(0, 0, 10, 10), area=100)
    c = field.crop(img, det, 32)
    assert c.shape == (32, 32, 3)
    assert c[16, 16].tolist() == [200, 200, 200] and c[11, 11].tolist() == [200, 200, 200]


def test_watch_field_mode_counts_cells(tiny_run, tmp_path):
    import json

    import cv2

    from conftest import run_cli

    rng = np.random.default_rng(7)
    truth = 0
    for i in range(3):
        img, cells = make_field(rng, 640, 480, n_cells=6)
        truth += len(cells)
        cv2.imwrite(str(tmp_path / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    r = run_cli("celledge", "watch", str(tmp_path), "--model", str(tiny_run["tflite"]), "--mode", "field",
                "--min-score", "0.0")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    frames, summary = recs[:-1], recs[-1]["summary"]
    assert len(frames) == 3 and summary["mode"] == "field"
    found = sum(len(f["cells"]) for f in frames)
    assert abs(found - truth) <= 1 and summary["tally"]["total"] == found
    cell = frames[0]["cells"][0]
    assert {"label", "score", "box", "center"} <= set(cell) and cell["box"][2] - cell["box"][0] == 96
    r = run_cli("celledge", "watch", str(tmp_path), "--model", str(tiny_run["tflite"]), "--mode", "field",
                "--min-score", "1.0")
    last = json.loads(r.stdout.splitlines()[-1])["summary"]["tally"]["counts"]
    assert last["uncertain"] == found  # nothing is ever that sure
    r = run_cli("celledge", "watch", str(tmp_path), "--model", str(tiny_run["tflite"]), "--mode", "field",
                "--save-dir", str(tmp_path / "saved"), "--save-below", "1.0", "--max-frames", "2")
    assert r.returncode == 0 and len(list((tmp_path / "saved").glob("*.jpg"))) == 2
    r = run_cli("celledge", "watch", str(tmp_path), "--model", str(tiny_run["tflite"]), "--save-dir",
                str(tmp_path / "s2"), "--save-classes", "unicorn")
    assert r.returncode == 2 and "not labels of this model" in r.stderr
