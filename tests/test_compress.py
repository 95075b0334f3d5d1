"""cellcompress: QAT, extra variants, the gate's two outcomes and the Edge TPU integration."""
import json
import os
import shutil
import stat
import textwrap

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli, run_cli
from scopelite.compress import edgetpu
from scopelite.compress.ops import op_counts

STAND_IN_COMPILER = textwrap.dedent('''\
    #!/usr/bin/env python3
    """Stands in for edgetpu_compiler: copies the model and writes a realistic log."""
    import shutil, sys
    args = sys.argv[1:]
    out = args[args.index("-o") + 1]
    model = args[-1]
    assert "-s" in args, "scopelite must ask for the summary (-s)"
    name = model.rsplit("/", 1)[-1].replace(".tflite", "_edgetpu.tflite")
    shutil.copy(model, f"{out}/{name}")
    print("""Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 1234 ms.

    Input model: %s
    Input size: 6.78MiB
    Output model: %s/%s
    Output size: 6.95MiB
    On-chip memory used for caching model parameters: 6.52MiB
    On-chip memory remaining for caching model parameters: 1.25MiB
    Off-chip memory used for streaming uncached model parameters: 128.00KiB
    Number of Edge TPU subgraphs: 1
    Total number of operations: 272
    Operation log: %s/model_edgetpu.log

    Operator                       Count      Status

    CONV_2D                        75         Mapped to Edge TPU
    MUL                            72         Mapped to Edge TPU
    LOGISTIC                       71         Mapped to Edge TPU
    SOFTMAX                        1          Operation is otherwise supported, but not mapped due to some unspecified limitation
    Number of operations that will run on Edge TPU: 271
    Number of operations that will run on CPU: 1
    """ % (model, out, name, out))
''')


@pytest.fixture
def stand_in(tmp_path):
    p = tmp_path / "bin" / "edgetpu_compiler"
    p.parent.mkdir()
    p.write_text(STAND_IN_COMPILER)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def test_parse_compiler_log():
    log = STAND_IN_COMPILER.split('print("""')[1].split('""" %')[0]
    parsed = edgetpu.parse_log(log)
    assert parsed["tpu_ops"] == 271 and parsed["cpu_ops"] == 1 and parsed["subgraphs"] == 1
    assert parsed["on_chip_bytes"] == int(6.52 * 1024**2) and parsed["off_chip_bytes"] == 128 * 1024
    assert parsed["compiler_version"] == "16.0.384591198"
    assert {"op": "CONV_2D", "count": 75, "status": "Mapped to Edge TPU"} in parsed["operators"]
    assert any(o["op"] == "SOFTMAX" and "not mapped" in o["status"] for o in parsed["operators"])


def test_a_compiler_named_bare_in_the_working_folder_is_the_one_run(stand_in, tmp_path, monkeypatch):
    """--compiler fakecomp (in the folder, not on PATH) passed the existence check, then was looked up on PATH
    after the whole conversion."""
    monkeypatch.chdir(stand_in.parent)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    model = tmp_path / "model.tflite"
    model.write_bytes(b"x")
    compiled, log = edgetpu.compile_model(model, tmp_path / "tpu", edgetpu.find_compiler(stand_in.name))
    assert compiled.is_file() and log["tpu_ops"] == 271


def test_offline_compatibility(tiny_run, tmp_path):
    rep = edgetpu.compatibility(tiny_run["tflite"])
    assert rep["fully_mapped"] and rep["tpu_ops"] == rep["ops"] and rep["predicted_subgraphs"] == 1
    # the float16 variant holds float tensors: the first op that touches one is cut off
    from scopelite.compress.convert import to_float32
    from scopelite.train._keras import keras
    from scopelite.train.model import rebuild_for_export

    m = keras.models.load_model(tiny_run["keras"], compile=False)
    f32 = tmp_path / "f32.tflite"
    f32.write_bytes(to_float32(rebuild_for_export(m, "tiny", 32, 8)))
    rep = edgetpu.compatibility(f32)
    assert not rep["fully_mapped"] and rep["first_unmapped"] == 0 and rep["cpu_ops"] == rep["ops"]
    assert "not 8-bit" in rep["problems"][0]["why"][0]


@pytest.fixture(scope="module")
def full_compress(tiny_run, tmp_path_factory):
    """PTQ + QAT + float16 + dynamic range + Edge TPU (stand-in compiler) on the tiny run."""
    d = tmp_path_factory.mktemp("full")
    comp = d / "bin" / "edgetpu_compiler"
    comp.parent.mkdir()
    comp.write_text(STAND_IN_COMPILER)
    comp.chmod(0o755)
    out = d / "out"
    r = run_cli("cellcompress", str(tiny_run["keras"]), "--int8", "--qat", "--float16", "--dynamic-range",
                "--edgetpu", "--qat-epochs", "2", "--qat-lr", "1e-4", "--qat-ranges", "both", "--representative", "64", "--out", str(out),
                "--max-drop", "6", "8",
                env=dict(os.environ, PATH=f"{comp.parent}:{os.environ['PATH']}"))
    return r, out


def test_full_compress_writes_every_variant(full_compress):
    r, out = full_compress
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"]) == {"int8", "qat_int8", "qat_calibrated_int8", "float16", "dynamic_range"}
    for kind in report["variants"]:
        sc = json.loads((out / f"model_{kind}.json").read_text())
        assert sc["provenance"]["compression"]["variant"] == kind and sc["metrics"]["size_bytes"] > 0
        assert sc["provenance"]["compression"]["method"] == {"int8": "ptq", "float16": "float16",
                                                             "dynamic_range": "dynamic_range"}.get(kind, "qat")
        assert "p50_ms" in sc["metrics"]["latency_ms"]["threads_1"]
    assert report["approved"]["variant"] in ("int8", "qat_int8", "qat_calibrated_int8")
    assert (out / "model.tflite").is_file() and (out / "report.md").read_text().count("|") > 20
    # the stand-in compiler ran with -s, its log is parsed into the report and a TPU sidecar
    tpu = json.loads((out / "model_edgetpu.json").read_text())
    assert tpu["runtimes"] == ["edgetpu"] and tpu["provenance"]["compression"]["edgetpu_compiler"]["cpu_ops"] == 1
    assert tpu["provenance"]["cpu_model"] == "model.tflite"
    assert "WARNING: the compiler left 1 ops on the CPU" in r.stdout
    assert report["edgetpu"]["offline"]["fully_mapped"]


def test_qat_graph_matches_ptq_and_agrees_with_keras(full_compress, tiny_run):
    r, out = full_compress
    ptq = op_counts(out / "model_int8.tflite")
    for kind in ("qat_int8", "qat_calibrated_int8"):
        qat = op_counts(out / f"model_{kind}.tflite")
        assert "DEQUANTIZE" not in qat
        for op, n in qat.items():
            assert n <= ptq.get(op, 0), (kind, op, qat, ptq)
    report = json.loads((out / "report.json").read_text())
    # same QAT weights, activation ranges from the converter's calibration instead of TFMOT's
    assert report["variants"]["qat_calibrated_int8"]["top1_agreement_keras_qat_vs_tflite"] >= 0.9
    q = report["variants"]["qat_int8"]
    # the bar is 99 %; on 96 tiny-model test images that would allow no miss at all
    assert q["top1_agreement_keras_qat_vs_tflite"] >= 0.97
    # QAT fine-tunes the weights, so it may drift from the float model, but not by much: 8 of 96 images
    assert q["clean"]["accuracy"] >= report["float"]["clean"]["accuracy"] - 0.08
    assert "agree on" in (out / "report.md").read_text()


def _earlier_run(out, names, content=b"an earlier run's"):
    """Files as an earlier cellcompress into ``out`` left them: each .tflite with a scopelite sidecar beside it, a
    report.json of its shape (a file of those names without them is a user's, refused: foreign_outputs)."""
    from scopelite.edge.bundle import SCHEMA, sidecar_path

    for n in names:
        p = out / n
        if n == "report.json":
            p.write_text(json.dumps({"variants": {}, "float": {}}))
        elif n.startswith("model") and n.endswith(".json"):
            p.write_text(json.dumps({"schema": SCHEMA}))
        else:
            p.write_bytes(content)
            if n.endswith(".tflite"):
                sidecar_path(p).write_text(json.dumps({"schema": SCHEMA}))


def test_a_users_files_under_cellcompress_names_are_left_alone(tmp_path):
    """report.md of one's own and a model_float16.tflite without a sidecar in --out: replaced and deleted, exit 0."""
    from scopelite.compress.pipeline import foreign_outputs

    o = tmp_path / "o"
    o.mkdir()
    assert foreign_outputs(o) == [] and foreign_outputs(tmp_path / "new") == []
    (o / "report.md").write_text("mine")
    assert foreign_outputs(o) == ["report.md"]
    _earlier_run(o, ["report.json", "model_int8.tflite"])  # beside an earlier run's report it is that run's
    assert foreign_outputs(o) == []
    (o / "model_float16.tflite").write_bytes(b"a run cut between writing it and its sidecar")
    assert foreign_outputs(o) == []  # beside that run's files: its own, and the rerun replaces it
    (o / "model.json").write_text('{"my": "notes"}')
    assert foreign_outputs(o) == ["model.json"]
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model_float16.tflite").write_bytes(b"mine, no sidecar, nothing of cellcompress beside it")
    assert foreign_outputs(alone) == ["model_float16.tflite"]


def test_gate_refuses_and_approves_nothing_after_trying_qat(tiny_run, tmp_path):
    """Post-training int8 fails the gate -> quantisation-aware training is tried; nothing passes -> nothing approved."""
    from scopelite.compress.pipeline import CompressConfig, GateFailed, compress

    out = tmp_path / "strict"
    out.mkdir()
    _earlier_run(out, ["model.tflite", "model_float16.tflite"])  # an old approval and variant must not survive
    (out / "report.md").write_text("Approved: **int8** (an old report)")
    lines: list[str] = []
    # a drop can never be below -100 points: both metrics must fail, whatever the model (the CLI refuses
    # such a --max-drop; the library takes it, so the test can make every variant fail)
    with pytest.raises(GateFailed) as e:
        compress(CompressConfig(model=str(tiny_run["keras"]), out=str(out), representative=32, qat_epochs=1,
                                max_drop_clean=-101.0, max_drop_corrupted=-101.0), log=lines.append)
    assert "clean accuracy drop" in str(e.value) and "corrupted accuracy drop" in str(e.value)
    # the earlier approval is removed, and said so: "nothing written" hid it from a device reading that path
    assert "approved by an earlier run, was removed" in str(e.value) and "nothing written" not in str(e.value)
    assert any("trying quantisation-aware training" in x for x in lines)
    assert not (out / "model.tflite").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["approved"] is None and report["automatic_qat"] is True
    assert report["variants"]["int8"]["gate"]["passed"] is False
    assert report["variants"]["qat_int8"]["gate"]["passed"] is False  # QAT was measured and gated too
    assert not (out / "model_float16.tflite").exists() and "Approved: **none**" in (out / "report.md").read_text()
    sc = json.loads((out / "model_int8.json").read_text())
    assert sc["metrics"]["gate"]["passed"] is False and sc["metrics"]["gate"]["max_drop_clean_pt"] == -101
    r = run_cli("cellcompress", str(tiny_run["keras"]), "--int8", "--max-drop", "-1", "-1", "--out", str(out))
    assert r.returncode == 2 and "must be 0 to 100 points" in r.stderr


def test_quantisation_aware_training_that_diverges_is_one_error_line(tiny_run, tmp_path):
    """At a --qat-lr far too high the fine-tune's weights went to NaN and the conversion ended in a LiteRT
    RuntimeError traceback (a hunt of session 37)."""
    r = run_cli("cellcompress", str(tiny_run["keras"]), "--int8", "--qat", "--qat-lr", "1e12", "--qat-epochs", "1",
                "--representative", "32", "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "quantisation-aware training diverged", "lower --qat-lr", code=2)
    assert not (tmp_path / "o" / "model.tflite").exists()


def test_no_compiler_still_writes_int8_and_says_where_to_get_it(tiny_run, tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(shutil.which("python3") or "/usr/bin/python3"))
    from conftest import run_cli as run

    o = tmp_path / "o"
    o.mkdir()
    earlier = ["model_edgetpu.tflite", "model_edgetpu.json", "model_float16.tflite", "int8-diagnosis.png"]
    _earlier_run(o, earlier)  # an earlier model's build into the same --out: it stayed beside the new approval
    (o / "notes.txt").write_text("the user's own")
    r = run("cellcompress", str(tiny_run["keras"]), "--int8", "--edgetpu", "--out", str(o),
            "--representative", "32", "--max-drop", "6", "8", env={**env, "PATH": f"{os.path.dirname(os.sys.executable)}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "edgetpu_compiler is not installed" in r.stdout and "coral.ai" in r.stdout
    assert (o / "model.tflite").is_file() and not any((o / n).exists() for n in earlier)
    said = " ".join(x for x in r.stdout.splitlines() if "of an earlier run" in x)
    assert all(n in said for n in earlier if not n.endswith(".json")), r.stdout[-2000:]
    assert (o / "notes.txt").read_text() == "the user's own" and (o / "model_int8.tflite").is_file()


@pytest.mark.slow
def test_qat_on_efficientnetv2b0_has_ptq_op_counts(tmp_path):
    """Real architecture: QAT int8 holds no more ops of any kind than PTQ int8 (BN folded)."""
    from scopelite.compress import qat
    from scopelite.compress.convert import to_int8
    from scopelite.train.model import build

    m = build("efficientnetv2b0", 32, 8, batch_size=1)
    q = qat.quantize(m)
    qat.pin_input_range(q)
    rep = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "q.tflite").write_bytes(to_int8(q, rep))
    (tmp_path / "p.tflite").write_bytes(to_int8(m, rep))
    qo, po = op_counts(tmp_path / "q.tflite"), op_counts(tmp_path / "p.tflite")
    assert qo == po, (qo, po)
    assert edgetpu.compatibility(tmp_path / "q.tflite")["fully_mapped"]


def test_bench_ranks_models_and_writes_every_format(full_compress, tiny_run, tmp_path):
    r, out = full_compress
    b = tmp_path / "bench"
    r = run_cli("cellcompress", "bench", str(tiny_run["keras"]), str(out / "model_int8.tflite"),
                str(out / "model_float16.tflite"), "--out", str(b), "--limit", "48")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((b / "bench.json").read_text())
    assert res["images"] == 48 and res["reference"] == "model.keras"
    ref = res["models"]["model.keras"]
    # the reference is its own yardstick (corruptions it never gets wrong have no ratio; none left: no mCE)
    assert ref["mCE_vs_model.keras"] == (pytest.approx(1.0) if len(res["mCE_left_out"]) < 16 else None)
    assert res["models"]["model_float16.tflite"]["clean"] == pytest.approx(ref["clean"], abs=0.03)
    rows = (b / "bench.csv").read_text().splitlines()
    assert rows[0] == "model,corruption,severity,accuracy" and len(rows) == 1 + 3 * (1 + 16 * 5)
    assert (b / "bench.png").stat().st_size > 5000 and "mean corrupted" in (b / "bench.md").read_text()
    # harsher severity never helps on average
    acc = res["accuracy"]["model.keras"]
    mean1 = np.mean([v for k, v in acc.items() if k.endswith("/1")])
    mean5 = np.mean([v for k, v in acc.items() if k.endswith("/5")])
    assert mean5 <= mean1


def test_mce_leaves_out_corruptions_the_reference_never_gets_wrong():
    from scopelite.compress.bench import mean_corruption_error

    sev = (1, 2)
    ref = {"blur/1": 1.0, "blur/2": 1.0, "noise/1": 0.9, "noise/2": 0.7}
    worse = {"blur/1": 0.9, "blur/2": 1.0, "noise/1": 0.8, "noise/2": 0.4}
    assert mean_corruption_error(ref, ref, ["blur", "noise"], sev) == (pytest.approx(1.0), ["blur"])
    # noise: (0.2 + 0.6) / (0.1 + 0.3) = 2; blur has no ratio (reference errs nowhere)
    assert mean_corruption_error(worse, ref, ["blur", "noise"], sev) == (pytest.approx(2.0), ["blur"])
    assert mean_corruption_error(worse, ref, ["blur"], sev) == (None, ["blur"])


def test_edgetpu_model_without_a_tpu_fails_clearly_or_falls_back(full_compress, synth_dir):
    _, out = full_compress
    img = str(next((synth_dir / "crops" / "platelet").glob("*.png")))
    r = run_cli("celledge", "classify", str(out / "model_edgetpu.tflite"), img, "--json")
    err = [x for x in r.stderr.splitlines() if x.startswith("Error")]
    assert r.returncode == 2 and len(err) == 1 and "Edge TPU" in err[0] and "--fallback cpu" in err[0]
    r = run_cli("celledge", "classify", str(out / "model_edgetpu.tflite"), img, "--json", "--fallback", "cpu")
    assert r.returncode == 0, r.stderr[-1500:]
    assert "running model.tflite on the CPU" in r.stderr and json.loads(r.stdout)["label"]
    r = run_cli("celledge", "classify", str(out / "model.tflite"), img, "--device", "usb")
    assert r.returncode == 2 and "not compiled for the Edge TPU" in r.stderr


def test_rank_agreement():
    from scopelite.compress.bench import rank_agreement

    same = rank_agreement({"a": 0.9, "b": 0.8, "c": 0.7}, {"a": 0.5, "b": 0.4, "c": 0.1})
    assert same["kendall_tau"] == 1.0 and same["same_ranking"] and same["concordant_pairs"] == 3
    flipped = rank_agreement({"a": 0.9, "b": 0.8, "c": 0.7}, {"a": 0.1, "b": 0.4, "c": 0.5})
    assert flipped["kendall_tau"] == -1.0 and not flipped["same_ranking"]
    one_swap = rank_agreement({"a": 0.9, "b": 0.8, "c": 0.7}, {"a": 0.9, "b": 0.6, "c": 0.7, "extra": 1.0})
    assert one_swap["models"] == ["a", "b", "c"] and one_swap["discordant_pairs"] == 1
    assert abs(one_swap["kendall_tau"] - 1 / 3) < 1e-9


def test_bench_takes_another_corruption_suite(full_compress, tiny_run, tmp_path):
    """The MedMNIST-C cross-check plugs its own corrupted images into the same bench."""
    from scopelite.compress.bench import Suite, bench

    _, out = full_compress
    suite = Suite("two-way", ["identity", "black"], (1, 2),
                  lambda x, c, s: x if c == "identity" else np.zeros_like(x))
    res = bench([str(tiny_run["keras"]), str(out / "model_int8.tflite")], tmp_path, limit=24, suite=suite,
                log=lambda m: None)
    assert res["suite"] == "two-way" and res["corruptions"] == ["identity", "black"]
    for m in res["models"].values():
        assert m["per_corruption"]["identity"] == m["clean"]
        assert m["per_corruption"]["black"] <= 0.25  # one answer for every image: one class of 8 right
    assert len((tmp_path / "bench.csv").read_text().splitlines()) == 1 + 2 * (1 + 2 * 2)
    assert "two-way" in (tmp_path / "bench.md").read_text()


def test_strip_moves_qat_weights_into_a_plain_float_model(tiny_run):
    from scopelite.compress import qat
    from scopelite.train._keras import keras
    from scopelite.train.model import rebuild_for_export

    m = keras.models.load_model(tiny_run["keras"], compile=False)
    build = lambda: rebuild_for_export(m, "tiny", 32, 8)  # noqa: E731
    q = qat.quantize(rebuild_for_export(m, "tiny", 32, 8, batch_size=None))
    kernel = next(w for w in q.weights if w.name == "conv0/kernel:0")
    halved = kernel.numpy() * 0.5
    kernel.assign(halved)  # stands in for what QAT fine-tuning changes
    plain = qat.strip(q, build)
    assert not any("quant" in layer.name for layer in plain.layers)
    np.testing.assert_array_equal(plain.get_layer("conv0").get_weights()[0], halved)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    assert not np.allclose(plain(x).numpy(), build()(x).numpy())  # the change travelled


def test_qat_fine_tuning_keeps_batchnorm_statistics(tiny_run):
    from scopelite.compress import qat
    from scopelite.train._keras import keras, tf
    from scopelite.train.model import rebuild_for_export

    m = keras.models.load_model(tiny_run["keras"], compile=False)
    q = qat.quantize(rebuild_for_export(m, "tiny", 32, 8, batch_size=None))
    stats = {w.name: w.numpy().copy() for w in q.weights if "moving_" in w.name or "gamma" in w.name}
    conv = {w.name: w.numpy().copy() for w in q.weights if w.name.endswith("kernel:0")}
    assert stats and conv
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.float32) * 0.3  # far from the training images
    y = tf.one_hot(rng.integers(0, 8, 64), 8)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    qat.fine_tune(q, ds, ds, epochs=1, learning_rate=1e-2, verbose=0)
    after = {w.name: w.numpy() for w in q.weights}
    for name, v in stats.items():
        np.testing.assert_array_equal(after[name], v, err_msg=name)
    assert any(not np.array_equal(after[n], v) for n, v in conv.items())  # the rest did train


def test_gate_lets_one_image_through_only_where_the_split_cannot_measure_the_threshold():
    """A few-shot run keeps 6-13 test images: one image flipped by int8 is 8-17 points. The gate lets
    exactly one image through (with a note) when one image is more than the threshold; two still fail,
    and so does a split large enough to measure the threshold, a zero or negative threshold, or no
    split size."""
    from scopelite.compress.pipeline import CompressConfig, gate, markdown
    from scopelite.edge.provenance import Gate

    cfg = CompressConfig(model="m.keras", out="o")  # thresholds 1.0 / 2.0 points

    def acc(clean, corrupted):
        return {"clean": {"accuracy": clean}, "corrupted": {"accuracy": corrupted}}

    g = g1 = gate(acc(1.0, 5 / 6), acc(1.0, 4 / 6), cfg, 6)  # corrupted: one of 6 images lost
    assert g["passed"] and not g["failures"] and len(g["notes"]) == 1
    assert "one image" in g["notes"][0] and "6 test images" in g["notes"][0]
    assert Gate.from_dict(g, "gate").to_dict() == g  # the sidecar schema keeps the note
    g = gate(acc(1.0, 5 / 6), acc(1.0, 3 / 6), cfg, 6)  # two images lost
    assert not g["passed"] and "corrupted accuracy drop 33.33 pt > 2.0 pt" in g["failures"][0]
    assert not gate(acc(1.0, 5 / 6), acc(1.0, 4 / 6), cfg)["passed"]  # split size not given: as before
    assert gate(acc(0.5, 0.5), acc(0.48, 0.5), cfg, 50)["passed"]  # one of 50 images = 2 pt > 1.0
    assert not gate(acc(0.5, 0.5), acc(0.46, 0.5), cfg, 50)["passed"]  # two of 50
    assert not gate(acc(0.5, 0.5), acc(0.485, 0.5), cfg, 200)["passed"]  # 3 of 200 = 1.5 pt: measurable
    strict = CompressConfig(model="m", out="o", max_drop_clean=0.0, max_drop_corrupted=0.0)
    assert not gate(acc(1.0, 1.0), acc(5 / 6, 1.0), strict, 6)["passed"]  # 0 means no loss at all
    forced = CompressConfig(model="m", out="o", max_drop_clean=-1.0, max_drop_corrupted=-1.0)
    assert not gate(acc(1.0, 1.0), acc(1.0, 1.0), forced, 6)["passed"]  # tests force a failure this way
    assert "notes" not in gate(acc(1.0, 1.0), acc(1.0, 1.0), cfg, 6)
    exact = gate(acc(7 / 50, 7 / 50), acc(7 / 50, 6 / 50), cfg, 50)  # 2.0000000000000018 pt, threshold 2.0
    assert exact["passed"] and "notes" not in exact  # a drop equal to the threshold passes, rounding aside
    assert not gate(acc(1.0, 1.0), acc(0.0, 1.0), cfg, 1)["passed"]  # one image of one is no measurement
    assert not gate(acc(1.0, 1.0), acc(0.75, 1.0), cfg, 4)["passed"]  # under 5 images: no allowance
    assert not gate(acc(1.0, 1.0), acc(0.8, 1.0), cfg, 0)["passed"]
    md = markdown({"model": "m", "n": 6, "data": "d", "corrupted_protocol": "c", "float": acc(1.0, 5 / 6),
                   "variants": {"int8": {**acc(1.0, 4 / 6), "size_bytes": 1, "gate": g1,
                                         "latency_ms": {"threads_1": {"p50_ms": 1}, "threads_2": {"p50_ms": 1}}}}})
    assert "pass (note: corrupted accuracy drop of one image" in md  # the report says why it passed


def test_bench_refuses_models_of_different_input_sizes(tiny_run, tiny_run_48, tmp_path):
    out = tmp_path / "bench"
    r = invoke_cli("cellcompress", "bench", str(tiny_run["keras"]), str(tiny_run_48["keras"]), "--out", str(out))
    assert_one_line_error(r, "different input sizes", "32x32", "48x48")
    assert not (out / "bench.json").exists()
    # --run of another input size: its test crops were read at its size and fed to the model (LiteRT's
    # "Dimension mismatch" ValueError traceback)
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--run", str(tiny_run_48["dir"]), "--out", str(out))
    assert_one_line_error(r, "trained on 48x48 px images and the models take 32x32")
    assert not (out / "bench.json").exists()


def test_bench_refuses_models_trained_on_another_split(tiny_run, tmp_path):
    """A run of another --seed benched beside tiny_run was scored on tiny_run's test split, most of which it had
    trained on (22 of 24 images in a hunt of session 37); celltrain choose refused such a pair, bench did not. Its
    int8 model (its sidecar names its source run) is refused with --run of the other lineage too."""
    from scopelite.train.config import FitConfig
    from scopelite.train.fit import fit

    other = tmp_path / "seed5"
    fit(FitConfig(out=str(other), arch="tiny", image_size=32, epochs=1, synthetic_per_class=120, batch_size=32,
                  seed=5), log=lambda _: None, verbose=0)
    out = tmp_path / "bench"
    r = invoke_cli("cellcompress", "bench", str(tiny_run["keras"]), str(other / "model.keras"), "--out", str(out),
                   "--limit", "16")
    assert_one_line_error(r, "was trained on another split")
    r = invoke_cli("cellcompress", "bench", str(tiny_run["tflite"]), "--run", str(other), "--out", str(out),
                   "--limit", "16")
    assert_one_line_error(r, "was trained on another split")
    assert not (out / "bench.json").exists()


def test_a_test_split_too_small_to_gate_is_said_with_the_way_on(tmp_path):
    """A few cells of a few classes (here 10 of 2) leave 2-4 test images: one flipped image failed the gate with
    advice to train longer."""
    import cv2

    from scopelite.compress.pipeline import CompressConfig, GateFailed, compress
    from scopelite.train.config import FitConfig
    from scopelite.train.fit import fit
    from scopelite.train.synth import make_crops

    data = tmp_path / "cells"
    x, y = make_crops(10, size=64, seed=2)
    for i, (img, lab) in enumerate(zip(x, y)):
        if lab in (4, 6):  # a lab's lymphocytes and neutrophils, 10 each
            (data / str(lab)).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(data / str(lab) / f"{i}.png"), img[..., ::-1])
    for lab, name in ((4, "lymphocyte"), (6, "neutrophil")):
        (data / str(lab)).rename(data / name)
    run = tmp_path / "run"
    fit(FitConfig(out=str(run), data=str(data), arch="tiny", image_size=32, epochs=1), log=lambda _: None, verbose=0)
    lines: list[str] = []
    with pytest.raises(GateFailed) as e:  # a drop can never be below -100 points: the gate fails whatever the model
        compress(CompressConfig(model=str(run / "model.keras"), out=str(tmp_path / "o"), representative=8,
                                qat_epochs=1, max_drop_clean=-101.0, max_drop_corrupted=-101.0), log=lines.append)
    assert "too few to judge" in str(e.value) and "--max-drop 100 100" in str(e.value)
    assert any(x.startswith("NOTE: the run's test split holds") for x in lines)


def test_a_compiler_printing_bytes_that_are_not_utf8_is_read_not_a_traceback(tmp_path):
    """A compiler whose log held bytes that are not UTF-8 ended the run in UnicodeDecodeError (a hunt of session 37)."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not really a model")
    odd = tmp_path / "edgetpu_compiler"
    odd.write_text("#!/bin/sh\nprintf 'Edge TPU Compiler version 16.0\\n\\377\\376 bad bytes\\n'\n"
                   "cp \"$4\" \"$3/m_edgetpu.tflite\"\n")
    odd.chmod(0o755)
    compiled, parsed = edgetpu.compile_model(model, tmp_path / "out", str(odd))
    assert compiled.is_file() and parsed["compiler_version"] == "16.0"


def test_a_failed_compile_leaves_no_earlier_edge_tpu_build_and_this_runs_report(tiny_run, tmp_path):
    o = tmp_path / "o"
    o.mkdir()
    _earlier_run(o, ("model_edgetpu.tflite", "model_edgetpu.json", "report.json"))  # an earlier build and report
    broken = tmp_path / "edgetpu_compiler"
    broken.write_text("#!/bin/sh\necho 'Internal compiler error. Aborting!'\nexit 1\n")
    broken.chmod(0o755)
    r = run_cli("cellcompress", str(tiny_run["keras"]), "--int8", "--edgetpu", "--compiler", str(broken),
                "--out", str(o), "--representative", "32", "--max-drop", "6", "8")
    assert_one_line_error(r, "could not compile", "Internal compiler error")
    assert not (o / "model_edgetpu.tflite").exists() and not (o / "model_edgetpu.json").exists()
    report = json.loads((o / "report.json").read_text())
    assert report["approved"]["variant"] == "int8" and "could not compile" in report["edgetpu"]["error"]
    assert (o / "model.tflite").is_file()
