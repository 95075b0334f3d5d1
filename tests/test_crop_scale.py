"""celledge classify on single-cell images framed unlike the training crops: cut to the training framing."""
from __future__ import annotations

import json

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
    assert found.record()["crop"] == 256


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tight_crop_is_widened_by_its_white_cell(seed):
    """A lymphocyte that fills a 124 px crop (1.3 red cells across, the red cells cut off): its size sets the
    scale. Generated white cells are smaller beside their red cells than real ones (WHITE_TO_RED is PBC's), so
    the scale it gives is within 0.5-1.2 x the true one here, not PBC's 10 %."""
    crop = _framed(4.0, 1.3, seed, "lymphocyte")
    view, found = crop_scale.rescale(crop, MODEL_RBC, INPUT)
    assert found.source == "white cell"
    assert 0.5 < found.rbc_px / (RBC * 4.0) < 1.2, found
    assert view.shape[:2] == (found.side, found.side) and found.side > 2 * crop.shape[0]  # borders reflected
    c, v = crop.shape[0] // 2, found.side // 2
    np.testing.assert_array_equal(view[v - 5:v + 5, v - 5:v + 5], crop[c - 5:c + 5, c - 5:c + 5])  # same centre


def test_an_image_the_size_of_the_model_input_is_taken_as_already_cut():
    crop = cv2.resize(_framed(1.0, 12.0), (INPUT, INPUT), interpolation=cv2.INTER_AREA)  # framed wide, but 96 px
    view, found = crop_scale.rescale(crop, MODEL_RBC, INPUT)
    assert found == crop_scale.CropScale("as given", None, INPUT) and view is crop


def test_an_image_without_cells_is_left_as_given():
    blank = np.full((300, 300, 3), 225, np.uint8)
    view, found = crop_scale.rescale(blank, MODEL_RBC, INPUT)
    assert found.source == "as given" and view is blank


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
    r = invoke_cli("celledge", "classify", str(wide), "--json", "--no-rescale")
    assert r.returncode == 0 and "scale" not in json.loads(r.stdout.splitlines()[0])


def test_a_large_image_is_measured_shrunk_and_reframed_in_its_own_pixels():
    crop = cv2.resize(_framed(1.0, 12.0), None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)  # 2304 px, rbc ~192
    found = crop_scale.measure(crop, MODEL_RBC, INPUT)
    assert found.source == "red cells" and abs(found.rbc_px / (8 * RBC) - 1) < 0.15, found
