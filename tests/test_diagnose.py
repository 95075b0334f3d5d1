"""cellcompress --diagnose: per-tensor int8 error against the float graph, and BatchNorm statistics."""
import csv
import json

import numpy as np
import pytest

from scopelite.compress.diagnose import COLUMNS, FILES, kind_of, layer_of, row_metrics, summarize, to_csv


def test_row_metrics_measure_rounding_and_clipping():
    rng = np.random.default_rng(0)
    f = rng.normal(0, 1, 20000)
    scale, zp = 8.0 / 255, 0  # covers about [-4, 4]: nothing clipped
    q = (np.clip(np.round(f / scale) + zp, -128, 127) - zp) * scale
    m = row_metrics(q, f, scale, zp)
    assert m["rmse_over_scale"] == pytest.approx(1 / np.sqrt(12), rel=0.05)  # rounding alone: a uniform error
    assert m["nrmse"] < 0.02 and m["clipped"] == 0 and m["cosine"] > 0.999
    assert m["range_over_std"] == pytest.approx(255 * scale / f.std(), rel=1e-6)
    assert m["calibrated_over_seen"] == pytest.approx(255 * scale / (f.max() - f.min()), rel=1e-6)
    exact = row_metrics(f, f, scale, zp)
    assert exact["rmse"] == 0 and exact["nrmse"] == 0
    narrow = 2.0 / 255  # about [-1, 1]: a third of a normal tensor is clipped
    qn = (np.clip(np.round(f / narrow), -128, 127)) * narrow
    mn = row_metrics(qn, f, narrow, 0)
    assert 0.25 < mn["clipped"] < 0.4 and mn["nrmse"] > 0.2


@pytest.mark.parametrize("op,tensor,kind", [
    ("CONV_2D", "efficientnetv2b0/block4a_se_reduce/BiasAdd", "squeeze-excite"),
    ("MUL", "efficientnetv2b0/block4a_se_reduce/mul_1", "swish"),
    ("MUL", "efficientnetv2b0/block4a_se_excite/mul", "squeeze-excite"),
    ("LOGISTIC", "efficientnetv2b0/block4a_activation/Sigmoid", "swish"),
    ("MUL", "efficientnetv2b0/block4a_activation/mul_1", "swish"),
    ("DEPTHWISE_CONV_2D", "efficientnetv2b0/block4a_bn/FusedBatchNormV3;efficientnetv2b0/block4a_dwconv2/depthwise",
     "conv+bn"),
    ("ADD", "efficientnetv2b0/block4b_add/add", "residual add"),
    ("ADD", "efficientnetv2b0/normalize/add", "input"),
    ("FULLY_CONNECTED", "efficientnetv2b0/predictions/MatMul", "head"),
    ("QUANTIZE", "StatefulPartitionedCall:0", "head"),
])
def test_kind_of_efficientnet_tensors(op, tensor, kind):
    assert kind_of(op, tensor) == kind


def test_layer_of():
    assert layer_of("efficientnetv2b0/top_bn/FusedBatchNormV3;efficientnetv2b0/top_conv/Conv2D") == "top_bn"
    assert layer_of("StatefulPartitionedCall:0") == "StatefulPartitionedCall:0"


def _row(i, kind, nrmse, lo=-1.0, hi=1.0, std=0.3, layer=None):
    return {"index": i, "op": "ADD", "kind": kind, "layer": layer or f"l{i}", "tensor": f"t{i}", "nrmse": nrmse,
            "float_min": lo, "float_max": hi, "float_std": std, "range_over_std": (hi - lo) / std,
            "calibrated_over_seen": 1.0 + i}


def test_summary_names_where_the_error_grows_and_unsettled_batchnorm():
    rows = [_row(0, "input", 0.01), _row(1, "residual add", 0.05, -4, 4, 1.0, "block2b_add"),
            _row(2, "swish", 0.2), _row(3, "residual add", 0.5, -300, 390, 30.0, "block6h_add"), _row(4, "head", 1.2)]
    bn = [{"layer": "a_bn", "var_ratio": 1.1, "mean_shift_std": 0.0},
          {"layer": "b_bn", "var_ratio": 0.2, "mean_shift_std": 0.5}]
    s = summarize(rows, bn, agreement=0.25)
    assert s["first_nrmse_over"]["0.1"]["tensor"] == "t2" and s["first_nrmse_over"]["0.3"]["tensor"] == "t3"
    assert s["final_nrmse"] == 1.2 and s["top1_agreement"] == 0.25
    assert s["batchnorm_unsettled"] == 1 and s["batchnorm_layers"] == 2
    assert s["worst_range_over_std"][0]["tensor"] == "t3"
    text = "\n".join(s["findings"])
    assert "25.0 %" in text and "4 at block2b_add -> 390 at block6h_add" in text and "b_bn: 0.2x" in text
    assert "t3 (residual add) spans 23 standard deviations, 11.1 int8 steps" in text
    assert s["op_error_steps"] is None  # no QuantizationDebugger figures given
    assert s["median_calibrated_over_seen"] == 3.0 and "widest 5.00x at t4" in text
    rows[2]["op_rmse_over_scale"], rows[3]["op_rmse_over_scale"] = 0.29, 3.0
    assert summarize(rows, bn, None)["op_error_steps"] == {"median": pytest.approx(1.645), "max": 3.0, "max_at": "t3"}
    assert summarize(rows[:1], [], None)["first_nrmse_over"]["0.1"] is None


def test_csv_has_the_documented_columns():
    rows = [{**_row(0, "input", 0.01), **row_metrics(np.ones(4), np.ones(4) * 1.01, 0.01, 0)}]
    got = list(csv.DictReader(to_csv(rows).splitlines()))
    assert tuple(got[0]) == COLUMNS and got[0]["kind"] == "input"


def test_diagnose_flag_writes_the_table_and_the_refusal_points_at_it(tiny_run, tmp_path):
    """A gate nothing can pass, with --diagnose: the per-tensor files are written, the report
    carries the summary, and the refusal names the plot."""
    from scopelite.compress.pipeline import CompressConfig, GateFailed, compress

    out = tmp_path / "diag"
    lines: list[str] = []
    with pytest.raises(GateFailed) as e:
        compress(CompressConfig(model=str(tiny_run["keras"]), out=str(out), representative=32, qat_epochs=1,
                                diagnose=True, max_drop_clean=-101.0, max_drop_corrupted=-101.0), log=lines.append)
    assert str(out / "int8-diagnosis.png") in str(e.value)
    for name in FILES:
        assert (out / name).stat().st_size > 0
    d = json.loads((out / "int8-diagnosis.json").read_text())
    rows, bn = d["tensors"], d["batchnorm"]
    assert [b["layer"] for b in bn] == ["bn0", "bn1", "bn2"]  # the tiny network's three BatchNorm layers
    assert all(0.2 < b["var_ratio"] < 5 for b in bn)  # a trained model's statistics match its training images
    assert rows[0]["kind"] == "input" and rows[0]["nrmse"] < 0.05  # the first tensors lose almost nothing
    assert [r["layer"] for r in rows][2:5] == ["relu0", "relu1", "relu2"] and rows[-1]["kind"] == "head"
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    assert 0.0 <= d["summary"]["top1_agreement"] <= 1.0 and d["images"].startswith("48 held-out")
    own = [r["op_rmse_over_scale"] for r in rows if r["op_rmse_over_scale"] is not None]
    assert len(own) >= len(rows) - 1 and 0.1 < float(np.median(own)) < 1.0  # each op rounds about as int8 should
    report = json.loads((out / "report.json").read_text())
    assert report["int8_diagnosis"]["files"] == list(FILES)
    assert any("int8 diagnosis" in x for x in lines)


def test_diagnose_needs_int8(tmp_path):
    from scopelite.compress.pipeline import CompressConfig, compress
    from scopelite.edge.errors import UserError

    with pytest.raises(UserError, match="add --int8"):
        compress(CompressConfig(model=str(tmp_path / "none.keras"), out=str(tmp_path / "o"), int8=False,
                                float16=True, diagnose=True))


def test_raw_pixels_enter_a_uint8_or_int8_graph_unchanged():
    from scopelite.compress.diagnose import _quantize_input

    img = np.array([[[0, 128, 255]]], np.uint8)
    assert _quantize_input(img, {"quantization": (1.0, 0), "dtype": np.uint8}).tolist() == [[[[0, 128, 255]]]]
    assert _quantize_input(img, {"quantization": (1.0, -128), "dtype": np.int8}).tolist() == [[[[-128, 0, 127]]]]
