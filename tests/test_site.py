"""Site calibration: `celledge calibrate` measures a microscope once, `--site FILE` applies it in watch and classify."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli
from scopelite.edge import site as site_lib
from scopelite.edge.bundle import load_sidecar
from scopelite.edge.packaged import default_model
from scopelite.edge.scale import crop_side
from scopelite.train.synth import make_field

TRUE_DIAMETER = 24.0  # generated red cells at scale 1 (train/synth.py; tests/test_scale.py)
SHIPPED_RBC_PX = load_sidecar(default_model()).input.rbc_px  # what watch crops for, with the shipped model
MODEL_RBC_PX = 18.0  # a model's training scale for calibrate() (red cells in a 96 px input)


def _fields(folder, scale: float, n: int = 5, seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = [make_field(rng, 640, 480, n_cells=4, scale=scale)[0] for _ in range(n)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"field{i:02d}.png"), f[..., ::-1])
    return frames


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site") / "fields"
    _fields(folder, 1.5)
    return folder


@pytest.fixture(scope="module")
def site_file(fields, tmp_path_factory):
    out = tmp_path_factory.mktemp("site_out") / "site.json"
    r = invoke_cli("celledge", "calibrate", str(fields), "--scale", "--out", str(out))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return out, r


@pytest.mark.parametrize("s", [0.8, 1.6])
def test_calibrate_recovers_the_known_scale(s):
    rng = np.random.default_rng(int(s * 10))
    frames = [make_field(rng, 640, 480, n_cells=4, scale=s)[0] for _ in range(4)]
    rec = site_lib.calibrate(frames, input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert abs(rec["scale"]["rbc_px"] / (TRUE_DIAMETER * s) - 1) < 0.08, rec["scale"]  # the ruler: +6 % at 0.8
    assert rec["scale"]["um_per_px"] == pytest.approx(7.5 / rec["scale"]["rbc_px"], rel=1e-3)
    assert rec["frames"] == 4 and rec["scale"]["frames"] == 4
    assert site_lib.validate(rec) == []


def test_a_still_view_and_cell_crops_are_said_apart_from_a_microscopes_fields():
    """A second-site trial: calibrate on a still video (40 copies of one field) said "30 frames measured" and gave
    confident stain advice; on a folder of exported cell crops it wrote a site file with no word. Both now warn."""
    rng = np.random.default_rng(3)
    fields = [make_field(rng, 640, 480, n_cells=4)[0] for _ in range(5)]
    rec = site_lib.calibrate(fields, input_px=96, model_rbc_px=MODEL_RBC_PX)
    lines = "\n".join(site_lib.summary_lines(rec, "site.json"))
    assert "repeated_frames" not in rec and "crop_sized_frames" not in rec and "seen before" not in lines
    noisy = [np.clip(fields[0].astype(int) + rng.integers(-2, 3, fields[0].shape), 0, 255).astype(np.uint8)
             for _ in range(8)]  # one field, 8 frames of camera noise
    rec = site_lib.calibrate(noisy + fields[1:2], input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert rec["repeated_frames"] == 7
    assert "7 frames of 9 showed a view seen before" in "\n".join(site_lib.summary_lines(rec, "site.json"))
    crops = [make_field(rng, 256, 256, n_cells=1)[0] for _ in range(5)]
    rec = site_lib.calibrate(crops, input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert rec["crop_sized_frames"] == 5 and "the size of a cell's crop" in "\n".join(
        site_lib.summary_lines(rec, "site.json"))
    pbc_like = [make_field(rng, 360, 363, n_cells=1)[0] for _ in range(5)]  # PBC's fields: fields, not crops
    for input_px in (96, 128, 224):  # whatever the model's input (a review: 3x a 224 px input flagged 640x480)
        rec = site_lib.calibrate(pbc_like + fields[:1], input_px=input_px, model_rbc_px=MODEL_RBC_PX * input_px / 96)
        assert "crop_sized_frames" not in rec


def test_hand_edited_site_values_are_named_not_a_traceback_or_huge_crops(tmp_path):
    """An integer of 400 digits: OverflowError in the check; rbc_px 2000 with use: true, accepted, cut 10,667 px
    crops (9 s and 0.5 GB for 4 frames); /dev/zero as --site filled the memory."""
    rng = np.random.default_rng(3)
    rec = site_lib.calibrate([make_field(rng, 640, 480, n_cells=4)[0] for _ in range(3)], input_px=96,
                             model_rbc_px=MODEL_RBC_PX)
    assert site_lib.validate(rec) == []
    assert site_lib.validate({**rec, "scale": {**rec["scale"], "rbc_px": 10**400}}) == [
        f"site file: scale.rbc_px: expected a number, got {10**400!r}"]
    assert "expected three numbers" in site_lib.validate({**rec, "background": [10**400, 1, 1]})[0]
    # a key left out was "expected true or false, got None" (a hunt of session 37)
    assert site_lib.validate({**rec, "scale": {k: v for k, v in rec["scale"].items() if k not in ("use", "rbc_px")}}) \
        == ["site file: scale.rbc_px: missing (a number)", "site file: scale.use: missing (true or false)"]
    assert site_lib.validate({**rec, "scale": {**rec["scale"], "rbc_px": 2000, "use": False}}) == []  # not applied
    big = site_lib.validate({**rec, "scale": {**rec["scale"], "rbc_px": 2000, "use": True}})
    assert big and "would cut each cell 10667 px across" in big[0]
    with pytest.raises(site_lib.SiteError, match="is not a file"):
        site_lib.load("/dev/zero")
    (tmp_path / "big.json").write_text(" " * (2**20 + 10))
    with pytest.raises(site_lib.SiteError, match="larger than a site file can be"):
        site_lib.load(tmp_path / "big.json")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rec).encode())  # saved again in Notepad
    assert site_lib.load(tmp_path / "bom.json", input_px=96).rbc_px == rec["scale"]["rbc_px"]
    (tmp_path / "long.json").write_text('{"schema": ' + "9" * 5000 + "}")
    with pytest.raises(site_lib.SiteError, match="a number too long to read"):
        site_lib.load(tmp_path / "long.json")


def test_calibrate_command_writes_the_file_and_a_summary(site_file):
    out, r = site_file
    rec = json.loads(out.read_text())
    assert rec["schema"] == site_lib.SCHEMA and rec["model"]["input_px"] == 96
    assert abs(rec["scale"]["rbc_px"] / (TRUE_DIAMETER * 1.5) - 1) < 0.06
    assert rec["stain"] is not None and rec["stain"]["frames"] >= 1  # the shipped model carries a stain reference
    assert f"{rec['scale']['rbc_px']} px" in r.stdout and "um/px" in r.stdout and "advice:" in r.stdout
    assert "celltrain fit --preset few-shot" in r.stdout or "stained like the model's training" in r.stdout
    assert r.stderr.count("frame ") == 5  # progress, one line a frame, on stderr


def _lines(r) -> list[dict]:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]


def test_site_fixes_the_scale_in_watch(fields, site_file, tmp_path):
    out, _ = site_file
    rec = json.loads(out.read_text())
    rec["scale"]["rbc_px"] = 50.0  # not what the frames show (36 px): the lines must follow the file
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(rec))
    lines = _lines(invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--site", str(fixed)))
    frames = [x for x in lines if "frame" in x and "scale" in x]
    assert len(frames) == 5
    for x in frames:
        assert x["scale"]["source"] == "site" and x["scale"]["rbc_px"] == 50.0
        assert x["scale"]["crop"] == crop_side(50.0, SHIPPED_RBC_PX, 96)
        assert abs(x["scale"]["frame_rbc_px"] / 36.0 - 1) < 0.12  # the frame's own ruler is still reported
        assert all(c["box"][2] - c["box"][0] == x["scale"]["crop"] for c in x["cells"])
    assert lines[-1]["summary"]["site"] == {"file": str(fixed), "scale": True, "colour": False}
    without = [x for x in _lines(invoke_cli("celledge", "watch", str(fields), "--mode", "field")) if "scale" in x]
    assert {x["scale"]["source"] for x in without} == {"red cells"}


def test_a_site_file_whose_background_is_coloured_otherwise_is_warned_of(fields, site_file, tmp_path):
    """A second-site trial: a PBC site file (pink background) applied to another lab's cyan fields without a word.
    watch compares the first frames' background with the site file's, by the shares of R, G and B."""
    out, _ = site_file
    same = _lines(invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--site", str(out)))[-1]["summary"]
    assert "coloured unlike the site file" not in (same.get("warning") or "")
    cyan = tmp_path / "cyan"
    cyan.mkdir()
    for f in sorted(fields.glob("*.png")):
        img = cv2.imread(str(f)).astype(np.float64)  # BGR: blue up, red down
        cv2.imwrite(str(cyan / f.name), np.clip(img * (1.1, 1.0, 0.8), 0, 255).astype(np.uint8))
    s = _lines(invoke_cli("celledge", "watch", str(cyan), "--mode", "field", "--site", str(out)))[-1]["summary"]
    assert "coloured unlike the site file's" in s["warning"] and "calibrate this set-up" in s["warning"]
    assert site_lib.background_unlike((230, 210, 200), [(230 * 0.7, 210 * 0.7, 200 * 0.7)]) is None  # a dimmer lamp


def test_by_default_the_site_file_changes_no_crop_and_no_colour(fields, tmp_path):
    off = tmp_path / "default.json"
    r = invoke_cli("celledge", "calibrate", str(fields), "--frames", "2", "--out", str(off))
    assert r.returncode == 0 and "recorded, not used" in r.stdout, r.stderr
    rec = json.loads(off.read_text())
    assert rec["scale"]["use"] is False and rec["colour"]["use"] is False and rec["frames"] == 2
    lines = _lines(invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--site", str(off),
                              "--max-frames", "2"))
    assert {x["scale"]["source"] for x in lines if "scale" in x} == {"red cells"}
    assert lines[-1]["summary"]["site"]["scale"] is False


def test_two_magnifications_are_reported_and_refused_for_a_fixed_scale(tmp_path):
    frames = _fields(tmp_path / "a", 1.0, n=4, seed=1) + _fields(tmp_path / "b", 1.6, n=4, seed=2)
    rec = site_lib.calibrate(frames, input_px=96, model_rbc_px=MODEL_RBC_PX)  # scale off, as the CLI's default
    groups = rec["scale"]["magnifications"]
    assert [g["frames"] for g in groups] == [4, 4], groups
    assert abs(groups[1]["rbc_px"] / groups[0]["rbc_px"] - 1.6) < 0.1
    assert any(line.startswith("warning: the frames show red cells at") for line in site_lib.summary_lines(rec, "x"))
    one = site_lib.calibrate(frames[:4], input_px=96, model_rbc_px=MODEL_RBC_PX, scale=True)
    assert len(one["scale"]["magnifications"]) == 1 and one["scale"]["use"]
    with pytest.raises(site_lib.SiteError, match="more than one objective"):
        site_lib.calibrate(frames, input_px=96, model_rbc_px=MODEL_RBC_PX, scale=True)
    # --scale: one fixed scale in between would crop both set-ups wrong; refused, nothing written
    both = tmp_path / "both"
    both.mkdir()
    for f in ("a", "b"):
        for p in (tmp_path / f).iterdir():
            shutil.copy(p, both / f"{f}_{p.name}")
    out = tmp_path / "site.json"
    r = invoke_cli("celledge", "calibrate", str(both), "--scale", "--out", str(out))
    assert_one_line_error(r, "more than one objective or camera", "Calibrate each set-up apart")
    assert not out.exists()
    r = invoke_cli("celledge", "calibrate", str(both), "--out", str(out))
    assert r.returncode == 0 and "calibrate each set-up apart" in r.stdout, r.stderr[-2000:]


def test_site_in_the_config_file(fields, site_file, tmp_path):
    out, _ = site_file
    cfg = tmp_path / "watch.yaml"
    cfg.write_text(f"source: {fields}\nmode: field\nsite: {out}\nmax-frames: 2\n")
    printed = invoke_cli("celledge", "watch", "--config", str(cfg), "--print-config")
    assert printed.returncode == 0 and f"site: {out}" in printed.stdout, printed.stderr
    lines = _lines(invoke_cli("celledge", "watch", "--config", str(cfg)))
    assert {x["scale"]["source"] for x in lines if "scale" in x} == {"site"}
    cfg.write_text(f"source: {fields}\nmode: field\nsite: {tmp_path / 'missing.json'}\n")
    assert_one_line_error(invoke_cli("celledge", "watch", "--config", str(cfg)), "site", "missing.json", code=2)
    cfg.write_text(f"source: {fields}\nmode: field\nsite: {out}\ncrop-size: 360\n")
    assert_one_line_error(invoke_cli("celledge", "watch", "--config", str(cfg)), "--crop-size", "--site", code=2)


def test_classify_with_a_site_crops_at_the_training_scale(fields, site_file):
    out, _ = site_file
    rec = json.loads(out.read_text())
    r = invoke_cli("celledge", "classify", str(fields / "field00.png"), "--site", str(out), "--json")
    line = _lines(r)[0]
    assert line["scale"] == {"source": "site", "rbc_px": round(rec["scale"]["rbc_px"], 1),
                             "crop": crop_side(rec["scale"]["rbc_px"], SHIPPED_RBC_PX, 96)}


def _bad(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_bad_site_files_give_error_lines(site_file, fields, tmp_path):
    out, _ = site_file
    good = json.loads(out.read_text())
    cases = {
        "not JSON": (_bad(tmp_path, "a.json", "{scale: 3"), "not valid JSON"),
        "watch's YAML settings": (_bad(tmp_path, "site.yaml", "source: /dev/video0\nmode: field\n"),
                                  "given as --config FILE"),
        "a list": (_bad(tmp_path, "b.json", "[1, 2]"), "JSON object"),
        "another schema": (_bad(tmp_path, "c.json", json.dumps({**good, "schema": "scopelite-site/0"})), "schema"),
        "another input size": (_bad(tmp_path, "d.json",
                                    json.dumps({**good, "model": {**good["model"], "input_px": 224}})), "224 px inputs"),
        "a negative scale": (_bad(tmp_path, "e.json", json.dumps({**good, "scale": {**good["scale"], "rbc_px": -3}})),
                             "scale.rbc_px"),
        "a hand-edited stain threshold": (_bad(tmp_path, "g.json", json.dumps(
            {**good, "stain": {**(good["stain"] or {"distance": 1.0}), "threshold": -1}})), "stain.threshold"),
    }
    for what, (path, needle) in cases.items():
        for cmd in (["watch", str(fields), "--mode", "field"], ["classify", str(fields / "field00.png")]):
            r = invoke_cli("celledge", *cmd, "--site", path)
            assert_one_line_error(r, needle, code=2)
    # --print-config checks the whole set-up, the site file too
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--site", cases["a list"][0], "--print-config")
    assert_one_line_error(r, "JSON object", code=2)
    # a site file given as --config (both are "site files" in the docs): told where it goes
    r = invoke_cli("celledge", "watch", "--config", str(out))
    assert_one_line_error(r, "is a site file", f"--site {out}", code=2)
    missing = invoke_cli("celledge", "watch", str(fields), "--site", str(tmp_path / "nope.json"))
    assert_one_line_error(missing, "nope.json", code=2)
    # several mistakes at once: one Error line each
    two = _bad(tmp_path, "f.json", json.dumps({**good, "scale": {**good["scale"], "rbc_px": "big", "use": "yes"},
                                                "colour": {**good["colour"], "gain": [0, 1, 1]}}))
    r = invoke_cli("celledge", "watch", str(fields), "--site", two)
    errs = [x for x in r.stderr.splitlines() if x.startswith("Error: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errs) == 3, r.stderr
    assert any("colour.gain" in e for e in errs) and any("scale.use" in e for e in errs)


def test_calibrate_refuses_frames_without_red_cells_and_writes_nothing(tmp_path):
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(3):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((240, 320, 3), 230, np.uint8))
    out = tmp_path / "site.json"
    r = invoke_cli("celledge", "calibrate", str(blank), "--out", str(out))
    assert_one_line_error(r, "red cells", code=2)
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    # blank frames are said blank (they were "none of the 3 frames shows enough red cells"), and each frame's line
    # says it was left out (a session 37 walk-through)
    assert "the 3 frames are blank" in r.stderr and r.stderr.count("no colour: left out") == 3, r.stderr


def test_white_balance_takes_the_site_background_to_the_training_one():
    rec = site_lib.calibrate([make_field(np.random.default_rng(1), 320, 240, n_cells=2)[0]], input_px=96,
                             model_rbc_px=MODEL_RBC_PX, colour=True)
    s = site_lib.from_record(rec)
    bg = np.zeros((8, 8, 3), np.uint8) + np.array(rec["background"], np.uint8)
    assert np.abs(s.balance(bg).astype(int)[0, 0] - np.array(site_lib.TRAINING_BACKGROUND)).max() <= 2
    off = site_lib.from_record({**rec, "colour": {**rec["colour"], "use": False}})
    assert off.balance(bg) is bg


def test_a_reloaded_model_must_fit_the_running_site_file(fields):
    """SIGHUP / POST /model/reload: a model with another input size than the --site file's is refused, the old serves."""
    from scopelite.edge.bundle import InputSpec
    from scopelite.edge.classifier import FakeClassifier
    from scopelite.edge.reload import ModelReloader

    frames = [cv2.imread(str(p))[..., ::-1] for p in sorted(fields.glob("*.png"))[:2]]
    record = site_lib.calibrate(frames, input_px=96, model_rbc_px=MODEL_RBC_PX)
    labels = ["a", "b"]
    models = {"old": FakeClassifier(labels, InputSpec(96, 96)), "same": FakeClassifier(labels, InputSpec(96, 96)),
              "bigger": FakeClassifier(labels, InputSpec(128, 128))}
    reloader = ModelReloader(models.get, models["old"], "old",
                             also=(lambda new: site_lib.from_record(record, input_px=new.input_spec.height),))
    refused = reloader.reload("bigger")
    assert not refused["ok"] and "128 px" in refused["error"] and reloader.path == "old"
    assert reloader.reload("same")["ok"] and reloader.path == "same"


def test_site_scale_refuses_an_image_far_smaller_than_its_square():
    from scopelite.edge.errors import UserError

    rec = site_lib.calibrate([make_field(np.random.default_rng(1), 320, 240, n_cells=2)[0]], input_px=96,
                             model_rbc_px=MODEL_RBC_PX, scale=True)
    site = site_lib.from_record({**rec, "scale": {**rec["scale"], "rbc_px": 54.0}}, "site.json")
    side = crop_side(54.0, MODEL_RBC_PX, 96)  # the square that shows this microscope's red cells at 18 px in 96
    small = int(side / 1.4)  # a little smaller: borders reflected, as before
    assert site.crop_to_scale(np.zeros((small, small, 3), np.uint8), MODEL_RBC_PX, 96).shape[0] == side
    with pytest.raises(UserError, match=f"a 96x96 px image is far smaller than the {side} px square"):
        site.crop_to_scale(np.zeros((96, 96, 3), np.uint8), MODEL_RBC_PX, 96)  # a crop already cut, not a frame


def test_calibrate_refuses_frames_without_colour():
    field = make_field(np.random.default_rng(1), 320, 240, n_cells=2)[0]
    frame = cv2.cvtColor(cv2.cvtColor(field, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)  # a camera in monochrome
    assert site_lib.calibrate([field], input_px=96, model_rbc_px=MODEL_RBC_PX)["frames"] == 1  # in colour: fine
    with pytest.raises(site_lib.SiteError, match="2 frames hold no colour"):
        site_lib.calibrate([frame, frame], input_px=96, model_rbc_px=MODEL_RBC_PX)
    alone = site_lib.calibrate([field], input_px=96, model_rbc_px=MODEL_RBC_PX)
    mixed = site_lib.calibrate([field, frame], input_px=96, model_rbc_px=MODEL_RBC_PX)  # left out of the medians
    assert mixed["background"] == alone["background"] and mixed["frames"] == 1 and mixed["grey_frames_left_out"] == 1
    assert site_lib.validate(mixed) == []
    assert any("1 frame without colour" in line for line in site_lib.summary_lines(mixed, "x"))


def test_crop_size_conflicts_only_with_a_site_that_fixes_the_scale(fields, site_file, tmp_path):
    out, _ = site_file  # made with --scale
    for extra in ([], ["--print-config"]):  # --print-config checks the whole set-up a unit file will start
        r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--site", str(out), "--crop-size", "300",
                       *extra)
        assert_one_line_error(r, "--crop-size fixes the crop", code=2)
    off = tmp_path / "off.json"
    assert invoke_cli("celledge", "calibrate", str(fields), "--frames", "2", "--out", str(off)).returncode == 0
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--site", str(off), "--crop-size", "300",
                   "--max-frames", "1")
    assert r.returncode == 0, r.stderr[-2000:]  # this site records the scale, it does not fix it


def test_a_scale_measured_on_few_frames_is_reported_with_a_warning(tmp_path):
    frames = _fields(tmp_path / "a", 1.0, n=5, seed=3)
    few = site_lib.summary_lines(site_lib.calibrate(frames[:1], input_px=96, model_rbc_px=MODEL_RBC_PX), "x")
    assert any(line.startswith("warning: only 1 frame measured the scale") for line in few)
    enough = site_lib.summary_lines(site_lib.calibrate(frames, input_px=96, model_rbc_px=MODEL_RBC_PX), "x")
    assert not any("measured the scale:" in line for line in enough)


def test_classify_with_a_site_skips_crops_far_smaller_than_its_square_and_goes_on(fields, site_file, tmp_path):
    out, _ = site_file  # made with --scale
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(sorted(fields.iterdir())[0], mixed / "a_field.png")
    cv2.imwrite(str(mixed / "b_crop.png"), np.full((96, 96, 3), (200, 180, 220), np.uint8))
    shutil.copy(sorted(fields.iterdir())[1], mixed / "c_field.png")
    r = invoke_cli("celledge", "classify", str(mixed), "--site", str(out))
    assert_one_line_error(r, "1 of 3 images were not classified", "b_crop.png", "far smaller", code=2)
    assert "a_field.png" in r.stdout and "c_field.png" in r.stdout


def test_watch_warns_when_the_frames_ruler_is_far_from_the_site_scale(tmp_path):
    """A site file made (--scale) at one objective, run on fields of another: the cells are cropped at the site's
    scale, so watch says the frames' red cells measure something else."""
    _fields(tmp_path / "low", 1.0, n=4, seed=1)
    _fields(tmp_path / "high", 1.6, n=4, seed=2)
    site = tmp_path / "site.json"
    r = invoke_cli("celledge", "calibrate", str(tmp_path / "low"), "--scale", "--out", str(site))
    assert r.returncode == 0, r.stderr[-2000:]
    same = _lines(invoke_cli("celledge", "watch", str(tmp_path / "low"), "--mode", "field", "--site", str(site)))
    assert "another objective" not in same[-1]["summary"].get("warning", "") and not any(x.get("scale", {}).get("off_site") for x in same[:-1])
    r = invoke_cli("celledge", "watch", str(tmp_path / "high"), "--mode", "field", "--site", str(site))
    lines = _lines(r)
    assert "another objective or camera?" in lines[-1]["summary"]["warning"] and "calibrate this set-up" in r.stderr
    assert sum(bool(x.get("scale", {}).get("off_site")) for x in lines[:-1]) >= 3


def test_a_few_frames_at_another_objective_are_marked_off_site_by_their_own_ruler(tmp_path):
    """Among fields at the site's scale, two at another objective: their lines' own ruler (``frame_rbc_px``) lay 1.6x
    off the site's, but the check read the ruler smoothed over the frames and marked nothing (a walk-through of
    session 37; reference.md says each frame's own ruler). Most frames are at the site's scale: no end warning."""
    _fields(tmp_path / "low", 1.0, n=4, seed=1)
    _fields(tmp_path / "mixed", 1.0, n=6, seed=3)
    for i, f in enumerate(_fields(tmp_path / "high", 1.6, n=2, seed=2)):
        cv2.imwrite(str(tmp_path / "mixed" / f"field{i + 3:02d}b.png"), f[..., ::-1])  # read after 4 and 5 others
    site = tmp_path / "site.json"
    r = invoke_cli("celledge", "calibrate", str(tmp_path / "low"), "--scale", "--out", str(site))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = _lines(invoke_cli("celledge", "watch", str(tmp_path / "mixed"), "--mode", "field", "--site", str(site)))
    marked = {Path(x["file"]).name for x in lines[:-1] if x.get("scale", {}).get("off_site")}
    assert marked == {"field03b.png", "field04b.png"}, [(x.get("file"), x.get("scale")) for x in lines[:-1]]
    assert "another objective" not in lines[-1]["summary"].get("warning", "")


def test_calibrate_on_one_frame_says_so_in_the_singular(fields, tmp_path):
    r = invoke_cli("celledge", "calibrate", str(fields), "--frames", "1", "--out", str(tmp_path / "one.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(1 frame of" in r.stdout and "1 frame measured" in r.stdout and "1 frames" not in r.stdout + r.stderr
    assert "the stain advice below" in r.stdout  # one frame: the advice is as shaky as the scale


def test_frames_of_two_sizes_are_two_set_ups():
    """Two cameras (or images resized apart) whose red cells read close: --scale refused, a warning without it."""
    rng = np.random.default_rng(3)
    frames = [make_field(rng, 640, 480, n_cells=4)[0] for _ in range(3)] + [make_field(rng, 360, 360, n_cells=2)[0]
                                                                          for _ in range(3)]
    with pytest.raises(site_lib.SiteError, match="2 sizes"):
        site_lib.calibrate(frames, input_px=96, model_rbc_px=MODEL_RBC_PX, scale=True)
    rec = site_lib.calibrate(frames, input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert rec["frame_sizes"] == ["360x360", "640x480"] and site_lib.validate(rec) == []
    assert any("more than one camera?" in line for line in site_lib.summary_lines(rec, "x"))
    assert "frame_sizes" not in site_lib.calibrate(frames[:3], input_px=96, model_rbc_px=MODEL_RBC_PX)
    # one camera's images cropped a few pixels apart (PBC: 360x360 and 360x363) are one size: --scale is fine
    alike = frames[3:] + [cv2.copyMakeBorder(f, 0, 3, 0, 0, cv2.BORDER_REFLECT) for f in frames[3:]]
    rec = site_lib.calibrate(alike, input_px=96, model_rbc_px=MODEL_RBC_PX, scale=True)
    assert rec["scale"]["use"] and "frame_sizes" not in rec
    assert site_lib.frame_sizes({(360, 360), (360, 363), (640, 480), (1024, 768)}) == ["1024x768", "360x360", "640x480"]


def test_calibrate_reads_the_lamp_and_the_grain_and_says_what_to_adjust():
    """A microscope whose lamp lights the middle (dark corners) and whose camera is grainy: calibrate reads the
    frames as field mode does (evened out, smoothed), so its scale is the evenly lit frames' one, records how far
    the light falls off and how noisy the frames are, and its advice names the lamp and the camera's gain."""
    from scopelite.train.corruptions import corrupt

    rng = np.random.default_rng(3)
    clean = [make_field(rng, 640, 480, n_cells=4)[0] for _ in range(5)]
    even = site_lib.calibrate(clean, input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert even["light"]["falloff"] == 0.0 and even["light"]["noisy_frames"] == 0
    assert "Koehler" not in even["advice"] and "gain" not in even["advice"]
    worse = [corrupt(corrupt(f, "vignette", 4, seed=i), "shot_noise", 4, seed=i) for i, f in enumerate(clean)]
    rec = site_lib.calibrate(worse, input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert rec["light"]["falloff"] > 0.3 and rec["light"]["uneven_frames"] == 5 and rec["light"]["noisy_frames"] == 5
    assert "Koehler" in rec["advice"] and "camera gain" in rec["advice"]
    assert "overexposed_frames_left_out" not in even and "exposure" not in even["advice"]
    assert abs(rec["scale"]["rbc_px"] / even["scale"]["rbc_px"] - 1) < 0.08, (rec["scale"], even["scale"])
    assert site_lib.validate(rec) == [] and json.loads(json.dumps(rec)) == rec
    lines = site_lib.summary_lines(rec, "site.json")
    assert any(line.startswith("light: falls off by") and "in 5 of 5 frames" in line for line in lines), lines
    assert any(line.startswith("light: even across the view") for line in site_lib.summary_lines(even, "s.json"))
    # two of five frames evened out, three lit evenly: the median frame falls off by 0 %, which the line read as
    # "falls off by 0 % across the view (median; 2 frame(s) evened out)" (a walk-through of session 37)
    mixed = site_lib.calibrate(worse[:2] + clean[2:], input_px=96, model_rbc_px=MODEL_RBC_PX)
    line = next(x for x in site_lib.summary_lines(mixed, "s.json") if x.startswith("light:"))
    assert mixed["light"]["falloff"] == 0.0 and "falls off by 0 %" not in line and "in 2 of 5 frames" in line, line


def test_calibrate_leaves_overexposed_frames_out_and_says_why():
    """A camera exposed too long clips the empty slide to white, and its background, white balance and stain
    distance would be the clipping's: calibrate leaves such frames out, says so and advises a shorter exposure;
    when every frame is overexposed it writes nothing and says what to fix (not "too few red cells")."""
    from scopelite.train.corruptions import corrupt

    rng = np.random.default_rng(4)
    clean = [make_field(rng, 640, 480, n_cells=4)[0] for _ in range(4)]
    bright = [corrupt(f, "brightness_up", 5, seed=i) for i, f in enumerate(clean)]
    even = site_lib.calibrate(clean, input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert "overexposed_frames_left_out" not in even and "exposure" not in even["advice"]
    mixed = site_lib.calibrate(clean[:2] + bright[2:], input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert mixed["frames"] == 2 and mixed["overexposed_frames_left_out"] == 2
    assert "2 frames overexposed" in mixed["advice"] and "shorten the camera's exposure" in mixed["advice"]
    assert mixed["background"] == site_lib.calibrate(clean[:2], input_px=96, model_rbc_px=MODEL_RBC_PX)["background"]
    assert any("2 overexposed frames" in line for line in site_lib.summary_lines(mixed, "site.json"))
    with pytest.raises(site_lib.SiteError) as e:
        site_lib.calibrate(bright + [np.full((480, 640, 3), 255, np.uint8)], input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert "4 of the 5 frames are overexposed" in str(e.value) and "shorten the camera's exposure" in str(e.value)


def test_calibrate_refuses_frames_of_pure_noise_and_writes_nothing(tmp_path):
    """Frames of camera noise (a lens cap at full gain, a broken cable) gave a site file with a 13 px "ruler" from 4
    specks, a stain distance of 7 and the advice to adapt the model. The red cells the ruler rests on cover 0.1-0.6 %
    of such a view in the median frame (a smear's fields: 5-40 %): nothing is written, and the Error says to check
    the camera. Real fields, generated ones here, still calibrate."""
    rng = np.random.default_rng(5)
    noise = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(5)]
    clean = [make_field(rng, 640, 480, n_cells=4)[0] for _ in range(3)]
    assert all(site_lib.measure_frame(f).red_cover >= 0.05 for f in clean)
    assert site_lib.calibrate(clean + noise[:2], input_px=96, model_rbc_px=MODEL_RBC_PX)["frames"] == 5
    # a crowded smear: few lone red cells for the ruler (cover 1-4.5 %), but no grain: calibrated, not refused
    from scopelite.train.synth import CLASS_NAMES, render_scene
    crowded = [render_scene(480, 640, [(CLASS_NAMES.index("neutrophil"), 320, 240)], 1.0, rng, 750) for _ in range(3)]
    assert site_lib.calibrate(crowded, input_px=96, model_rbc_px=MODEL_RBC_PX)["frames"] == 3
    with pytest.raises(site_lib.SiteError) as e:
        site_lib.calibrate(clean[:1] + noise, input_px=96, model_rbc_px=MODEL_RBC_PX)
    assert "do not look like a blood smear" in str(e.value)
    folder = tmp_path / "noise"
    folder.mkdir()
    for i, f in enumerate(noise):
        cv2.imwrite(str(folder / f"{i}.png"), f)
    out = tmp_path / "site.json"
    r = invoke_cli("celledge", "calibrate", str(folder), "--out", str(out))
    assert_one_line_error(r, "the frames do not look like a blood smear", "mostly noise", "Check the camera", code=2)
    assert not out.exists()


def test_calibration_reads_a_large_frame_as_watch_does():
    """A camera over 1280 px: watch searches a half-size copy; calibration read the whole frame, so the site file's
    ruler and stain distance were not the ones watch then saw (edge/frameread.py reads both)."""
    from scopelite.edge import field as field_lib
    from scopelite.edge import ood
    from scopelite.edge.classifier import FakeClassifier
    from scopelite.edge.watch import FieldScale, classify_field

    reference = ood.StainReference.from_json(load_sidecar(default_model()).stain_reference)
    frame = make_field(np.random.default_rng(3), 1920, 1440, n_cells=6, scale=3.0)[0]
    measured = site_lib.measure_frame(frame, reference)
    cfg = field_lib.FieldConfig()
    sc = load_sidecar(default_model())
    clf = FakeClassifier(sc.labels, sc.input)
    _, info = classify_field(frame, clf, cfg, 0.5, scale=FieldScale(cfg, every=1), reference=reference)
    assert measured.rbc_px is not None and info["frame_rbc_px"] == round(measured.rbc_px, 1)
    assert info["stain"]["distance"] == measured.distance


def test_a_site_file_of_another_model_is_said(site_file, fields, tmp_path):
    """A site calibrated with the shipped model, used with an adapted one: accepted silently, its stain verdict
    the other model's."""
    out, _ = site_file
    rec = json.loads(out.read_text())
    shipped = load_sidecar(default_model())
    assert rec["model"]["sha256"] == shipped.sha256 and rec["model"]["source_sha256"] == shipped.provenance.source.sha256
    img = str(sorted(fields.glob("*.png"))[0])
    r = invoke_cli("celledge", "classify", "--site", str(out), img)
    assert r.returncode == 0 and "was calibrated with" not in r.stderr, r.stderr[-2000:]
    rec["model"]["sha256"] = "0" * 64  # as if made with the Edge TPU build of the same model: the same model
    tpu = tmp_path / "tpu-site.json"
    tpu.write_text(json.dumps(rec))
    r = invoke_cli("celledge", "classify", "--site", str(tpu), img)
    assert r.returncode == 0 and "was calibrated with" not in r.stderr, r.stderr[-2000:]
    rec["model"]["source_sha256"] = "0" * 64  # as if made with another model of the same input size
    other = tmp_path / "other-model-site.json"
    other.write_text(json.dumps(rec))
    r = invoke_cli("celledge", "classify", "--site", str(other), img)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{other} was calibrated with bloodcell_int8.tflite (sha256 000000000000), not this model" in r.stderr
