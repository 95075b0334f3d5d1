"""The real architecture goes through fit and int8 conversion (small input, one epoch)."""
import numpy as np
import pytest

from scopelite.compress.ops import DYNAMIC_SHAPE_OPS, op_counts
from scopelite.edge.bundle import load_sidecar


@pytest.mark.slow
def test_efficientnetv2b0_fit_and_int8(tmp_path):
    from scopelite.compress.pipeline import CompressConfig, compress
    from scopelite.train.config import FitConfig
    from scopelite.train.fit import fit

    run = tmp_path / "run"
    fit(FitConfig(out=str(run), arch="efficientnetv2b0", image_size=32, epochs=1, synthetic_per_class=6,
                  batch_size=16), log=lambda _: None, verbose=0)
    sc = load_sidecar(run / "model.keras")
    assert sc.provenance.training.config["arch"] == "efficientnetv2b0"
    assert sc.provenance.tools["tf_keras"].startswith("2.")  # Keras 2, as TFMOT needs
    report = compress(CompressConfig(model=str(run / "model.keras"), out=str(run / "int8"), representative=16,
                                     max_drop_clean=100, max_drop_corrupted=100), log=lambda _: None)
    m = report["variants"]["int8"]
    ops = op_counts(run / "int8" / "model.tflite")
    assert not set(DYNAMIC_SHAPE_OPS) & set(ops)
    # EfficientNetV2B0: squeeze-excite gives LOGISTIC+MUL pairs, BN is folded into the convs.
    assert ops["CONV_2D"] >= 60 and ops["DEPTHWISE_CONV_2D"] >= 10 and "LOGISTIC" in ops
    assert ops.get("ADD", 0) < 30, ops  # unfolded BatchNormalization would add dozens of ADD/MUL
    assert 4e6 < m["size_bytes"] < 10e6  # int8 weights: ~1 byte per parameter
    assert np.isfinite(m["latency_ms"]["threads_1"]["p50_ms"])
