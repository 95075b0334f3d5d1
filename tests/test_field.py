"""Field mode: the stain-relative detector finds the cells of generated fields, at any scale and colour."""
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


def test_detector_holds_at_another_magnification_and_another_palette():
    """A cyan background with blue-grey red cells (another lab's stain) at 1.4x: the same cells found."""
    rng = np.random.default_rng(9)
    tp = truth = dets = 0
    for _ in range(6):
        img, cells = make_field(rng, 640, 480, n_cells=5, scale=1.4)
        other = img[..., [1, 2, 0]]  # channels rotated: pink -> cyan-ish background, another stain
        found = field.detect(other)
        m = field.match(found, [tuple(c["center"]) for c in cells], radius=28)
        tp, dets, truth = tp + m["true_positives"], dets + m["detections"], truth + m["truth"]
    assert tp / truth >= 0.9 and tp / dets >= 0.9, (tp, dets, truth)


def test_detector_ignores_an_empty_smear_and_a_colour_cast():
    rng = np.random.default_rng(1)
    img, cells = make_field(rng, 320, 240, n_cells=0)
    assert cells == [] and field.detect(img) == []
    cast = np.clip(img.astype(int) + [0, -15, 20], 0, 255).astype(np.uint8)  # bluish white balance
    # an additive cast shifts optical density a little: at most a platelet-sized speck, never a white cell
    found = field.detect(cast)
    assert len(found) <= 1 and all(d.kind == "small" for d in found)
    dim = (img * 0.6).astype(np.uint8)  # a dimmer lamp: optical density does not change
    assert field.detect(dim) == []


def test_a_fixed_crop_size_implies_the_scale_and_auto_derives_it():
    cfg = field.FieldConfig(crop_size=360, model_rbc_px=18.0, input_px=96)
    assert cfg.rbc_px_for_crop() == 67.5 and cfg.crop_for(10.0) == 360
    auto = field.FieldConfig(crop_size=None, model_rbc_px=18.0, input_px=96)
    assert auto.rbc_px_for_crop() is None and auto.crop_for(67.5) == 360 and auto.crop_for(54.0) == 288


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
    fields = tmp_path / "fields"  # (--save-dir below goes beside it: inside, it is refused)
    fields.mkdir()
    for i in range(3):
        img, cells = make_field(rng, 640, 480, n_cells=6)
        truth += len(cells)
        cv2.imwrite(str(fields / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    r = run_cli("celledge", "watch", str(fields), "--model", str(tiny_run["tflite"]), "--mode", "field",
                "--min-score", "0.0")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    frames, summary = recs[:-1], recs[-1]["summary"]
    assert len(frames) == 3 and summary["mode"] == "field"
    found = sum(len(f["cells"]) for f in frames)
    diff = summary["differential"]  # a folder of separate fields: each cell of each image counted once
    counted = diff["white_total"] + diff["nrbc"] + diff["platelets"] + diff["uncertain"]["count"]
    assert abs(found - truth) <= 1 and counted == found and not summary["tracking"]["on"]
    cell = frames[0]["cells"][0]
    scale = frames[0]["scale"]
    assert {"label", "score", "box", "center", "kind"} <= set(cell)
    assert scale["source"] == "red cells" and cell["box"][2] - cell["box"][0] == scale["crop"]  # the square cropped
    assert 80 <= scale["crop"] <= 112  # generated fields are drawn at the generated crops' scale
    r = run_cli("celledge", "watch", str(fields), "--model", str(tiny_run["tflite"]), "--mode", "field",
                "--min-score", "1.0")
    last = json.loads(r.stdout.splitlines()[-1])["summary"]["differential"]
    assert last["uncertain"]["count"] == found and last["white_total"] == 0  # nothing is ever that sure
    r = run_cli("celledge", "watch", str(fields), "--model", str(tiny_run["tflite"]), "--mode", "field",
                "--save-dir", str(tmp_path / "saved"), "--save-below", "1.0", "--max-frames", "2")
    assert r.returncode == 0 and len(list((tmp_path / "saved").glob("*.jpg"))) == 2
    r = run_cli("celledge", "watch", str(fields), "--model", str(tiny_run["tflite"]), "--save-dir",
                str(tmp_path / "s2"), "--save-classes", "unicorn")
    assert r.returncode == 2 and "not labels of this model" in r.stderr


def test_a_large_frame_is_searched_at_half_size_and_cropped_at_full():
    from scopelite.edge.bundle import InputSpec
    from scopelite.edge.watch import FieldScale, classify_field

    class Fake:
        labels = ("basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte",
                  "neutrophil", "platelet")
        input_spec = InputSpec(32, 32)

        def classify(self, batch):
            return np.tile(np.eye(8)[6], (len(batch), 1))

    rng = np.random.default_rng(4)
    img, cells = make_field(rng, 1920, 1080, n_cells=10, scale=2.0)
    assert field.shrink_for_search(img)[1] == 2 and field.shrink_for_search(img[:720, :1280])[1] == 1
    cfg = field.FieldConfig(model_rbc_px=24.0, input_px=96)
    found, info = classify_field(img, Fake(), cfg, 0.0, scale=FieldScale(cfg))
    assert abs(info["rbc_px"] / 48.0 - 1) < 0.15  # full-frame px: generated red cells are ~24 px x scale 2
    m = field.match([field.Detection(c["center"][0], c["center"][1], (0, 0, 0, 0), 1) for c in found],
                    [tuple(c["center"]) for c in cells], radius=40)
    assert m["recall"] >= 0.9 and m["precision"] >= 0.9, m
    assert all(c["box"][2] - c["box"][0] == info["crop"] for c in found)


def test_crop_at_takes_any_box_with_reflected_borders():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 70, 3), np.uint8)
    pad = 30  # cv2's BORDER_REFLECT is numpy's "symmetric": the edge pixel repeated, then mirrored
    ref = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    for box in [(10, 5, 40, 35), (-12, -7, 20, 25), (55, 30, 85, 60), (-25, -25, 95, 75)]:
        x0, y0, x1, y1 = box
        got = field.crop_at(img, box)
        assert got.shape == (y1 - y0, x1 - x0, 3)
        assert np.array_equal(got, ref[y0 + pad : y1 + pad, x0 + pad : x1 + pad]), box
    det = field.Detection(x=3.0, y=60.0, box=(0, 55, 6, 65), area=36)  # field.crop is crop_at of crop_box
    big = rng.integers(0, 255, (80, 80, 3), np.uint8)
    assert np.array_equal(field.crop(big, det, 31), field.crop_at(big, field.crop_box(det, 31)))
