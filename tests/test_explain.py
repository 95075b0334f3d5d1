import json
from pathlib import Path

import numpy as np

from conftest import run_cli


def test_grad_cam_writes_overlays_that_agree_with_the_model(tiny_run, synth_dir, tmp_path):
    r = run_cli("celltrain", "explain", str(tiny_run["dir"]), str(synth_dir / "crops" / "monocyte"),
                "--out", str(tmp_path / "cam"))
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 3 and all((tmp_path / "cam" / f"{x}_gradcam.png").is_file()
                                  for x in [p.split("/")[-1][:-4] for p in (rec["image"] for rec in recs)])
    c = run_cli("celledge", "classify", str(tiny_run["tflite"]), str(synth_dir / "crops" / "monocyte"), "--json")
    int8 = {json.loads(x)["path"]: json.loads(x)["label"] for x in c.stdout.splitlines()}
    assert sum(int8[rec["image"]] == rec["label"] for rec in recs) >= 2


def test_grad_cam_is_a_normalised_map_for_the_chosen_class(tiny_run):
    from scopelite.train._keras import keras
    from scopelite.train.explain import grad_cam
    from scopelite.train.synth import make_crops

    model = keras.models.load_model(tiny_run["keras"], compile=False)
    imgs, labels = make_crops(2, size=32, seed=9)
    for img in imgs:
        cam, c, probs = grad_cam(model, img)
        assert cam.shape == (32, 32) and 0 <= cam.min() and cam.max() <= 1.0 + 1e-6
        assert c == int(np.argmax(probs))
        other, c2, _ = grad_cam(model, img, class_index=(c + 1) % 8)
        assert c2 == (c + 1) % 8 and not np.allclose(cam, other)


def test_images_of_one_name_get_their_own_overlays_and_an_unreadable_one_stops_nothing(tiny_run, synth_dir, tmp_path):
    """a/cell.jpg, a/cell.png and b/cell.jpg all wrote cell_gradcam.png (one file left, three lines naming it),
    and the first unreadable image ended the command with some overlays written and the rest not."""
    import shutil

    from conftest import invoke_cli

    crop = next((synth_dir / "crops" / "monocyte").iterdir())
    for rel in ("a/cell.png", "a/cell.jpg", "b/cell.png", "c/other.png"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crop, tmp_path / "in" / rel)
    (tmp_path / "in" / "a" / "broken.png").write_bytes(b"not an image")
    r = invoke_cli("celltrain", "explain", str(tiny_run["dir"]), str(tmp_path / "in"), "--out", str(tmp_path / "x"))
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    written = [x["overlay"] for x in recs if "overlay" in x]
    assert len(written) == 4 and len(set(written)) == 4 and all(Path(w).is_file() for w in written)
    assert str(tmp_path / "x" / "other_gradcam.png") in written  # a name of its own keeps the plain one
    assert r.returncode != 0 and "1 of 5 images could not be read" in r.stderr.splitlines()[-1], r.stderr[-1000:]
    assert "the others' overlays are written" in r.stderr
    r = invoke_cli("celltrain", "explain", str(tiny_run["dir"]), str(tmp_path / "in" / "a" / "broken.png"),
                   "--out", str(tmp_path / "y"))
    assert r.returncode != 0 and "1 of 1 images" in r.stderr and "others" not in r.stderr  # there are none


def test_images_of_a_kind_not_read_are_named_not_left_out_silently(tiny_run, synth_dir, tmp_path):
    """A folder's .gif images were left out without a word (and a folder of only GIFs wrote nothing, exit 0)."""
    import shutil

    from conftest import invoke_cli

    crop = next((synth_dir / "crops" / "monocyte").iterdir())
    (tmp_path / "gifs").mkdir()
    (tmp_path / "gifs" / "cell.gif").write_bytes(b"GIF89a")
    r = invoke_cli("celltrain", "explain", str(tiny_run["dir"]), str(tmp_path / "gifs"), "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and r.stderr.splitlines()[-1].startswith("Error: no images in ")
    assert "1 image of a kind not read (.gif" in r.stderr and "Traceback" not in r.stderr
    shutil.copy(crop, tmp_path / "gifs" / "cell.png")
    r = invoke_cli("celltrain", "explain", str(tiny_run["dir"]), str(tmp_path / "gifs"), "--out", str(tmp_path / "x"))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    assert "1 image of a kind not read (.gif: " in r.stderr and "cell.gif" in r.stderr
