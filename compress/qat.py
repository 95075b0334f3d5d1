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


def scope():
    """Context needed to load/clone a saved QAT model."""
    q = tfmot().quantization.keras
    return q.quantize_scope({"ScopeliteOutputOnly": _output_only_config_class()})


def copy_qat_weights(src, dst) -> None:
    """Weights (incl. quantiser ranges) from a QAT model to an identical one with another batch size."""
    dst.set_weights(src.get_weights())


def fine_tune(qat_model, train_ds, val_ds, epochs: int, learning_rate: float, verbose: int = 1) -> dict:
    qat_model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05), metrics=["accuracy"])
    hist = qat_model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


__all__ = ["copy_qat_weights", "fine_tune", "quantize", "scope"]
