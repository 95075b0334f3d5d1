"""celledge classify on single-cell images framed unlike the training crops: cut to the training framing."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import invoke_cli
from scopelite.edge import crop_scale
from scopelite.train.synth import CLASS_NAMES, render_scene

MODEL_RBC, INPUT = 18.0, 96  # the shipped model's framing: 96 / 18 = 5.33 red cells across
RBC = 24.0  # generated red cells are ~24 px across at scale 1 (train/synth.py)


def _cell_in_field(s: float, seed: int = 0, cls: str = "neutrophil") -> tuple[np.ndarray, tuple[int, int]]:
    """A generated 640x480-ish field (times s) with one white cell at its centre, and that centre."""
    rng = np.random.default_rng(seed)
    w, h = int(640 * s), int(480 * s)
    img = render_scene(h, w, [(CLASS_NAMES.index(cls), w / 2, h / 2)], s, rng,
                       int(w * h / (26 * 26 * s * s) * 0.55))
    return img, (w // 2, h // 2)


def _framed(s: float, k: float, seed: int = 0, cls: str = "neutrophil") -> np.ndarray:
    """The cell in a square of k red-cell diameters."""
    img, (x, y) = _cell_in_field(s, seed, cls)
    half = int(round(k * RBC * s)) // 2
    return np.ascontiguousarray(img[y - half:y + half, x - half:x + half])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wide_crop_is_cut_to_the_training_framing_by_its_red_cells(seed):
    crop = _framed(1.0, 12.0, seed)  # 288 px, 12 red cells across
    found = crop_scale.measure(crop, MODEL_RBC, INPUT)
    assert found.source == "red cells"
    assert abs(found.rbc_px / RBC - 1) < 0.15, found
    view, again = crop_scale.rescale(crop, MODEL_RBC, INPUT)
    assert again == found and view.shape[:2] == (found.side, found.side)
    assert abs(found.side / (INPUT / MODEL_RBC * RBC) - 1) < 0.15  # ~128 px: 5.33 red cells across


def test_a_crop_at_the_training_framing_is_left_as_given():
    crop = _framed(2.0, INPUT / MODEL_RBC)  # 256 px, 5.33 red cells across
    view, found = crop_scale.rescale(crop, MODEL_RBC, INPUT)
    assert found.source == "as given" and view is crop
    assert found.rbc_px is not None and abs(found.rbc_px / (2 * RBC) - 1) < 0.15  # measured, found in the band
    assert found.record()["crop"] == 256


@pytest.mark.parametrize("seed", [0, 1])  # seed 2's nucleus covers most cell pixels: stain_layers takes its
def test_a_tight_crop_is_widened_by_its_white_cell(seed):  # colour for the red cells' and finds no white cell
    """A lymphocyte that fills a 154 px crop (1.6 red cells across, the red cells cut off): its size sets the
    scale. Generated white cells are smaller beside their red cells than real ones (WHITE_TO_RED is PBC's), so
    the scale it gives is within 0.5-1.2 x the true one here, not PBC's 10 %."""
    crop = _framed(4.0, 1.6, seed, "lymphocyte")
    view, found = crop_scale.rescale(crop, MODEL_RBC, INPUT)
    assert found.source == "white cell"
    assert 0.5 < found.rbc_px / (RBC * 4.0) < 1.2, found
    assert found.side > 2 * crop.shape[0] and view.shape[:2] == (2 * INPUT, 2 * INPUT)  # built at 2x the input
    inner = int(round(2 * INPUT * crop.shape[0] / found.side))  # the crop itself, shrunk, in the middle
    o = (2 * INPUT - inner) // 2
    small = cv2.resize(crop, (inner, inner), interpolation=cv2.INTER_AREA)
    assert np.abs(view[o + 2:o + inner - 2, o + 2:o + inner - 2].astype(int) - small[2:-2, 2:-2]).mean() < 6


def test_an_image_the_size_of_the_model_input_is_taken_as_already_cut():
    crop = cv2.resize(_framed(1.0, 12.0), (INPUT, INPUT), interpolation=cv2.INTER_AREA)  # framed wide, but 96 px
    view, found = crop_scale.rescale(crop, MODEL_RBC, INPUT)
    assert found == crop_scale.CropScale("as given", None, INPUT) and view is crop


def test_an_image_without_cells_is_left_as_given():
    blank = np.full((300, 300, 3), 225, np.uint8)
    view, found = crop_scale.rescale(blank, MODEL_RBC, INPUT)
    assert found.source == "as given" and view is blank


@pytest.mark.parametrize("side", [300, 500])
def test_noise_is_not_one_large_white_cell(side):
    """Colour noise merges into one stained piece as large as the image: not a white cell to widen by
    (it made a 500 px image a 1917 px square, and a 6000x4000 one 21 GB)."""
    noise = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    view, found = crop_scale.rescale(noise, MODEL_RBC, INPUT)
    assert found.source != "white cell"
    assert found.side <= crop_scale.MAX_WIDEN * side and view.shape[0] <= max(side, 2 * INPUT)


def test_a_grey_image_is_left_as_given():
    grey = cv2.cvtColor(cv2.cvtColor(_framed(1.0, 12.0), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    view, found = crop_scale.rescale(grey, MODEL_RBC, INPUT)
    assert found.source == "as given" and found.rbc_px is None and view is grey


def test_a_widened_large_image_is_built_at_twice_the_model_input():
    crop = cv2.resize(_framed(4.0, 1.6, 0, "lymphocyte"), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    view, found = crop_scale.rescale(crop, MODEL_RBC, INPUT)  # 616 px, widened to ~1800
    assert found.source == "white cell" and found.side > 2 * crop.shape[0]
    assert view.shape[:2] == (2 * INPUT, 2 * INPUT)


def test_only_the_centred_square_is_measured(monkeypatch):
    """A 20000x150 strip costs what its 150 px centred square does (it was upsampled whole: 2.3 GB)."""
    seen = []
    real = crop_scale.stain_layers
    monkeypatch.setattr(crop_scale, "stain_layers", lambda v: seen.append(v.shape) or real(v))
    strip = np.tile(_framed(1.0, 6.25), (1, 133, 1))[:, :20000]  # 150 px high
    crop_scale.measure(strip, MODEL_RBC, INPUT)
    assert seen and all(max(s[:2]) <= crop_scale.MEASURE_PX + 150 for s in seen), seen


def test_classify_reports_how_each_image_was_framed(tmp_path):
    wide, small = tmp_path / "wide.png", tmp_path / "small.png"
    cv2.imwrite(str(wide), cv2.cvtColor(_framed(1.0, 12.0), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(small), cv2.cvtColor(_framed(0.75, 5.33), cv2.COLOR_RGB2BGR))  # 96 px
    r = invoke_cli("celledge", "classify", str(wide), str(small), "--json")
    assert r.returncode == 0, r.stderr
    lines = {json.loads(x)["path"]: json.loads(x) for x in r.stdout.splitlines()}
    assert lines[str(wide)]["scale"]["source"] == "red cells"
    assert abs(lines[str(wide)]["scale"]["crop"] / 128 - 1) < 0.15
    assert lines[str(small)]["scale"] == {"source": "as given", "rbc_px": None, "crop": 96}
    r = invoke_cli("celledge", "classify", str(wide), "--json", "--rescale", "none")
    side = min(cv2.imread(str(wide)).shape[:2])  # as given, and the line says so (as --help promises)
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["scale"] == {"source": "as given",
                                                                                   "rbc_px": None, "crop": side}


def test_classify_shared_gives_a_collection_one_framing(tmp_path, monkeypatch):
    """Four wide crops and one whose red cells cannot be read (grey): all five cut at the median framing of
    the four; a 96 px image among them stays as it is. Each image is read once (the sample measured is kept)."""
    from scopelite.edge import sources

    reads = []
    real = sources.read_image_rgb
    monkeypatch.setattr(sources, "read_image_rgb", lambda p: reads.append(str(p)) or real(p))
    for seed in range(4):
        cv2.imwrite(str(tmp_path / f"w{seed}.png"), cv2.cvtColor(_framed(1.0, 12.0, seed), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "grey.png"), cv2.cvtColor(_framed(1.0, 12.0, 9), cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(tmp_path / "small.png"), cv2.cvtColor(_framed(0.75, 5.33), cv2.COLOR_RGB2BGR))
    r = invoke_cli("celledge", "classify", str(tmp_path), "--json", "--rescale", "shared")
    assert r.returncode == 0, r.stderr
    scale = {Path(json.loads(x)["path"]).stem: json.loads(x)["scale"] for x in r.stdout.splitlines()}
    wide = [scale[k] for k in ("w0", "w1", "w2", "w3", "grey")]
    assert all(s["source"] == "shared" and s["readings"] == 4 for s in wide), scale
    assert len({s["crop"] for s in wide}) == 1 and abs(wide[0]["crop"] / 128 - 1) < 0.15
    assert scale["small"] == {"source": "as given", "crop": 96, "readings": 4}
    assert sorted(reads) == sorted(str(p) for p in tmp_path.glob("*.png"))


def test_a_large_image_is_measured_shrunk_and_reframed_in_its_own_pixels(monkeypatch):
    seen = []
    real = crop_scale.stain_layers
    monkeypatch.setattr(crop_scale, "stain_layers", lambda v: seen.append(v.shape) or real(v))
    crop = cv2.resize(_framed(1.0, 12.0), None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)  # 2304 px, rbc ~192
    found = crop_scale.measure(crop, MODEL_RBC, INPUT)
    assert found.source == "red cells" and abs(found.rbc_px / (8 * RBC) - 1) < 0.15, found
    assert seen == [(crop_scale.SEARCH_SIDE, crop_scale.SEARCH_SIDE, 3)]


def test_crop_mode_holds_one_framing_for_the_stream():
    """Views framed 12 red cells across: one framing for all, the median of the views measured so far; the
    first 5 views are all measured, then every 25th, the last 15 kept. A view with nothing to measure does
    not vote."""
    stream = crop_scale.StreamFraming(MODEL_RBC, INPUT)
    views = [_framed(1.0, 12.0, seed) for seed in range(3)]
    records = [stream.view(views[i % 3])[1] for i in range(400)]
    assert all(r["source"] == "stream" for r in records)
    assert all(abs(r["crop"] / 128 - 1) < 0.15 for r in records), {r["crop"] for r in records}
    measured = [r["readings"] for r in records]
    assert measured[:6] == [1, 2, 3, 4, 5, 5] and measured[24] == 6 and measured[-1] == 15
    at_training = crop_scale.StreamFraming(MODEL_RBC, INPUT)
    view = _framed(2.0, INPUT / MODEL_RBC)
    assert at_training.view(view) == (view, {"source": "as given", "crop": 256, "readings": 1})
    blanks = crop_scale.StreamFraming(MODEL_RBC, INPUT)
    blank = np.full((288, 288, 3), 225, np.uint8)
    assert [blanks.view(blank)[1]["readings"] for _ in range(3)] == [0, 0, 0]
    out, rec = blanks.view(_framed(1.0, 12.0))  # the first view with red cells decides
    assert rec["source"] == "stream" and rec["readings"] == 1 and abs(out.shape[0] / 128 - 1) < 0.15


def test_watch_crop_mode_reframes_and_field_mode_refuses_no_rescale(tmp_path):
    folder = tmp_path / "views"
    folder.mkdir()
    for seed in range(3):
        cv2.imwrite(str(folder / f"v{seed}.png"), cv2.cvtColor(_framed(1.0, 12.0, seed), cv2.COLOR_RGB2BGR))
    r = invoke_cli("celledge", "watch", str(folder))
    assert r.returncode == 0, r.stderr
    frames = [json.loads(x) for x in r.stdout.splitlines() if '"frame"' in x]
    assert len(frames) == 3 and all(f["scale"]["source"] == "stream" for f in frames)
    r = invoke_cli("celledge", "watch", str(folder), "--no-rescale")
    assert r.returncode == 0 and all("scale" not in json.loads(x) for x in r.stdout.splitlines() if '"frame"' in x)
    r = invoke_cli("celledge", "watch", str(folder), "--mode", "field", "--no-rescale")
    assert r.returncode == 2 and "Error: --no-rescale is for crop mode" in r.stderr


def test_crop_mode_never_reframes_a_crop_already_cut():
    """After wide views have set the stream's framing, a 96 px crop (cut for the model) stays as it is."""
    stream = crop_scale.StreamFraming(MODEL_RBC, INPUT)
    for seed in range(5):
        stream.view(_framed(1.0, 12.0, seed))
    small = _framed(0.75, 5.33)
    assert stream.view(small) == (small, {"source": "as given", "crop": 96, "readings": 5})


def test_classify_shared_warns_when_nothing_is_read_or_framings_differ(tmp_path):
    none, mixed = tmp_path / "none", tmp_path / "mixed"
    none.mkdir(), mixed.mkdir()
    for seed in range(3):
        cv2.imwrite(str(none / f"b{seed}.png"), np.full((300, 300, 3), 225, np.uint8))
        cv2.imwrite(str(mixed / f"w{seed}.png"), cv2.cvtColor(_framed(1.0, 12.0, seed), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(mixed / f"t{seed}.png"), cv2.cvtColor(_framed(2.0, INPUT / MODEL_RBC, seed), cv2.COLOR_RGB2BGR))
    r = invoke_cli("celledge", "classify", str(none), "--rescale", "shared")
    assert r.returncode == 0 and "none of the 3 images measured" in r.stderr
    r = invoke_cli("celledge", "classify", str(mixed), "--rescale", "shared")
    assert r.returncode == 0 and "not framed alike" in r.stderr, r.stderr
    r = invoke_cli("celledge", "classify", str(mixed / "w0.png"), str(mixed / "w1.png"), "--rescale", "shared")
    assert r.returncode == 0 and "not framed alike" not in r.stderr and "none of" not in r.stderr


def test_the_snapshot_draws_the_square_crop_mode_classified():
    from scopelite.edge.httpd import Status

    status = Status(["neutrophil"])
    frame = np.full((480, 640, 3), 230, np.uint8)
    status.update(frame, {"frame": 0, "label": "neutrophil", "score": 0.9, "scale": {"source": "stream", "crop": 200}})
    img = cv2.imdecode(np.frombuffer(status.snapshot_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    green = (img[..., 1].astype(int) - img[..., 2] > 60) & (img[..., 1].astype(int) - img[..., 0] > 60)
    ys, xs = np.nonzero(green[100:, :])  # the box, below the label text
    assert abs(xs.min() - 220) <= 3 and abs(xs.max() - 419) <= 3, (xs.min(), xs.max())  # 200 px, centred


def test_the_snapshot_keeps_a_label_whole_when_its_box_is_cut_by_the_frame_edge():
    """A platelet's box at the left edge (x0 = -4): its label "platelet 0.36" was drawn from x = -1 and read
    "atelet 0.36" on the lab page. The label is drawn inside the frame."""
    from scopelite.edge.httpd import Status

    status = Status(["platelet"])
    frame = np.full((240, 320, 3), 230, np.uint8)
    cell = {"box": [-4, 60, 40, 104], "label": "platelet", "score": 0.36}
    status.update(frame, {"frame": 0, "cells": [cell, {**cell, "box": [290, 60, 334, 104]}]})
    img = cv2.imdecode(np.frombuffer(status.snapshot_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    ink = (img[30:58, :, 1].astype(int) < 160)  # the dark green text above the boxes (y 55 - 5 and up)
    cols = np.nonzero(ink.any(0))[0]
    assert cols.min() >= 2 and cols.max() <= 317, (cols.min(), cols.max())
    (tw, _), _ = cv2.getTextSize("platelet 0.36", cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    left = cols[cols < 160]
    assert left.max() - left.min() >= tw - 4  # the whole label, not its tail


@pytest.mark.parametrize("seed", [0, 1])
def test_red_cells_under_the_floor_are_no_reading(seed, monkeypatch):
    """Pieces under MIN_RBC_PX across (an eosinophil's granules read as red cells in a tight crop) give no reading:
    the crop is left as given, not cut to a square of a few granules (without the floor: a 27-36 px square)."""
    rng = np.random.default_rng(seed)
    side, s = 160, 0.2  # red cells ~5 px: 33 across
    img = render_scene(side, side, [(CLASS_NAMES.index("eosinophil"), side / 2, side / 2)], s, rng,
                       int(side * side / (26 * 26 * s * s) * 0.55))
    found = crop_scale.measure(img, MODEL_RBC, INPUT)
    assert found.source == "as given" and found.rbc_px is None and found.side == side
    monkeypatch.setattr(crop_scale, "MIN_RBC_PX", 0.0)
    without = crop_scale.measure(img, MODEL_RBC, INPUT)
    assert without.source == "red cells" and without.rbc_px < 8 and without.side < 40  # what the floor prevents
    small = _framed(0.55, 16.0, seed)  # red cells ~13 px: still a ruler
    monkeypatch.undo()
    found = crop_scale.measure(small, MODEL_RBC, INPUT)
    assert found.source == "red cells" and abs(found.rbc_px / (0.55 * RBC) - 1) < 0.2, found


def test_crops_celledge_export_wrote_keep_the_scale_it_recorded(tmp_path):
    """A second-site trial: classify re-measured 6 of 77 exported 256 px crops, already cut at the training scale
    (export.json records rbc_fraction 0.1875), and re-cut them to 194-464 px (one neutrophil became a platelet).
    Crops an export.json records are framed from its record: as they are at the model's framing, else to it."""
    rng = np.random.default_rng(5)
    out = tmp_path / "my_cells"
    (out / "neutrophil").mkdir(parents=True)
    files = []
    for i in range(2):
        img = render_scene(256, 256, [(CLASS_NAMES.index("neutrophil"), 128, 128)], 1.0, rng, 12)
        cv2.imwrite(str(out / "neutrophil" / f"s_{i}.png"), img[..., ::-1])
        files.append({"file": f"neutrophil/s_{i}.png", "label": "neutrophil", "rbc_fraction": [0.1875, 0.1][i]})
    (out / "export.json").write_text(json.dumps({"files": files}))
    r = invoke_cli("celledge", "classify", str(out), "--json")
    assert r.returncode == 0, r.stderr
    scales = {Path(x["path"]).name: x["scale"] for x in map(json.loads, r.stdout.splitlines())}
    assert scales["s_0.png"] == {"source": "export.json", "rbc_px": 48.0, "crop": 256}  # the model's framing
    assert scales["s_1.png"] == {"source": "export.json", "rbc_px": 25.6, "crop": 137}  # 25.6 px cells: zoom in
    r = invoke_cli("celledge", "classify", str(out / "neutrophil" / "s_0.png"), "--json", "--rescale", "none")
    assert json.loads(r.stdout.splitlines()[0])["scale"]["source"] == "as given"  # asked for: as given


def test_exported_crops_given_rescale_shared_keep_their_record_and_no_framing_is_read(tmp_path):
    """--rescale shared, the docs' advice for crops cut alike, on celledge export's crops (cut each at its own
    recorded scale): a walk-through was told "not framed alike ... --rescale each measures each image alone". Crops an
    export.json records keep their record, and no framing is read from them."""
    rng = np.random.default_rng(5)
    out = tmp_path / "my_cells"
    (out / "neutrophil").mkdir(parents=True)
    files = []
    for i, (s, fraction) in enumerate([(1.0, 0.1875), (1.0, 0.1875), (0.4, 0.075)]):
        img = render_scene(256, 256, [(CLASS_NAMES.index("neutrophil"), 128, 128)], s, rng, int(12 / s / s))
        cv2.imwrite(str(out / "neutrophil" / f"s_{i}.png"), img[..., ::-1])
        files.append({"file": f"neutrophil/s_{i}.png", "label": "neutrophil", "rbc_fraction": fraction})
    (out / "export.json").write_text(json.dumps({"files": files}))
    r = invoke_cli("celledge", "classify", str(out), "--json")
    assert r.returncode == 0, r.stderr
    scales = {Path(x["path"]).name: x["scale"] for x in map(json.loads, r.stdout.splitlines())}
    assert {x["source"] for x in scales.values()} == {"export.json"}
    r = invoke_cli("celledge", "classify", str(out), "--json", "--rescale", "shared")
    assert r.returncode == 0 and "framed" not in r.stderr and "measured" not in r.stderr, r.stderr
    assert {Path(x["path"]).name: x["scale"] for x in map(json.loads, r.stdout.splitlines())} == scales
