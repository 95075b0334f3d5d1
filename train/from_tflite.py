"""Start training from a scopelite TFLite model (int8 or float): ``celltrain fit --weights model.tflite``.

A lab that has only the shipped int8 model (no float checkpoint) can fine-tune it on its own cells.
The converter folded each BatchNormalization into the convolution before it (kernel scaled per output
channel, the shift moved into the bias) and quantised the weights per channel. Here the weights are
dequantised (real = scale * (q - zero_point)) and put back into the same Keras architecture:

* a convolution followed by BatchNormalization gets the folded kernel; the BN layer gets the folded bias
  as its beta and identity statistics, so the float model computes what the int8 graph computes, up to
  activation rounding;
* :func:`restandardise_batchnorm` then gives those BN layers the real per-channel statistics of their
  inputs (mean m, variance v, measured on training images) with gamma = sqrt(v + eps), beta = bias + m:
  the function is unchanged in inference mode, and a BN layer that trains sees inputs it already knows.

Weighted ops are matched to Keras layers in execution order (CONV_2D -> Conv2D, DEPTHWISE_CONV_2D ->
DepthwiseConv2D, FULLY_CONNECTED -> Dense), and every shape must match, so a model of another architecture,
input channels or class count is refused with one line.
The pure array logic (dequantisation, layouts, folding) is apart from the interpreter and Keras.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np

from scopelite.edge.errors import UserError

WEIGHTED_OPS = {"CONV_2D": "Conv2D", "DEPTHWISE_CONV_2D": "DepthwiseConv2D", "FULLY_CONNECTED": "Dense"}


@dataclass
class WeightedOp:
    """One weighted op of a TFLite graph, dequantised, in TFLite layout."""

    op: str
    kernel: np.ndarray  # CONV_2D [out, kh, kw, in]; DEPTHWISE [1, kh, kw, in*mult]; FC [out, in]
    bias: np.ndarray  # [out]; zeros where the op has none


def dequantize(values: np.ndarray, quant: dict) -> np.ndarray:
    """real = scale * (q - zero_point), per tensor or per channel along ``quantized_dimension``."""
    values = np.asarray(values)
    scales = np.asarray(quant.get("scales", []), np.float64)
    if values.dtype.kind == "f" or scales.size == 0:
        return values.astype(np.float32)
    zps = np.asarray(quant.get("zero_points", np.zeros_like(scales)), np.float64)
    if scales.size == 1:
        return (scales[0] * (values.astype(np.float64) - zps[0])).astype(np.float32)
    axis = int(quant.get("quantized_dimension", 0))
    shape = [1] * values.ndim
    shape[axis] = scales.size
    return (scales.reshape(shape) * (values.astype(np.float64) - zps.reshape(shape))).astype(np.float32)


def to_keras_layout(op: str, kernel: np.ndarray, depth_multiplier: int = 1) -> np.ndarray:
    """A TFLite kernel in the layout Keras stores."""
    if op == "CONV_2D":  # [out, kh, kw, in] -> [kh, kw, in, out]
        return np.transpose(kernel, (1, 2, 3, 0))
    if op == "DEPTHWISE_CONV_2D":  # [1, kh, kw, in*mult] -> [kh, kw, in, mult]
        _, kh, kw, c = kernel.shape
        return kernel.reshape(kh, kw, c // depth_multiplier, depth_multiplier)
    if op == "FULLY_CONNECTED":  # [out, in] -> [in, out]
        return kernel.T
    raise ValueError(op)


def unfolded_batchnorm(bias: np.ndarray, epsilon: float) -> list[np.ndarray]:
    """[gamma, beta, moving_mean, moving_variance] of a BN layer that adds ``bias`` and nothing else."""
    n = bias.shape[0]
    return [np.ones(n, np.float32), bias.astype(np.float32), np.zeros(n, np.float32),
            np.full(n, 1.0 - epsilon, np.float32)]


def restandardised(bn_weights: list[np.ndarray], mean: np.ndarray, var: np.ndarray,
                   epsilon: float) -> list[np.ndarray]:
    """BN weights with moving statistics (mean, var) that compute the same function as ``bn_weights``.

    Inference-mode BN is y = gamma * (x - mu) / sqrt(sigma2 + eps) + beta = a * x + b; keep a and b.
    """
    gamma, beta, mu, sigma2 = (np.asarray(w, np.float64) for w in bn_weights)
    a = gamma / np.sqrt(sigma2 + epsilon)
    b = beta - a * mu
    new_gamma = a * np.sqrt(np.asarray(var, np.float64) + epsilon)
    new_beta = b + a * np.asarray(mean, np.float64)
    return [w.astype(np.float32) for w in (new_gamma, new_beta, np.asarray(mean), np.asarray(var))]


def read_weighted_ops(path: str | Path) -> list[WeightedOp]:
    """The CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops of a .tflite file, in execution order."""
    from scopelite.edge import runtime  # noqa: PLC0415 - the one import point of the interpreter

    interp = runtime.make_interpreter(path, plain=True)  # plain: no delegate hides the graph's ops
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    out = []
    for op in runtime.graph_ops(interp):
        name = op["op_name"]
        if name not in WEIGHTED_OPS:
            continue
        ins = list(op["inputs"])
        w = tensors[ins[1]]
        kernel = dequantize(interp.get_tensor(ins[1]), w["quantization_parameters"])
        if len(ins) > 2 and ins[2] >= 0:
            bias = dequantize(interp.get_tensor(ins[2]), tensors[ins[2]]["quantization_parameters"])
        else:  # output channels: last axis of a depthwise kernel, first of the others
            bias = np.zeros(kernel.shape[-1 if name == "DEPTHWISE_CONV_2D" else 0], np.float32)
        out.append(WeightedOp(name, kernel, bias))
    if not out:
        raise UserError(f"--weights {path}: the model has no convolution or dense layer to take weights from")
    return out


def sidecar_labels(path: str | Path) -> list[str] | None:
    """The class names in the model's JSON sidecar, or None when it has no readable one."""
    from scopelite.edge.bundle import load_sidecar  # noqa: PLC0415

    try:
        return list(load_sidecar(path, check_hash=False).labels)
    except UserError:
        return None


def _inbound_layer(layer):
    node = layer._inbound_nodes[0]  # noqa: SLF001 - tf-keras has no public accessor
    inbound = node.inbound_layers
    return inbound[0] if isinstance(inbound, (list, tuple)) else inbound


def load_into(model, path: str | Path) -> int:
    """Set ``model``'s weights from the TFLite model at ``path``; returns the number of layers set.

    BatchNormalization layers after a convolution get identity statistics; call
    :func:`restandardise_batchnorm` with training images to give them real ones.
    """
    from ._keras import keras  # noqa: PLC0415

    ops = read_weighted_ops(path)
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    # DepthwiseConv2D subclasses Conv2D in tf-keras: test the exact class.
    layers = [layer for layer in model.layers if type(layer) in kinds]
    bn_after = {id(_inbound_layer(layer)): layer for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization)}
    if len(layers) != len(ops):
        raise UserError(f"--weights {path}: it has {len(ops)} convolution/dense ops, this {model.name} has "
                        f"{len(layers)} such layers; start from a model of the same --arch")
    for i, (op, layer) in enumerate(zip(ops, layers)):
        if WEIGHTED_OPS[op.op] != type(layer).__name__:
            raise UserError(f"--weights {path}: op {i} is {op.op} where {model.name} has {type(layer).__name__} "
                            f"({layer.name}); start from a model of the same --arch")
        mult = getattr(layer, "depth_multiplier", 1)
        kernel = to_keras_layout(op.op, op.kernel, mult)
        current = layer.get_weights()
        if kernel.shape != current[0].shape:
            raise UserError(f"--weights {path}: {layer.name} needs a kernel of shape {current[0].shape}, the "
                            f"model has {kernel.shape} (another class count or architecture?)")
        bn = bn_after.get(id(layer))
        if layer.use_bias:
            layer.set_weights([kernel, op.bias.reshape(current[1].shape)])
        elif bn is not None:
            layer.set_weights([kernel])
            bn.set_weights(unfolded_batchnorm(op.bias, bn.epsilon))
        elif np.any(op.bias):
            raise UserError(f"--weights {path}: {layer.name} has no bias and no BatchNormalization to hold one")
        else:
            layer.set_weights([kernel])
    return len(layers)


def restandardise_batchnorm(model, images: np.ndarray, batch_size: int = 32) -> int:
    """Give every BN layer the per-channel mean/variance of its inputs over ``images`` (uint8 or float
    pixels as the model takes them), adjusting gamma and beta so the inference function is unchanged.
    Returns the number of BN layers changed."""
    from ._keras import keras  # noqa: PLC0415

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns or len(images) == 0:
        return 0
    probe = keras.Model(model.inputs, [b.input for b in bns])
    sums = [np.zeros(b.moving_mean.shape, np.float64) for b in bns]
    squares = [np.zeros_like(s) for s in sums]
    counts = [0] * len(bns)
    for i in range(0, len(images), batch_size):
        outs = probe(np.asarray(images[i:i + batch_size], np.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for j, o in enumerate(outs):
            o = np.asarray(o, np.float64).reshape(-1, o.shape[-1])
            sums[j] += o.sum(0)
            squares[j] += (o * o).sum(0)
            counts[j] += o.shape[0]
    for b, s, q, n in zip(bns, sums, squares, counts):
        mean = s / n
        var = np.maximum(q / n - mean * mean, 0.0)
        b.set_weights(restandardised(b.get_weights(), mean, var, b.epsilon))
    return len(bns)
