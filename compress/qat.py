"""Quantisation-aware training (tensorflow-model-optimization) for EfficientNetV2B0.

Out of the box ``quantize_model`` refuses EfficientNetV2's squeeze-excite
``Multiply`` and our in-graph ``Rescaling``. Annotating *every* layer with a
custom config would stop Conv+BatchNormalization folding (twice the MUL/ADD
ops in the int8 graph). So only those layers get an output-only config — the
int8 kernels need just their output range — and everything else keeps TFMOT's
default registry, which folds BatchNormalization into the convolutions. The
QAT int8 graph then has the same ops as the post-training one.
"""
from __future__ import annotations

import functools


from scopelite.train._keras import keras, tfmot

_OUTPUT_ONLY = (keras.layers.Multiply, keras.layers.Rescaling)


@functools.lru_cache(maxsize=None)
def _output_only_config_class():
    q = tfmot().quantization.keras

    class ScopeliteOutputOnly(q.QuantizeConfig):  # TFMOT has its own "OutputOnlyConfig": another name
        """Quantise a layer's output (8-bit, asymmetric, per tensor); it has no weights."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                        narrow_range=False)]

        def get_config(self):
            return {}

    return ScopeliteOutputOnly


def quantize(model):
    """A QAT copy of ``model`` (same weights; fake-quant nodes added). Call inside nothing special."""
    q = tfmot().quantization.keras
    config_cls = _output_only_config_class()

    def clone(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        return q.quantize_annotate_layer(fresh, config_cls()) if isinstance(layer, _OUTPUT_ONLY) else fresh

    annotated = keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    annotated = q.quantize_annotate_model(annotated)
    with q.quantize_scope({"ScopeliteOutputOnly": config_cls}):
        return q.quantize_apply(annotated)


def pin_input_range(qat_model, low: float = 0.0, high: float = 255.0) -> None:
    """Fix the input quantiser to the raw pixel range, so the converter needs no requantisation
    (a DEQUANTIZE/QUANTIZE pair) between the uint8 input and the first layer."""
    for layer in qat_model.layers:
        if type(layer).__name__ == "QuantizeLayer":
            for w in layer.weights:
                if w.name.endswith("_min:0"):
                    w.assign(low)
                elif w.name.endswith("_max:0"):
                    w.assign(high)
            return
    raise ValueError("no QuantizeLayer at the model input")


def for_export(qat_trained, build_batch1):
    """The trained QAT weights (quantiser ranges included) in a batch-1 QAT copy, input range pinned."""
    fixed = quantize(build_batch1())
    _copy_by_name(qat_trained, fixed)
    pin_input_range(fixed)
    return fixed


def _copy_by_name(src, dst) -> None:
    """Copy variables layer by layer (same architecture, same layer order), matched by their base
    name within the layer ("kernel", "gamma", "output_min"...): a wrapper's variable order is not
    stable (see freeze_batchnorm) and auto-named layers ("quantize_layer_1") differ between copies."""
    src_layers, dst_layers = [x for x in src.layers if x.weights], [x for x in dst.layers if x.weights]
    if len(src_layers) != len(dst_layers):
        raise ValueError(f"the models differ: {len(src_layers)} vs {len(dst_layers)} layers with weights")

    def key(w, layer):  # "quantize_layer_1/quantize_layer_1_min:0" -> "_min:0"
        base = w.name.rsplit("/", 1)[-1]
        return base[len(layer.name):] if base.startswith(layer.name) else base

    for a, b in zip(src_layers, dst_layers):
        _assign(b.weights, {key(w, a): w for w in a.weights}, lambda w: key(w, b), f"layer {a.name}")


def _assign(targets, values: dict, key, where: str) -> None:
    """Assign each target variable the value found under ``key(target)``; refuse a missing or misshapen one."""
    for w in targets:
        v = values.get(key(w))
        if v is None or tuple(v.shape) != tuple(w.shape):
            raise ValueError(f"{where} has no variable like {w.name} of shape {tuple(w.shape)}")
        w.assign(v)


def strip(qat_trained, build_float):
    """The QAT-trained weights in a plain float copy (no fake-quant nodes), for the converter to
    calibrate activation ranges itself, as post-training quantisation does.

    Why one would: TFMOT learns each activation range as a moving average of per-batch
    min/max, narrower than the global min/max a post-training calibration takes (on our
    EfficientNetV2B0 the conv output scales came out ~0.6x, depthwise ~0.36x), which could clip
    what corrupted images produce. Measured on run pbc-v2 it did not matter (corrupted 91.65 %
    calibrated vs 91.81 % learned), so this is an option, not the default.
    """
    # TFMOT's wrappers own the wrapped layers' variables (the inner layer may no longer list
    # them), under the original names: "block1a_project_conv/kernel:0" and so on.
    model = build_float()
    _assign(model.weights, {w.name: w for w in qat_trained.weights}, lambda w: w.name, "the QAT model")
    return model


def freeze_batchnorm(qat_model) -> int:
    """Run every BatchNormalization in inference mode with fixed gamma/beta (TFMOT wraps them).

    QAT fine-tuning is short and on augmented batches of 32: letting BN re-estimate its
    statistics there moves the model away from the float one it should stay close to (Jacob et
    al. 2018 freeze BN statistics for the same reason). Returns how many were frozen.
    """
    n = 0
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            inner.trainable = False  # inference mode: moving statistics used, not updated
            layer.trainable = False
            # TFMOT's wrapper lists the wrapped layer's variables among its own trainable ones
            # whatever its ``trainable`` says: move gamma/beta out of the optimiser's reach.
            own = [v for v in layer.__dict__.get("_trainable_weights", []) if v.name.startswith(inner.name + "/")]
            for v in own:
                layer._trainable_weights.remove(v)
                layer._non_trainable_weights.append(v)
            n += 1
    return n


def fine_tune(qat_model, train_ds, val_ds, epochs: int, learning_rate: float, verbose: int = 1,
              freeze_bn: bool = True) -> dict:
    if freeze_bn:
        freeze_batchnorm(qat_model)
    qat_model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05), metrics=["accuracy"])
    hist = qat_model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


__all__ = ["fine_tune", "freeze_batchnorm", "for_export", "pin_input_range", "quantize", "strip"]
