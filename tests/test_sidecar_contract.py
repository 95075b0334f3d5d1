"""The sidecar contract whole: typed provenance, one builder, no build-machine paths, schema 1 still read."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, invoke_cli
from scopelite.edge.bundle import (CLASS_NAMES, BundleError, Compression, FileRef, Gate, InputSpec, Machine,
                                   Provenance, Quantization, SourceModel, TensorSpec, TrainingData, TrainingRun,
                                   build_sidecar, copy_bundle, derive_sidecar, load_sidecar, read_sidecar_file,
                                   sidecar_path, source_path, write_sidecar)
from scopelite.edge.packaged import default_model
from scopelite.edge.provenance import absolute_paths, is_absolute, portable

ROOT = Path(__file__).resolve().parents[1]
V1 = Path(__file__).parent / "data" / "sidecar_v1"  # sidecars as scopelite wrote them before schema 2
V2 = Path(__file__).parent / "data" / "sidecar_v2"  # the same shipped model's sidecar rewritten in schema 2
SHA = "ab" * 32


def _input(**kw):
    spec = dict(height=32, width=32, channels=3, dtype="uint8", layout="NHWC", color="RGB", value_range=(0, 255),
                normalization="in-graph", crop="center", interpolation="area", quantization=Quantization(1.0, 0),
                rbc_px=6.0)
    spec.update(kw)
    return InputSpec(**spec)


def _training(**kw):
    t = dict(run="pbc-v1", config={"arch": "tiny", "image_size": 32, "data": "../data/pbc96", "seed": 3},
             data=TrainingData("class folders at ../data/pbc96", False, {"neutrophil": 10, "platelet": 4}),
             split=FileRef("split.json", SHA), seed=3, epochs=12,
             machine=Machine(cpu="AMD EPYC", cores=2, arch="x86_64", python="3.11.7", host="vm"),
             extra={"replicas": 1})
    t.update(kw)
    return TrainingRun(**t)


def _compression(**kw):
    c = dict(variant="int8", method="ptq", quantization="post-training full-integer",
             config={"representative": 256, "seed": 0}, representative=256,
             gate=Gate(True, 1.0, 2.0, -0.08, 0.161, ()), op_counts={"CONV_2D": 3}, size_bytes=18,
             machine=Machine(cpu="AMD EPYC"), extra={"qat_requested": False})
    c.update(kw)
    return Compression(**c)


def _build(path, provenance=None, **kw):
    args = dict(format="tflite", labels=CLASS_NAMES, input=_input(),
                output=TensorSpec("uint8", Quantization(1 / 256, 0)),
                runtimes=("cpu",), metrics={"split": "test", "clean": {"accuracy": 0.9}},
                provenance=provenance or Provenance(tools={"scopelite": "0.1.0"},
                                                    source=SourceModel("model.keras", SHA, "keras"),
                                                    training=_training(), compression=_compression()))
    args.update(kw)
    return build_sidecar(path, **args)


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "run" / "int8" / "model_int8.tflite"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not really a model")
    return p


# --------------------------------------------------------------------------- typed round trip


def test_typed_provenance_round_trips_through_the_file(model_file):
    sc = _build(model_file)
    write_sidecar(model_file, sc)
    back = load_sidecar(model_file)
    assert back == sc
    p = back.provenance
    assert isinstance(p.training, TrainingRun) and isinstance(p.compression.gate, Gate)
    assert p.training.split == FileRef("split.json", SHA) and p.training.machine.cpu == "AMD EPYC"
    assert p.compression.representative == 256 and p.source.file == "model.keras"
    assert Provenance.from_dict(p.to_dict()) == p
    raw = json.loads(sidecar_path(model_file).read_text())
    assert list(raw)[:2] == ["schema", "schema_version"] and raw["schema_version"] == 2
    # every preprocessing field is written, the null ones too
    assert set(raw["input"]) == {f.name for f in dataclasses.fields(InputSpec)}


def test_derived_and_copied_bundles_go_through_the_builder(model_file):
    write_sidecar(model_file, _build(model_file, views=8))  # an adapted model's advice travels with every copy
    dest = model_file.with_name("model.tflite")
    copied = copy_bundle(model_file, dest, approved_from=model_file.name)
    assert load_sidecar(dest) == copied
    assert copied.provenance.copied_from == model_file.name
    assert copied.provenance.compression.approved_from == model_file.name
    assert copied.metrics == load_sidecar(model_file).metrics
    tpu = model_file.with_name("model_edgetpu.tflite")
    tpu.write_bytes(b"compiled")
    prov = dataclasses.replace(copied.provenance, cpu_model="model.tflite", copied_from=None)
    sc = derive_sidecar(copied, tpu, runtimes=("edgetpu",), provenance=prov)
    assert sc.file == "model_edgetpu.tflite" and sc.runtimes == ("edgetpu",)
    assert sc.provenance.cpu_model == "model.tflite"
    assert copied.views == sc.views == 8 and json.loads(sidecar_path(dest).read_text())["views"] == 8


def test_the_compressed_model_keeps_the_views_its_training_advised(tiny_run, tmp_path):
    """cellcompress's sidecar of each variant carries the Keras model's ``views`` (celltrain fit --preset few-shot
    writes 8): the int8 model on the device is run as its training advised."""
    from scopelite.compress.pipeline import CompressConfig, tflite_sidecar

    src = dataclasses.replace(load_sidecar(tiny_run["keras"]), views=4)
    out = tmp_path / "model.tflite"
    shutil.copy(tiny_run["tflite"], out)
    cfg = CompressConfig(model=str(tiny_run["keras"]), out=str(tmp_path))
    assert tflite_sidecar(out, src, tiny_run["keras"], "int8", {}, cfg, {}).views == 4
    assert tflite_sidecar(out, load_sidecar(tiny_run["keras"]), tiny_run["keras"], "int8", {}, cfg, {}).views == 1


# --------------------------------------------------------------------------- schema 1


def test_the_shipped_sidecar_as_it_was_loads_to_the_same_values_as_it_is():
    """pbc-v15's sidecar (shipped until session 12) as schema 1 wrote it and as schema 2 rewrote it: equal."""
    rewritten = V2 / "bloodcell_int8.json"
    old = read_sidecar_file(V1 / "bloodcell_int8.json")
    new = read_sidecar_file(rewritten)
    assert json.loads(rewritten.read_text())["schema_version"] == 2
    assert old == new
    raw_old = json.loads((V1 / "bloodcell_int8.json").read_text())
    for key in ("labels", "output", "stain_reference", "sha256"):
        assert raw_old[key] == new.to_json()[key], key
    assert new.input.rbc_px == raw_old["input"]["rbc_px"] == 18.0
    assert new.metrics["clean"] == raw_old["metrics"]["clean"] and new.metrics["gate"] == raw_old["metrics"]["gate"]
    p = raw_old["provenance"]
    assert new.provenance.training.config == p["train_config"]
    assert new.provenance.compression.config == p["compress_config"]
    assert new.provenance.compression.gate.to_dict() == p["gate"]
    assert new.provenance.source == SourceModel("model.keras", p["source"]["sha256"], "keras")
    assert new.provenance.notes == {k: p[k] for k in ("rbc_px_measured", "stain_reference_measured")}
    # every number of the old file is in the new one (the new one adds copies: seed, epochs, representative, cores)
    raw_new = json.loads(rewritten.read_text())
    raw_old.pop("schema_version"), raw_new.pop("schema_version")
    lost = _numbers(raw_old) - _numbers(raw_new)
    assert not lost, lost


def _numbers(x, out=None):
    from collections import Counter

    out = Counter() if out is None else out
    if isinstance(x, dict):
        for v in x.values():
            _numbers(v, out)
    elif isinstance(x, list):
        for v in x:
            _numbers(v, out)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        out[repr(x)] += 1
    return out


def test_a_schema_1_training_sidecar_is_upgraded_on_read():
    sc = read_sidecar_file(V1 / "keras_model.json")
    raw = json.loads((V1 / "keras_model.json").read_text())
    t = sc.provenance.training
    assert t.run == "pbc-dom1" and t.split == FileRef("split.json", None)
    assert t.extra == {k: raw["provenance"][k] for k in ("replicas", "resumed", "weight_averaging")}
    assert t.config["out"] == "pbc-dom1" and t.config["weights"] == "bloodcell_int8.tflite"  # absolute in v1
    assert t.data.description == "class folders at pbc96" and t.data.counts == raw["provenance"]["data"]["counts"]
    assert sc.provenance.compression is None and sc.provenance.source is None
    assert not absolute_paths(sc.to_json(), "sidecar")


# --------------------------------------------------------------------------- no build-machine paths


@pytest.mark.parametrize("text, expected", [
    ("/work/runs/pbc/model.keras", "model.keras"),
    ("class folders at /work/shared/data/pbc96 (synthetic)", "class folders at pbc96 (synthetic)"),
    ("C:\\Users\\lab\\pbc96", "pbc96"),
    ("~/data/pbc96", "pbc96"),
    ("../shared/data/pbc96", "../shared/data/pbc96"),
    ("n/a", "n/a"),
    ("one of 16 corruptions at severity 1-5, 1/5 of them", "one of 16 corruptions at severity 1-5, 1/5 of them"),
    ("see https://coral.ai/docs/edgetpu/compiler", "see https://coral.ai/docs/edgetpu/compiler"),
    ("TPU/CPU ops", "TPU/CPU ops"),
])
def test_portable_reduces_absolute_paths_only(text, expected):
    assert portable(text) == expected
    assert is_absolute(text) == (text != expected)


def test_the_builder_strips_the_build_machines_paths(model_file):
    training = _training(config={"out": "/home/lab/runs/pbc-v1", "data": "/home/lab/data/pbc96", "image_size": 32},
                         data=TrainingData("class folders at /home/lab/data/pbc96", False, None),
                         extra={"weights": [{"path": "/home/lab/runs/a/model.keras"}]})
    sc = _build(model_file, Provenance(training=training, notes={"how": "measured on /mnt/scratch/crops"}),
                metrics={"data": "class folders at /home/lab/data/pbc96"})
    write_sidecar(model_file, sc)
    text = sidecar_path(model_file).read_text()
    assert "/home/lab" not in text and "/mnt/" not in text
    t = load_sidecar(model_file).provenance.training
    assert t.config["data"] == "pbc96" and t.config["out"] == "pbc-v1" and t.data.description.endswith("at pbc96")


def test_a_sidecar_with_an_absolute_path_is_refused(model_file):
    sc = _build(model_file)
    bad = dataclasses.replace(sc, provenance=dataclasses.replace(sc.provenance, notes={"src": "/work/runs/x/y"}))
    with pytest.raises(BundleError, match=r"provenance\.notes\.src holds an absolute path"):
        write_sidecar(model_file, bad)
    assert not sidecar_path(model_file).exists()  # nothing half-written
    write_sidecar(model_file, sc)
    d = json.loads(sidecar_path(model_file).read_text())
    d["provenance"]["source"]["file"] = "/work/runs/pbc-v15/model.keras"  # as schema 1 wrote it
    sidecar_path(model_file).write_text(json.dumps(d))
    with pytest.raises(BundleError, match="absolute path of the machine that built it"):
        load_sidecar(model_file)


# --------------------------------------------------------------------------- the source model, found by name


def test_the_source_is_found_beside_the_bundle_or_above_by_hash(model_file):
    keras = model_file.parent.parent / "model.keras"
    keras.write_bytes(b"the float model")
    from scopelite.edge.bundle import sha256_file

    sc = _build(model_file, Provenance(source=SourceModel("model.keras", sha256_file(keras), "keras")))
    assert source_path(model_file, sc) == keras
    keras.write_bytes(b"another float model")  # same name, other bytes: not the source
    with pytest.raises(BundleError, match=r"made from model\.keras .*neither beside it nor in the folder above"):
        source_path(model_file, sc)
    with pytest.raises(BundleError, match="records no source"):
        source_path(model_file, _build(model_file, Provenance()))


def test_bench_without_the_source_says_what_to_give(model_file, tmp_path):
    write_sidecar(model_file, _build(model_file))  # its source model.keras is not on this machine
    r = invoke_cli("cellcompress", "bench", str(model_file), "--out", str(tmp_path / "bench"))
    assert_one_line_error(r, "made from model.keras", "pass the run's model.keras")


# --------------------------------------------------------------------------- bad sidecars: one line each


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["input"].pop("normalization"), "missing field 'normalization'"),
    (lambda d: d["input"].pop("rbc_px"), "missing field 'rbc_px' (write null"),
    (lambda d: d["input"].update(normalization="imagenet"), "normalization 'imagenet'"),
    (lambda d: d["provenance"].update(config={}), "unknown field 'config'"),
    (lambda d: d["provenance"]["training"].pop("run"), "provenance.training: missing field 'run'"),
    (lambda d: d["provenance"]["training"]["split"].update(file="runs/split.json"), "file name beside the bundle"),
    (lambda d: d["provenance"]["compression"].update(method="magic"), "method 'magic'"),
    (lambda d: d["provenance"]["compression"].update(approved_from=5), "'approved_from' must be str"),
    (lambda d: d["provenance"]["compression"]["gate"].pop("passed"), "compression.gate: missing field 'passed'"),
    (lambda d: d["provenance"]["source"].update(sha256="xyz"), "64 lower-case hex"),
    (lambda d: d["provenance"]["training"]["machine"].update(cores="2"), "'cores' must be int"),
    (lambda d: d.update(schema_version=3), "reads 1, 2"),
    (lambda d: d.update(views=3), "views must be one of 1, 2, 4, 8"),
    (lambda d: d.update(views=True), "views must be one of 1, 2, 4, 8"),
])
def test_bad_sidecars_get_one_clear_line(model_file, mutate, message):
    write_sidecar(model_file, _build(model_file))
    p = sidecar_path(model_file)
    d = json.loads(p.read_text())
    mutate(d)
    p.write_text(json.dumps(d))
    with pytest.raises(BundleError, match=re.escape(message)):
        load_sidecar(model_file)
    r = invoke_cli("celledge", "info", str(model_file))
    assert_one_line_error(r, message)


def test_a_broken_schema_1_sidecar_is_one_line_too(model_file):
    shutil.copy(V1 / "bloodcell_int8.json", sidecar_path(model_file))
    d = json.loads(sidecar_path(model_file).read_text())
    d["provenance"]["train_config"] = "not an object"
    sidecar_path(model_file).write_text(json.dumps(d))
    with pytest.raises(BundleError, match="version-1 sidecar that cannot be read"):
        read_sidecar_file(sidecar_path(model_file))


# --------------------------------------------------------------------------- one builder


WRITER_DIRS = ("train", "compress", "edge", "benchmarks", "tools")


def test_only_the_bundle_module_makes_or_writes_sidecars():
    """Every writer (celltrain fit/average/import, cellcompress int8/QAT/edgetpu/approve, fixtures, tools) gets
    its sidecar from bundle.build_sidecar / derive_sidecar / copy_bundle and writes it with write_sidecar."""
    offenders = []
    for d in WRITER_DIRS:
        for f in sorted((ROOT / d).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            if rel in ("edge/bundle.py", "edge/bundle_v1.py", "edge/provenance.py"):
                continue
            text = f.read_text()
            for pattern, why in ((r"\bSidecar\(", "constructs a Sidecar"),
                                 (r"replace\(\s*(sc|base|sidecar|side)\s*,", "edits a Sidecar by dataclasses.replace"),
                                 (r"sidecar_path\([^)]*\)\s*\.write_|write_(json|bytes)_atomic\(\s*sidecar_path",
                                  "writes a sidecar file itself"),
                                 (r"[\"'](split_file|train_config|compress_config)[\"']\s*:",
                                  "writes a schema-1 provenance key")):
                if re.search(pattern, text):
                    offenders.append(f"{rel}: {why}")
    assert not offenders, offenders


def test_the_tiny_runs_sidecars_are_typed_and_portable(tiny_run):
    keras, tflite = load_sidecar(tiny_run["keras"]), load_sidecar(tiny_run["tflite"])
    t = keras.provenance.training
    assert t.run == "run" and t.split.file == "split.json" and t.epochs == 16 and t.machine.cpu
    assert t.split.sha256 == __import__("hashlib").sha256((tiny_run["dir"] / "split.json").read_bytes()).hexdigest()
    assert keras.input.normalization == "in-graph" and keras.input.dtype == "float32" and keras.input.rbc_px
    assert tflite.provenance.training == t  # carried from the Keras bundle, whole
    c = tflite.provenance.compression
    assert c.variant in ("int8", "qat_int8") and c.representative and c.gate.passed
    assert tflite.input == dataclasses.replace(keras.input, dtype="uint8", quantization=tflite.input.quantization)
    for path in (tiny_run["keras"], tiny_run["tflite"], tiny_run["dir"] / "int8" / "model_int8.tflite"):
        text = sidecar_path(path).read_text()
        assert str(tiny_run["dir"].parent) not in text, path  # the tmp folder the run was made in
        assert not absolute_paths(json.loads(text), "sidecar"), path


def test_a_runs_split_and_data_are_checked_against_its_sidecar(tmp_path):
    from scopelite.edge.bundle import sha256_file
    from scopelite.edge.errors import UserError
    from scopelite.train.run import heldout_data, run_config

    run = tmp_path / "pbc-v1"
    run.mkdir()
    keras = run / "model.keras"
    keras.write_bytes(b"a float model")
    (run / "split.json").write_text('{"seed": 3}')
    local = {"arch": "tiny", "image_size": 32, "data": str(tmp_path / "gone" / "pbc96"), "seed": 3}
    (run / "config.json").write_text(json.dumps(local))
    training = _training(config=local, split=FileRef("split.json", sha256_file(run / "split.json")))
    sc = _build(keras, Provenance(training=training), format="keras", runtimes=("keras",),
                input=_input(dtype="float32", quantization=None), output=TensorSpec("float32", None))
    assert sc.provenance.training.config["data"] == "pbc96"  # the sidecar names the folder only...
    assert run_config(sc, keras) == local  # ...the run folder's config.json keeps the path on this machine
    with pytest.raises(UserError, match=r"trained on \(.*pbc96\) is not here; pass --data"):
        heldout_data(sc, keras, None)
    (run / "split.json").write_text('{"seed": 4}')
    with pytest.raises(UserError, match="not the split model.keras was trained with"):
        heldout_data(sc, keras, None)


def test_a_sidecars_damaged_training_options_are_one_line_not_a_traceback(tmp_path):
    """evaluate, choose, average, cellcompress and bench read the run's options from its sidecar: an image_size of
    "x", null or missing, or data: 5, was a KeyError or TypeError traceback; another image_size than the model's
    input scored images of the wrong size."""
    from scopelite.edge.errors import UserError
    from scopelite.train.run import run_config

    keras = tmp_path / "model.keras"
    keras.write_bytes(b"a float model")
    good = {"arch": "tiny", "image_size": 32, "data": "pbc96", "seed": 3}
    for config, said in ((good, None), ({**good, "image_size": "x"}, "image_size: 'x' is not a whole number"),
                         ({**good, "image_size": None}, "image_size is null"),
                         ({k: v for k, v in good.items() if k != "image_size"}, "image_size is missing"),
                         ({**good, "image_size": 48}, "image_size 48 is not the model's input, 32 px"),
                         ({**good, "data": 5}, "data: 5 is not a name")):
        sc = _build(keras, Provenance(training=_training(config=config)), format="keras", runtimes=("keras",),
                    input=_input(dtype="float32", quantization=None), output=TensorSpec("float32", None))
        if said is None:
            assert run_config(sc, keras) == good
            continue
        with pytest.raises(UserError, match=re.escape(said)):
            run_config(sc, keras)


def test_info_without_a_model_describes_the_packaged_one():
    """As classify, watch and calibrate: no MODEL is the packaged model."""
    r = invoke_cli("celledge", "info")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"classes (8): {', '.join(CLASS_NAMES)}" in r.stdout and "ops: CONV_2D" in r.stdout
    packaged = json.loads(sidecar_path(default_model()).read_text())["metrics"]
    assert f"accuracy: {100 * packaged['clean']['accuracy']:.2f} %" in r.stdout and "gate: passed" in r.stdout
    r = invoke_cli("celledge", "info", "--json")
    shown = json.loads(r.stdout)["sidecar"]
    assert shown["labels"] == list(CLASS_NAMES) and shown["format"] == "tflite"
    assert shown["input"] == json.loads(sidecar_path(default_model()).read_text())["input"]


def test_a_model_copied_under_another_name_with_its_sidecar_loads(tmp_path):
    """README's install step: bloodcell_int8.tflite/.json copied as model.tflite/.json is the same model (the hash
    says so); a sidecar of another model under the new name is refused, saying which model it describes."""
    src = default_model()
    shutil.copy(src, tmp_path / "model.tflite")
    shutil.copy(sidecar_path(src), tmp_path / "model.json")
    assert load_sidecar(tmp_path / "model.tflite").file == src.name
    r = invoke_cli("celledge", "info", str(tmp_path / "model.tflite"))
    assert r.returncode == 0 and "cpu: works here" in r.stdout, r.stderr[-2000:]
    (tmp_path / "model.tflite").write_bytes(src.read_bytes()[:-4] + b"\0\0\0\0")  # another model, same sidecar
    r = invoke_cli("celledge", "info", str(tmp_path / "model.tflite"))
    assert_one_line_error(r, f"describes '{src.name}', and model.tflite is not that file", "damaged")
    with pytest.raises(BundleError, match="rename the model back"):
        load_sidecar(tmp_path / "model.tflite", check_hash=False)
    shutil.copy(src, tmp_path / "model.keras")  # the right bytes under the wrong extension
    shutil.copy(sidecar_path(src), tmp_path / "model.json")
    assert_one_line_error(invoke_cli("celledge", "info", str(tmp_path / "model.keras")),
                          "a .tflite file", "its own extension back")


def test_a_sidecar_or_an_image_given_as_the_model_is_named_so(tmp_path):
    img = tmp_path / "cell.png"
    img.write_bytes(b"\x89PNG")
    assert_one_line_error(invoke_cli("celledge", "info", str(img)), "is not a model file")
    assert_one_line_error(invoke_cli("celledge", "info", str(sidecar_path(default_model()))),
                          "is a JSON file, not a model", f"the model beside it ({default_model().name})")
    (tmp_path / "split.json").write_text("{}")  # a run's other JSON: no split.tflite is there to be named
    r = invoke_cli("celledge", "info", str(tmp_path / "split.json"))
    assert_one_line_error(r, "give a model file (.tflite or .keras)")
    assert "split.tflite" not in r.stderr
