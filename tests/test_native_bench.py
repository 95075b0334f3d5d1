"""cellcompress bench --protocol crop|native|both: debris at the camera's own resolution, side by side."""
import json

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli
from scopelite.train.native_corruptions import NATIVE_CORRUPTIONS
from scopelite.train.synth import CLASS_NAMES, render_scene

CLASSES = ("lymphocyte", "neutrophil", "platelet")


def write_fields(root, per_class: int = 2, side: int = 200, seed: int = 0):
    """Generated whole fields in class folders, each centred on one cell of its folder's class."""
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = render_scene(side, side, [(CLASS_NAMES.index(c), side / 2, side / 2)], 1.0, rng,
                               int(side * side / (26 * 26) * 0.55))
            cv2.imwrite(str(root / c / f"{c}_{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    return write_fields(tmp_path_factory.mktemp("fields"))


def test_both_protocols_side_by_side(tiny_run, fields, tmp_path):
    out = tmp_path / "b"
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--protocol", "both", "--fields", str(fields),
                   "--limit", "16", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    crop = json.loads((out / "bench.json").read_text())
    native = json.loads((out / "native.json").read_text())
    both = json.loads((out / "protocols.json").read_text())
    m = "model.tflite"
    assert crop["images"] == 16 and len(crop["corruptions"]) == 16  # the crop protocol as before
    assert native["images"] == 6 and native["unit"] == "fields" and native["corruptions"] == list(NATIVE_CORRUPTIONS)
    acc = native["accuracy"][m]
    assert len(acc) == 1 + 6 * 5 and all(0.0 <= v <= 1.0 for v in acc.values())
    sc = native["scale"]
    assert 20 < sc["rbc_px_median"] < 34  # generated red cells are about 26 px across at scale 1
    assert sc["px_per_um"] == pytest.approx(sc["rbc_px_median"] / 7.5, rel=0.01)
    seen = native["field_mode"]
    assert seen["clean"]["with_a_detection"] == 1.0
    # the whole daemon is under test: stain deposits are found as cells, as on a real slide
    assert seen["stain_deposit/5"]["cells_per_field"] > seen["clean"]["cells_per_field"]
    row = both["models"][m]
    assert row["crop"]["per_corruption"]["debris"] == pytest.approx(crop["models"][m]["per_corruption"]["debris"])
    assert row["native"]["clean"] == pytest.approx(acc["clean"])
    assert both["paired"]["stain_deposit"] is None and "stain_deposit" not in row["crop"]["per_corruption"]
    assert both["command"].startswith("cellcompress bench") and "--protocol both" in both["command"]
    assert both["measured_on"]["cores"] >= 1 and both["date"]
    md = (out / "protocols.md").read_text()
    assert "stain_deposit (native only)" in md and "px per µm" in md
    for f in ("bench.png", "native.png", "protocols.png", "native.csv"):
        assert (out / f).stat().st_size > 500, f
    rows = (out / "native.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + 6 * 5
    # a rerun into the folder replaces bench's own files; a user's file of one of those names is refused before
    from scopelite.compress.native import output_judges
    from scopelite.edge.precious import foreign_files
    assert foreign_files(out, output_judges("both")) == []
    (out / "native.csv").write_text("my own notes\n")
    assert foreign_files(out, output_judges("both")) == ["native.csv"]
    assert foreign_files(out, output_judges("crop")) == []  # a crop run writes no native.csv


def test_native_alone_and_bad_input(tiny_run, fields, tmp_path):
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--protocol", "native", "--fields", str(fields),
                   "--limit", "3", "--out", str(tmp_path / "n"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "n" / "native.json").read_text())["images"] == 3  # one field a class
    assert not (tmp_path / "n" / "bench.json").exists() and not (tmp_path / "n" / "protocols.json").exists()
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--protocol", "native", "--out", str(tmp_path / "a"))
    assert_one_line_error(r, "--fields", code=2)
    odd = tmp_path / "odd"
    (odd / "unicorn").mkdir(parents=True)
    img = next((fields / "platelet").iterdir())
    (odd / "unicorn" / img.name).write_bytes(img.read_bytes())
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--protocol", "native", "--fields", str(odd),
                   "--out", str(tmp_path / "b"))
    assert_one_line_error(r, "unicorn", "labels", code=2)
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--run", str(tiny_run["tflite"]),
                   "--out", str(tmp_path / "c"))
    assert_one_line_error(r, "--run", "model.keras", code=2)
    assert not (tmp_path / "c" / "bench.json").exists()
