"""tools/few_shot.py's split and draw: N different cells per class, no cell both fine-tuned on and scored."""
import importlib.util
from pathlib import Path

from scopelite.edge import fieldset

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("few_shot", ROOT / "tools" / "few_shot.py")
few_shot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(few_shot)


def _lab():
    """20 eosinophil and 12 neutrophil fields; consecutive numbers are mostly one cell photographed twice."""
    paths = [Path(f"eosinophil/{n}.jpg") for n in range(20)] + [Path(f"neutrophil/{n}.jpg") for n in range(20, 32)]
    groups = [paths[i:i + 2] for i in range(0, 20, 2)] + [[p] for p in paths[20:26]] + [paths[26:29], paths[29:32]]
    cell_of = {p: i for i, g in enumerate(groups) for p in g}
    return paths, groups, cell_of


def test_draw_takes_different_cells_nested_and_keeps_their_copies_out_of_what_is_scored():
    paths, groups, cell_of = _lab()
    adapt, report = fieldset.parts_by_number(paths, groups)
    assert not {cell_of[p] for p in adapt} & {cell_of[p] for p in report}  # no cell in both parts
    cropped = set(paths) - {paths[0]}  # the first field of cell 0 has no main-cell crop: its copy stands in
    cells = few_shot.one_field_per_cell(adapt, cropped, cell_of)
    assert paths[0] not in cells["eosinophil"] and paths[1] in cells["eosinophil"]
    assert all(len({cell_of[p] for p in ps}) == len(ps) for ps in cells.values())  # one field per cell
    small, large = few_shot.draw(cells, 2, seed=3), few_shot.draw(cells, 4, seed=3)
    assert all(set(small[c]) <= set(large[c]) and len(small[c]) == min(2, len(cells[c])) for c in cells)
    assert few_shot.draw(cells, 4, seed=3) == large and few_shot.draw(cells, 4, seed=4) != large
    drawn = {cell_of[p] for ps in large.values() for p in ps}
    validation = [p for p in adapt if cell_of[p] not in drawn]
    assert validation and not any(cell_of[p] in drawn for p in validation + report)
    # every field of a drawn cell is out of validation, copies included
    assert all(q not in validation for g in groups if cell_of[g[0]] in drawn for q in g)


def test_by_setup_scores_each_background_apart():
    paths = [Path("eosinophil/1.jpg"), Path("eosinophil/2.jpg"), Path("neutrophil/3.jpg"), Path("neutrophil/4.jpg")]
    scores = fieldset.Scores()
    for p, label in zip(paths, ["eosinophil", "neutrophil", "neutrophil", "eosinophil"]):
        scores.add(fieldset.truth(p), label)
    out = few_shot.by_setup(paths, scores, {paths[0]: 1, paths[1]: 1, paths[2]: 1, paths[3]: 0})
    assert out["yellower background"] == {"fields": 3, "accuracy": round(2 / 3, 4),
                                          "per_class": {"eosinophil": 0.5, "neutrophil": 1.0}}
    assert out["bluer background"] == {"fields": 1, "accuracy": 0.0, "per_class": {"neutrophil": 0.0}}



def test_pool_crops_finds_every_white_cell_and_leaves_out_copies_of_labelled_fields(tmp_path):
    import cv2
    import numpy as np

    from scopelite.edge import field as field_lib
    from scopelite.train.synth import CLASS_NAMES, render_scene

    lymph, neut, eos = (CLASS_NAMES.index(c) for c in ("lymphocyte", "neutrophil", "eosinophil"))
    frames = {"a/1.png": [(neut, 90, 80), (eos, 290, 200)], "b/1.png": [(lymph, 150, 150)]}  # one name, two folders
    for k, (name, cells) in enumerate(frames.items()):
        img = render_scene(300, 400, cells, 1.0, np.random.default_rng(10 + k), 80)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cfg = field_lib.FieldConfig(crop_size=120, input_px=48, model_rbc_px=10.0)
    crops, left_out = few_shot.pool_crops(tmp_path, cfg, [])
    assert left_out == 0 and sorted(n for n, _ in crops) == ["a_1-0", "a_1-1", "b_1-0"]
    labelled = [c for n, c in crops if n == "b_1-0"]  # that cell is also a labelled field: left out
    kept, left_out = few_shot.pool_crops(tmp_path, cfg, labelled)
    assert left_out == 1 and sorted(n for n, _ in kept) == ["a_1-0", "a_1-1"]

    import pytest

    with pytest.raises(SystemExit, match="not a folder of images"):
        few_shot.pool_crops(tmp_path / "missing", cfg, [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="not a folder of images"):
        few_shot.pool_crops(tmp_path / "empty", cfg, [])


def test_soup_fits_more_training_seeds_on_one_split_and_averages_them_all(tmp_path, monkeypatch):
    import types

    import pytest

    calls = []
    monkeypatch.setattr(few_shot, "run", lambda cmd, log: calls.append(cmd) or 1.0)
    a = types.SimpleNamespace(weights="shipped", seed=7)
    first = tmp_path / "run-25"
    row: dict = {}
    model = few_shot.soup_and_compress(tmp_path / "bin", a, tmp_path / "data", first, ["--epochs", "30"], 3, row)
    fits = [c for c in calls if c[1] == "fit"]
    assert [c[c.index("--train-seed") + 1] for c in fits] == ["107", "207"]
    assert {c[c.index("--seed") + 1] for c in fits} == {"7"}  # one split: celltrain average refuses others
    average = next(c for c in calls if c[1] == "average")
    assert average[2:5] == [str(first), str(tmp_path / "run-25-s1"), str(tmp_path / "run-25-s2")]
    assert calls[-1][1] == str(tmp_path / "run-25-soup" / "model.keras") and "--int8" in calls[-1]
    assert model == tmp_path / "run-25-soup" / "int8" / "model.tflite" and row["fit_seconds"] == [1.0, 1.0]
    monkeypatch.setattr("sys.argv", ["few_shot.py", "--soup", "1"])
    with pytest.raises(SystemExit, match="at least 2 fits"):
        few_shot.main()
