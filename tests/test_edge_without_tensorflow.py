"""scopelite.edge must import and run with only the `edge` extra: no TensorFlow, no Keras."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import importlib, importlib.abc, json, pkgutil, sys

    BLOCKED = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "torch")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked on the device: {name}")
            return None

    sys.meta_path.insert(0, Block())
    import scopelite.edge
    mods = [m.name for m in pkgutil.iter_modules(scopelite.edge.__path__)]
    for m in mods:
        importlib.import_module(f"scopelite.edge.{m}")
    from scopelite.edge.classifier import LiteRTClassifier
    from scopelite.edge.preprocess import prepare
    from scopelite.edge.sources import read_image_rgb
    clf = LiteRTClassifier(sys.argv[1])
    scores = clf.classify(prepare(read_image_rgb(sys.argv[2]), clf.input_spec)[None])
    loaded = sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED)
    print(json.dumps({"modules": mods, "scores": scores.tolist(), "loaded": loaded}))
''')


def test_edge_runs_with_tensorflow_blocked(tiny_run, synth_dir):
    img = next((synth_dir / "crops" / "lymphocyte").glob("*.png"))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_run["tflite"]), str(img)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout.splitlines()[-1])
    assert {"bundle", "runtime", "classifier", "watch", "cli", "sources"} <= set(out["modules"])
    assert out["loaded"] == []
    assert len(out["scores"][0]) == 8 and abs(sum(out["scores"][0]) - 1) < 0.05


def test_blocker_really_blocks():
    # The guard above must be able to fail: importing TensorFlow under it errors.
    r = subprocess.run([sys.executable, "-c", SCRIPT.split("sys.meta_path.insert(0, Block())")[0]
                        + "sys.meta_path.insert(0, Block())\nimport scopelite.train._keras\n"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "blocked on the device" in r.stderr
