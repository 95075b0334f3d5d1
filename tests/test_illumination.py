"""Uneven illumination (edge/illumination.py): read from the empty slide, divided out only when it is uneven."""
import numpy as np
import pytest

from scopelite.edge import illumination
from scopelite.edge.illumination import flatten, lamp_profile
from scopelite.train.corruptions import corrupt
from scopelite.train.synth import make_field


def _field(seed=0, w=640, h=480):
    return make_field(np.random.default_rng(seed), w, h)[0]


def _background_spread(img: np.ndarray) -> float:
    """How far the empty slide's brightness falls off over the frame: 1 - (darkest / brightest) of the 90th
    percentile of grey in each of 4x4 blocks."""
    grey = img.mean(axis=2)
    h, w = grey.shape
    v = [np.percentile(grey[i * h // 4:(i + 1) * h // 4, j * w // 4:(j + 1) * w // 4], 90)
         for i in range(4) for j in range(4)]
    return 1 - min(v) / max(v)


def test_an_evenly_lit_frame_is_returned_as_it_is():
    f = _field()
    out, falloff = flatten(f)
    assert out is f and falloff == 0.0 and lamp_profile(f) is None


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_a_vignetted_frame_is_lit_evenly_again(severity):
    f = _field(1)
    v = corrupt(f, "vignette", severity, seed=2)
    out, falloff = flatten(v)
    assert falloff > illumination.UNEVEN
    assert _background_spread(v) > 0.15
    assert _background_spread(out) < 0.12, (_background_spread(v), _background_spread(out))
    assert abs(float(np.median(out)) - float(np.median(f))) < 20  # back near the evenly lit brightness (median 225)


def test_black_outside_a_field_stop_stays_dark():
    """A round field stop (a bright disc, black around it: eyepiece and phone adaptors) is not a lamp that
    falls off: the correction brightens at most ``1 / FLOOR`` times, so the black around stays near black
    instead of grey noise (it reached a mean of 126 of 255 before the floor)."""
    f = _field(5)
    yy, xx = np.mgrid[:480, :640]
    disc = (xx - 320) ** 2 + (yy - 240) ** 2 <= 200 ** 2
    stop = (f * disc[..., None]).astype(np.uint8)
    stop[~disc] = np.random.default_rng(0).integers(0, 8, (int((~disc).sum()), 3))  # a dark sensor's noise
    out, falloff = flatten(stop)
    assert out[~disc].mean() <= stop[~disc].mean() / illumination.FLOOR + 1
    assert out[~disc].mean() < 60


def test_field_mode_finds_the_same_cells_in_a_vignetted_frame():
    """Field mode divides the lamp's profile out before it reads anything: a frame with dark corners gives the
    cells and the scale the evenly lit frame gives, and its record says the light was uneven. Without the
    correction the same frame's ruler fails (the test can fail)."""
    from scopelite.edge import field as field_lib
    from scopelite.edge.bundle import CLASS_NAMES, InputSpec
    from scopelite.edge.classifier import FakeClassifier
    from scopelite.edge.watch import classify_field

    clf = FakeClassifier(list(CLASS_NAMES), InputSpec(96, 96, rbc_px=18.0))
    cfg = field_lib.FieldConfig(model_rbc_px=18.0, input_px=96)
    f = _field(3)

    def whites(cells):
        return sorted(tuple(c["center"]) for c in cells if c["kind"] == "white")

    plain, plain_scale = classify_field(f, clf, cfg, 0.5)
    assert "uneven_light" not in plain_scale
    for severity, extra in ((3, 0), (5, 2)):  # at 5 the corners are a sixth as bright: their noise, 6x, may add one
        v = corrupt(f, "vignette", severity, seed=13)
        dark, dark_scale = classify_field(v, clf, cfg, 0.5)
        assert dark_scale["uneven_light"] > 0.4
        assert abs(dark_scale["rbc_px"] - plain_scale["rbc_px"]) < 0.05 * plain_scale["rbc_px"]
        near = [p for p in whites(dark) if min(np.hypot(p[0] - q[0], p[1] - q[1]) for q in whites(plain)) < 10]
        assert len(near) == len(whites(plain)) and len(whites(dark)) <= len(whites(plain)) + extra
    uneven = illumination.UNEVEN
    try:
        illumination.UNEVEN = 2.0  # never corrected
        off, off_scale = classify_field(corrupt(f, "vignette", 5, seed=13), clf, cfg, 0.5)
    finally:
        illumination.UNEVEN = uneven
    assert abs(off_scale["rbc_px"] - plain_scale["rbc_px"]) > 0.05 * plain_scale["rbc_px"] or whites(off) != whites(plain)


def test_a_session_keeps_the_crops_field_mode_read(tmp_path):
    """The session's crop of a cell counted on an unevenly lit frame is cut from the frame as field mode read
    it (lit evenly), not from the dark-cornered original: review and self-training see what the model saw."""
    import cv2
    import json

    from conftest import invoke_cli
    from scopelite.edge.field import crop_at
    from scopelite.edge.session import Session

    v = corrupt(_field(6), "vignette", 4, seed=9)
    fields = tmp_path / "fields"
    fields.mkdir()
    cv2.imwrite(str(fields / "0.png"), cv2.cvtColor(v, cv2.COLOR_RGB2BGR))
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["scale"]["uneven_light"] > 0.3
    summary = lines[-1]["summary"]
    assert summary["uneven_light_frames"] == 1 and summary["noisy_frames"] == 0
    assert "1 of 1 frames were lit unevenly" in r.stderr and "Koehler" in r.stderr
    sid = summary["session"]["id"]
    session = Session.load(tmp_path / "s" / sid)
    cell = session.cells[0]
    box = next(c["box"] for c in lines[0]["cells"] if c["center"] == cell["center"])
    kept = cv2.cvtColor(cv2.imread(str(tmp_path / "s" / sid / "crops" / f"{cell['id']}.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(kept, crop_at(flatten(v)[0], box))


def test_overexposure_is_read_from_the_pure_white_share_of_the_frame():
    f = _field(1)
    assert illumination.overexposed(f) == 0.0  # a well exposed field has no pure white
    bright = corrupt(f, "brightness_up", 5, seed=1)  # +80 levels: the empty slide clipped to white
    assert illumination.overexposed(bright) > 0.6
    speck = f.copy()
    speck[:40, :40] = 255  # a small glare is not an overexposed frame
    assert illumination.overexposed(speck) == 0.0
    assert illumination.overexposed(np.zeros((0, 0, 3), np.uint8)) == 0.0
    assert illumination.overexposed(np.full((48, 64, 3), 255, np.uint8)) == 0.0  # all white: no slide, no colour
    assert illumination.overexposed(bright.astype(np.uint16) * 257) == 0.0  # only 8-bit frames are read
    assert illumination.overexposed(np.dstack([bright, np.full(bright.shape[:2], 255, np.uint8)])) > 0.6  # RGBA


@pytest.mark.parametrize("corruption,severity,key,counted,said", [
    ("brightness_up", 5, "overexposed", "overexposed_frames", "2 of 3 frames were overexposed"),
    ("shot_noise", 4, "noise", "noisy_frames", "2 of 3 frames were noisy"),
])
def test_watch_says_when_most_frames_had_a_camera_problem(tmp_path, corruption, severity, key, counted, said):
    """Overexposed (PBC's fields clipped so: 114 of 160 right, 155 exposed well) or grainy frames: each line's
    scale says so, and the summary counts them and says what to adjust."""
    import json

    import cv2

    from conftest import invoke_cli

    fields = tmp_path / "fields"
    fields.mkdir()
    for i in range(2):
        bad = corrupt(_field(i), corruption, severity, seed=i)
        cv2.imwrite(str(fields / f"{i}.png"), cv2.cvtColor(bad, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(fields / "2.png"), cv2.cvtColor(_field(9), cv2.COLOR_RGB2BGR))
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(key in x["scale"]) for x in lines[:-1]] == [True, True, False]
    assert lines[-1]["summary"][counted] == 2 and said in r.stderr
