import json

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
