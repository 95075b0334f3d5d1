"""Labelled whole fields (edge/fieldset.py): the main cell, scoring a folder against its classes, the main cell's crop."""
import ast
from pathlib import Path

import cv2
import numpy as np
import pytest

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset
from scopelite.edge.bundle import InputSpec
from scopelite.edge.scale import estimate_rbc_diameter
from scopelite.edge.watch import FieldScale
from scopelite.train.synth import CLASS_NAMES, make_field, render_scene

NEUTROPHIL, PLATELET = CLASS_NAMES.index("neutrophil"), CLASS_NAMES.index("platelet")
H, W = 300, 400  # generated fields: red cells ~25 px across at scale 1


class ByPosition:
    """A stand-in model: the i-th crop of a batch (detections come largest first) gets class i."""

    labels = tuple(CLASS_NAMES)
    input_spec = InputSpec(32, 32, rbc_px=6.0)

    def classify(self, batch):
        return np.eye(len(self.labels))[np.arange(len(batch)) % len(self.labels)]


def _field(seed: int, white: tuple[float, float], platelet: tuple[float, float]) -> np.ndarray:
    """A neutrophil and a platelet among red cells (the white cell is the larger detection)."""
    return render_scene(H, W, [(NEUTROPHIL, *white), (PLATELET, *platelet)], 1.0, np.random.default_rng(seed), 80)


def _cell(x, y, kind="white", best="neutrophil"):
    return {"center": [x, y], "kind": kind, "best": best}


def test_main_cell_largest_white_or_nearest_the_centre():
    small, big_white, white = _cell(200, 150, "small"), _cell(10, 10), _cell(300, 20)
    cells = [small, big_white, white]  # classify_field's order: largest detection first
    assert fieldset.main_cell(cells, (H, W, 3)) is big_white
    assert fieldset.main_cell([small, _cell(1, 1, "small")], (H, W, 3)) is small  # no white cell: the largest
    assert fieldset.main_cell(cells, (H, W, 3), "centre") is small
    # x runs along the width: in a tall field the cell at (20, 300) is the central one, not (300, 20)
    tall = [_cell(300, 20), _cell(20, 300)]
    assert fieldset.main_cell(tall, (600, 40, 3), "centre") is tall[1]
    assert fieldset.main_cell(tall, (40, 600, 3), "centre") is tall[0]
    assert fieldset.main_cell([], (H, W, 3)) is None and fieldset.main_cell([], (H, W, 3), "centre") is None
    with pytest.raises(ValueError, match="largest, centre"):
        fieldset.main_cell(cells, (H, W, 3), "middle")


def test_scores_per_class_overall_and_confusions():
    s = fieldset.Scores()
    for truth, label in [("lymphocyte", "lymphocyte"), ("lymphocyte", "monocyte"), ("eosinophil", None),
                         ("lymphocyte", "lymphocyte"), ("eosinophil", "eosinophil")]:
        s.add(truth, label)
    assert s.fields == 5 and s.accuracy == pytest.approx(3 / 5)  # per field, not the mean of the classes
    assert s.per_class == {"lymphocyte": pytest.approx(2 / 3), "eosinophil": 0.5}
    assert list(s.per_class) == ["lymphocyte", "eosinophil"]  # in the order first met
    assert s.confusion == {("lymphocyte", "lymphocyte"): 2, ("lymphocyte", "monocyte"): 1, ("eosinophil", None): 1,
                           ("eosinophil", "eosinophil"): 1}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> list[Path]:
    """class folders of generated fields: basophil/ and eosinophil/ hold a white cell near a corner and a
    platelet in the middle; monocyte/ a field with nothing stained in it (seed 1: no false detection)."""
    root = tmp_path_factory.mktemp("fields")
    fields = {"basophil/a.png": _field(1, (80, 70), (W / 2, H / 2)),
              "eosinophil/b.png": _field(2, (320, 230), (W / 2 + 4, H / 2 - 3)),
              "monocyte/c.png": render_scene(H, W, [], 1.0, np.random.default_rng(1), 30)}  # red cells only
    paths = []
    for name, img in fields.items():
        (root / name).parent.mkdir()
        cv2.imwrite(str(root / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(root / name)
    return paths


def test_score_fields_scores_the_main_cell_against_the_folder(labelled):
    clf = ByPosition()
    cfg = fieldset.default_config(clf)
    assert (cfg.model_rbc_px, cfg.input_px, cfg.crop_size) == (6.0, 32, None)  # from the sidecar, as watch has it
    largest = fieldset.score_fields(clf, labelled, cfg)  # the white cell, the largest detection: class 0
    assert largest.hits == {"basophil": [True], "eosinophil": [False], "monocyte": [False]}
    assert largest.confusion == {("basophil", "basophil"): 1, ("eosinophil", "basophil"): 1, ("monocyte", None): 1}
    centre = fieldset.score_fields(clf, labelled, cfg, pick="centre")  # the platelet, the second detection: class 1
    assert centre.hits == {"basophil": [False], "eosinophil": [True], "monocyte": [False]}
    assert centre.accuracy == pytest.approx(1 / 3)
    blank = fieldset.score_fields(clf, labelled, cfg, transform=lambda img: np.full_like(img, 235))
    assert blank.accuracy == 0 and set(blank.confusion) == {(c, None) for c in ("basophil", "eosinophil", "monocyte")}


def test_classify_fields_smooths_one_scale_over_the_folder(labelled):
    clf = ByPosition()
    cfg = fieldset.default_config(clf)
    imgs = list(fieldset.read_fields(labelled[:2])) + [np.full((H, W, 3), 235, np.uint8)]
    res = list(fieldset.classify_fields(imgs, clf, cfg))
    assert [r.label for r in res] == ["basophil", "basophil", None]
    assert all(len(r.cells) == 2 for r in res[:2]) and res[2].cells == [] and res[2].main is None
    assert res[0].scale["source"] == "red cells" and 18 < res[0].scale["rbc_px"] < 35
    # the empty field has no red cells: it keeps the folder's scale, not the fallback a lone frame would get
    assert res[2].scale["source"] == "red cells" and res[2].scale["rbc_px"] == res[1].scale["rbc_px"]
    assert res[0].scale["crop"] == cfg.crop_for(res[0].scale["rbc_px"])
    fixed = list(fieldset.classify_fields(imgs[:1], clf, fieldset.default_config(clf, crop_size=100)))
    assert fixed[0].scale["crop"] == 100 and fixed[0].scale["source"] == "crop-size"


def _mad(a, b) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def _crop_at(img, x, y, side, size):
    det = field_lib.Detection(float(x), float(y), (0, 0, 0, 0), 1)
    return cv2.resize(np.ascontiguousarray(field_lib.crop(img, det, side)), (size, size), interpolation=cv2.INTER_AREA)


def test_main_cell_crop_is_the_white_cell_at_the_model_input_size():
    img = _field(5, (90, 80), (200, 150))
    cfg = field_lib.FieldConfig(crop_size=120, input_px=48, model_rbc_px=10.0)  # red cells ~25 px: 120 px crops
    crop = fieldset.main_cell_crop(img, cfg)
    assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
    assert _mad(crop, _crop_at(img, 90, 80, 120, 48)) < _mad(crop, _crop_at(img, 200, 150, 120, 48)) / 1.5
    empty = render_scene(H, W, [], 1.0, np.random.default_rng(1), 30)
    assert fieldset.main_cell_crop(empty, cfg) is None


def test_white_cell_crops_gives_every_white_cell_largest_first():
    lymph = CLASS_NAMES.index("lymphocyte")
    img = render_scene(H, W, [(NEUTROPHIL, 90, 80), (lymph, 290, 200), (PLATELET, 200, 150)], 1.0,
                       np.random.default_rng(5), 80)
    cfg = field_lib.FieldConfig(crop_size=120, input_px=48, model_rbc_px=10.0)
    crops = fieldset.white_cell_crops(img, cfg)
    assert len(crops) == 2 and all(c.shape == (48, 48, 3) for c in crops)  # the platelet is not white-cell sized
    assert _mad(crops[0], fieldset.main_cell_crop(img, cfg)) == 0  # the main cell is the first
    at = {xy: _crop_at(img, *xy, 120, 48) for xy in ((90, 80), (290, 200))}
    nearest = [min(at, key=lambda xy: _mad(c, at[xy])) for c in crops]
    assert sorted(nearest) == sorted(at)  # one crop on each white cell
    assert fieldset.white_cell_crops(render_scene(H, W, [], 1.0, np.random.default_rng(1), 30), cfg) == []


@pytest.mark.parametrize("model_rbc_px", [10.0, 18.0])  # a fixed crop at the fields' scale, and at another
def test_main_cell_crop_finds_the_white_cell_field_mode_finds(model_rbc_px):
    """One scale for both (FieldScale.measure): a fixed --crop-size sets the detector's scale here as in field mode."""
    from scopelite.edge.watch import classify_field

    img = _field(5, (90, 80), (200, 150))
    cfg = field_lib.FieldConfig(crop_size=120, input_px=48, model_rbc_px=model_rbc_px)
    whites = [c for c in classify_field(img, ByPosition(), cfg, 0.0)[0] if c["kind"] == "white"]
    crop = fieldset.main_cell_crop(img, cfg)
    assert (crop is None) == (not whites)
    if whites:
        assert _mad(crop, _crop_at(img, *whites[0]["center"], 120, 48)) < 1
        assert _mad(crop, fieldset.main_cell_crop(img, cfg, FieldScale(cfg))) == 0


def test_main_cell_crop_at_the_fields_own_or_the_folders_scale():
    img = _field(6, (250, 100), (100, 200))
    cfg = field_lib.FieldConfig(model_rbc_px=12.0, input_px=32)  # auto: the crop side follows the red cells
    rbc = estimate_rbc_diameter(img).diameter_px
    near, far = cfg.crop_for(rbc), cfg.crop_for(1.5 * rbc)
    scaler = FieldScale(cfg)  # one microscope: three fields at one magnification ...
    for _ in range(3):
        assert _mad(fieldset.main_cell_crop(img, cfg, scaler), fieldset.main_cell_crop(img, cfg)) == 0
    assert len(scaler.smoother.values) == 3
    # ... then one at 1.5x, from the same camera (the same frame size)
    zoomed = cv2.resize(img, (W * 3 // 2, H * 3 // 2), interpolation=cv2.INTER_LINEAR)[:H, 100:100 + W]
    alone, held = fieldset.main_cell_crop(zoomed, cfg), fieldset.main_cell_crop(zoomed, cfg, scaler)
    at = (field_lib.detect(zoomed)[0].x, field_lib.detect(zoomed)[0].y)  # the white cell, near (275, 150)
    assert _mad(alone, _crop_at(zoomed, *at, far, 32)) < _mad(alone, _crop_at(zoomed, *at, near, 32)) / 1.5
    assert _mad(held, _crop_at(zoomed, *at, near, 32)) < _mad(held, _crop_at(zoomed, *at, far, 32)) / 1.5
    # a frame of another size is another camera or set-up: its own ruler, not the folder's (a second-site trial: a
    # 1280x960 frame cropped at a 640x480 camera's red cells, and both sizes misread); sizes within 10 % are one
    bigger = cv2.resize(img, (W * 3 // 2, H * 3 // 2), interpolation=cv2.INTER_LINEAR)
    at = (field_lib.detect(bigger)[0].x, field_lib.detect(bigger)[0].y)
    held = fieldset.main_cell_crop(bigger, cfg, scaler)
    assert _mad(held, fieldset.main_cell_crop(bigger, cfg)) == 0
    assert _mad(held, _crop_at(bigger, *at, far, 32)) < _mad(held, _crop_at(bigger, *at, near, 32)) / 1.5
    assert fieldset.main_cell_crop(img, cfg, scaler) is not None  # back at the first size: its own ruler, without
    assert len(scaler.smoother.values) == 5 and max(scaler.smoother.values) < 36  # the bigger frame's red cells (39)
    assert scaler._set_up((H + 20, W - 30)) == (H, W) and scaler._set_up((H * 3 // 2, W * 3 // 2)) == (450, 600)


def test_main_cell_crop_of_a_large_frame_is_searched_at_half_size_and_cut_at_full():
    img, cells = make_field(np.random.default_rng(4), 1920, 1080, n_cells=3, scale=2.0)
    (x, y), = [c["center"] for c in cells if c["label"] not in ("platelet",)]
    cfg = field_lib.FieldConfig(model_rbc_px=24.0, input_px=96)
    assert field_lib.shrink_for_search(img)[1] == 2
    crop = fieldset.main_cell_crop(img, cfg)
    side = cfg.crop_for(estimate_rbc_diameter(field_lib.shrink_for_search(img)[0]).diameter_px * 2)
    assert abs(side / 192 - 1) < 0.2  # red cells ~48 px at full size, 24 px in the model's 96
    assert _mad(crop, _crop_at(img, x, y, side, 96)) < _mad(crop, _crop_at(img, x / 2, y / 2, side, 96)) / 1.5


def test_nothing_in_the_edge_package_imports_fieldset():
    """fieldset sits above watch: the daemon's modules must not import it."""
    edge = Path(fieldset.__file__).parent
    for py in edge.glob("*.py"):
        if py.name == "fieldset.py":
            continue
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.split(".")[-1] == "fieldset" for n in names), py.name


def test_main_cell_crops_hold_one_scale_for_the_folder_and_leave_out_empty_fields(tmp_path):
    cfg = field_lib.FieldConfig(model_rbc_px=12.0, input_px=32)
    img = _field(6, (250, 100), (100, 200))
    zoomed = cv2.resize(img, (W * 3 // 2, H * 3 // 2), interpolation=cv2.INTER_LINEAR)[:H, 100:100 + W]  # one camera
    empty = np.full_like(img, 235)
    paths = []
    for name, im in (("a.png", img), ("b.png", empty), ("c.png", img), ("d.png", zoomed)):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        paths.append(tmp_path / name)
    got = list(fieldset.main_cell_crops(paths, cfg))
    assert [p.name for p, _ in got] == ["a.png", "c.png", "d.png"]  # the empty field has no main cell
    scaler = FieldScale(cfg)  # what the generator must equal: main_cell_crop field by field, one scaler
    expect = [fieldset.main_cell_crop(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), cfg, scaler) for p in paths]
    for (_, crop), want in zip(got, [e for e in expect if e is not None]):
        assert _mad(crop, want) == 0
    assert _mad(got[2][1], fieldset.main_cell_crop(zoomed, cfg)) > 0  # the zoomed field is cut at the folder's scale


def test_parts_by_number_splits_by_the_number_in_the_file_name():
    paths = [Path(f"eosinophil/{n}") for n in ("02.jpg", "03.jpg", "x.jpg", "11.png", "100.jpg")]
    even, odd = fieldset.parts_by_number(paths)
    assert [p.name for p in even] == ["02.jpg", "x.jpg", "100.jpg"] and [p.name for p in odd] == ["03.jpg", "11.png"]


def test_parts_by_number_keeps_the_fields_of_one_cell_together():
    paths = [Path(f"eosinophil/{n}.jpg") for n in (2, 3, 5, 8, 9)]
    groups = [[paths[1], paths[2]], [paths[4], paths[0]], [paths[3]]]  # 3+5 one cell (odd), 9+2 one cell (even)
    even, odd = fieldset.parts_by_number(paths, groups)
    assert [p.stem for p in even] == ["2", "8", "9"] and [p.stem for p in odd] == ["3", "5"]
    assert fieldset.parts_by_number(paths) == ([paths[0], paths[3]], [paths[1], paths[2], paths[4]])


def test_duplicate_groups_finds_one_cell_turned_flipped_and_shifted():
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3)).astype(np.uint8), (0, 0), 2.0)
    a = big[16:112, 16:112].copy()
    b = np.ascontiguousarray(np.rot90(big[10:106, 20:116][:, ::-1]))  # the same view flipped, turned, shifted
    other = cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3)).astype(np.uint8), (0, 0), 2.0)
    crops = [(Path("eosinophil/1.jpg"), a), (Path("eosinophil/4.jpg"), other), (Path("eosinophil/2.jpg"), b),
             (Path("neutrophil/7.jpg"), a)]  # another class is never a copy, whatever it looks like
    groups = sorted(sorted(p.as_posix() for p in g) for g in fieldset.duplicate_groups(crops))
    assert groups == [["eosinophil/1.jpg", "eosinophil/2.jpg"], ["eosinophil/4.jpg"], ["neutrophil/7.jpg"]]
    assert len(fieldset.duplicate_groups(crops, threshold=1.01)) == 4  # nothing is a copy above a perfect match


def test_cell_accuracy_counts_a_cell_photographed_twice_once():
    paths = [Path("eosinophil/1.jpg"), Path("neutrophil/2.jpg"), Path("eosinophil/3.jpg"), Path("eosinophil/5.jpg")]
    scores = fieldset.Scores()
    for p, label in zip(paths, ["eosinophil", "neutrophil", "neutrophil", "neutrophil"]):
        scores.add(fieldset.truth(p), label)
    cell_of = {paths[0]: 0, paths[2]: 0, paths[1]: 1, paths[3]: 2}  # 1 and 3 one cell: right once, wrong once
    assert scores.accuracy == 0.5 and fieldset.cell_accuracy(paths, scores, cell_of) == (0.5 + 1.0 + 0.0) / 3
    assert fieldset.cell_accuracy([], fieldset.Scores(), {}) is None
