"""Rebuild ``weights/mobilenetv2_100_tflite_in1k.safetensors`` from Google's int8 TFLite MobileNetV2.

The MobileNetV2 weights every desk record was trained on are a conversion of
``mobilenet_v2_1.0_224_quant.tflite`` (Google's quantisation-aware-trained MobileNetV2 1.0/224, Apache-2.0, as
published in the public repository google-coral/test_data, commit 104342d). :func:`convert_tflite_mobilenetv2`
applies the conversion's steps, so anyone holding that TFLite file rebuilds the weights:

1. read the flatbuffer with the ``tflite`` package (the schema's generated Python bindings; no TensorFlow);
2. take its weighted operators (``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``FULLY_CONNECTED``) in graph order and
   dequantise them, ``real = scale * (q - zero_point)``, per tensor or per channel (``quantized_dimension``);
   a bias is int32 with zero point 0 and ``scale = input_scale * weight_scale`` (stored with the bias tensor);
3. pair them, in order, with the convolutions and the classifier of timm's ``mobilenetv2_100`` built with
   ``pad_type="same"`` (TensorFlow's padding), changing layout (convolution OHWI → OIHW, depthwise 1HWO → O1HW,
   the 1×1 logits convolution → ``[out, in]``);
4. the TFLite graph has batch norm already folded into each convolution's bias (``BatchNorm_Fold/bias``), so
   each timm batch-norm layer becomes the identity plus that bias: weight 1, bias = the folded bias,
   running_mean 0, running_var 1 − eps (so ``(x − 0) / sqrt(1 − eps + eps) · 1 + b = x + b``);
5. drop the 1001-way classifier's first row, TF-slim's "background" class, leaving ImageNet's 1,000 classes;
6. write a safetensors file with the metadata :func:`lorsp.backbones.create_backbone` reads (``architecture``,
   ``create_kwargs``, ``mean``, ``std``; mean and std follow from the input's quantisation: uint8 ``q = 255 x``
   read as ``(q − 128) / 128`` is ``(x − 128/255) / (128/255)``), in a fixed key order, so that the output is
   byte-identical from run to run (safetensors itself writes metadata in a random, per-process order).

``lorsp data import`` calls this when it finds the TFLite file and the data root lacks the safetensors;
``lorsp data convert-tflite IN OUT`` runs it directly.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TFLITE_NAME = "mobilenet_v2_1.0_224_quant.tflite"
SAFETENSORS_NAME = "mobilenetv2_100_tflite_in1k.safetensors"
# sha256 of mobilenet_v2_1.0_224_quant.tflite in google-coral/test_data at commit 104342d
TFLITE_SHA256 = "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
TFLITE_SOURCE = f"google-coral/test_data {TFLITE_NAME} (int8, ImageNet-1k), dequantized"
ARCHITECTURE = "mobilenetv2_100"
CREATE_KWARGS = {"pad_type": "same"}
# the committed file's metadata key order (any order is valid safetensors; a fixed one makes the bytes repeatable)
METADATA_ORDER = ("architecture", "std", "input_size", "source", "mean", "create_kwargs")
WEIGHTED_OPS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "linear"}

__all__ = ["convert_tflite_mobilenetv2", "read_tflite_layers", "tflite_layers_to_state_dict",
           "input_normalisation", "TFLiteLayer", "TFLiteConversionError", "TFLITE_NAME", "SAFETENSORS_NAME",
           "TFLITE_SHA256"]


class TFLiteConversionError(ValueError):
    """A file that is not a TFLite flatbuffer, or not the MobileNetV2 the converter expects."""


@dataclass(frozen=True)
class TFLiteLayer:
    """One weighted TFLite operator, dequantised, in PyTorch layout.

    ``kind`` is ``conv`` (weight ``[O, I, kH, kW]``), ``depthwise`` (``[O, 1, kH, kW]``) or ``linear``
    (``[O, I]``); ``bias`` is ``[O]`` float32 (zeros where the operator has none)."""
    op_index: int
    kind: str
    weight_name: str
    weight: np.ndarray
    bias: np.ndarray


def _open_model(buffer: bytes, source: str):
    if len(buffer) < 8 or buffer[4:8] != b"TFL3":
        raise TFLiteConversionError(f"{source} is not a TFLite file: expected the flatbuffer identifier 'TFL3' "
                                    f"at bytes 4-8, found {buffer[4:8]!r}")
    import tflite

    model = tflite.Model.GetRootAs(buffer, 0)
    if model.SubgraphsLength() != 1:
        raise TFLiteConversionError(f"{source}: expected one subgraph (a MobileNetV2 classifier), found "
                                    f"{model.SubgraphsLength()}")
    return model


def _operator_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {value: name for name, value in vars(BuiltinOperator).items() if not name.startswith("_")}


def _tensor_values(model, graph, index: int, source: str) -> np.ndarray:
    from tflite.TensorType import TensorType

    dtypes = {TensorType.FLOAT32: np.float32, TensorType.INT32: np.int32, TensorType.UINT8: np.uint8,
              TensorType.INT8: np.int8, TensorType.INT16: np.int16}
    tensor = graph.Tensors(index)
    name = tensor.Name().decode(errors="replace")
    if tensor.Type() not in dtypes:
        raise TFLiteConversionError(f"{source}: tensor {index} ({name!r}) has TFLite type {tensor.Type()}; "
                                    f"expected float32, int32, uint8, int8 or int16")
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(data, int):  # the generated bindings return 0 for an empty buffer
        raise TFLiteConversionError(f"{source}: tensor {index} ({name!r}) has no constant data; expected the "
                                    f"weights stored in the file")
    shape = [int(s) for s in tensor.ShapeAsNumpy()]
    return np.frombuffer(data.tobytes(), dtype=dtypes[tensor.Type()]).reshape(shape)


def _quantisation(graph, index: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(scale, zero_point, quantized_dimension)`` of tensor ``index``, or None for a float tensor."""
    params = graph.Tensors(index).Quantization()
    if params is None or params.ScaleLength() == 0:
        return None
    scale = params.ScaleAsNumpy().astype(np.float64)
    zero_point = (params.ZeroPointAsNumpy().astype(np.float64) if params.ZeroPointLength()
                  else np.zeros_like(scale))
    return scale, zero_point, int(params.QuantizedDimension())


def _dequantise(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """``real = scale · (q − zero_point)`` in float64, rounded once to float32; per tensor (one scale) or per
    channel along ``axis`` (TFLite's ``quantized_dimension``)."""
    if scale.size > 1:
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((values.astype(np.float64) - zero_point) * scale).astype(np.float32)


def _float_weight(model, graph, op, source: str) -> tuple[np.ndarray, str]:
    index = op.Inputs(1)
    values = _tensor_values(model, graph, index, source)
    name = graph.Tensors(index).Name().decode(errors="replace")
    quant = _quantisation(graph, index)
    if values.dtype == np.float32:
        return values.copy(), name
    if quant is None:
        raise TFLiteConversionError(f"{source}: weight tensor {index} ({name!r}) is {values.dtype} without "
                                    f"quantisation parameters; expected a scale and zero point")
    return _dequantise(values, *quant), name


def _float_bias(model, graph, op, out_channels: int, source: str) -> np.ndarray:
    """The bias, int32 with zero point 0; its scale is the stored one, else ``input_scale · weight_scale``."""
    if op.InputsLength() < 3 or op.Inputs(2) < 0:
        return np.zeros(out_channels, np.float32)
    index = op.Inputs(2)
    values = _tensor_values(model, graph, index, source)
    if values.dtype == np.float32:
        return values.reshape(-1).copy()
    quant = _quantisation(graph, index)
    if quant is None:
        input_quant, weight_quant = _quantisation(graph, op.Inputs(0)), _quantisation(graph, op.Inputs(1))
        if input_quant is None or weight_quant is None:
            raise TFLiteConversionError(f"{source}: bias tensor {index} is int32 but neither it nor the "
                                        f"operator's input and weight carry a scale")
        quant = (input_quant[0] * weight_quant[0], np.zeros_like(weight_quant[0]), 0)
    return _dequantise(values.reshape(-1), *quant)


def read_tflite_layers(path) -> list[TFLiteLayer]:
    """The weighted operators of the TFLite file at ``path`` (``CONV_2D``, ``DEPTHWISE_CONV_2D``,
    ``FULLY_CONNECTED``), dequantised, in PyTorch layout, in graph order."""
    path = Path(path)
    model = _open_model(path.read_bytes(), str(path))
    graph, names = model.Subgraphs(0), _operator_names()
    layers = []
    for op_index in range(graph.OperatorsLength()):
        op = graph.Operators(op_index)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = WEIGHTED_OPS.get(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), ""))
        if kind is None:
            continue
        weight, name = _float_weight(model, graph, op, str(path))
        if kind == "conv":  # OHWI -> OIHW
            weight = weight.transpose(0, 3, 1, 2)
        elif kind == "depthwise":  # 1HWO -> O1HW
            weight = weight.transpose(3, 0, 1, 2)
        bias = _float_bias(model, graph, op, weight.shape[0], str(path))
        layers.append(TFLiteLayer(op_index, kind, name, np.ascontiguousarray(weight), bias))
    return layers


def input_normalisation(path) -> dict[str, object]:
    """``input_size``, ``mean`` and ``std`` implied by the TFLite input tensor: a uint8 image ``q = 255 x``
    dequantised as ``s (q − z)`` equals ``(x − mean) / std`` with ``mean = z / 255`` and ``std = 1 / (255 s)``."""
    path = Path(path)
    model = _open_model(path.read_bytes(), str(path))
    graph = model.Subgraphs(0)
    index = graph.Inputs(0)
    shape = [int(s) for s in graph.Tensors(index).ShapeAsNumpy()]
    quant = _quantisation(graph, index)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or quant is None or quant[0].size != 1:
        raise TFLiteConversionError(f"{path}: expected a quantised NHWC RGB square image input, found shape "
                                    f"{shape} with {'no' if quant is None else quant[0].size} scale(s)")
    scale, zero_point = float(quant[0][0]), float(quant[1][0])
    return {"input_size": shape[1], "mean": [zero_point / 255] * 3, "std": [1 / (255 * scale)] * 3}


def _timm_targets(model) -> list[tuple[str, object, str | None]]:
    """``(module name, module, name of the batch norm that follows it or None)`` for each convolution and
    linear layer of ``model``, in registration order (timm registers them in execution order)."""
    import torch.nn as nn

    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    targets = []
    for position, (name, module) in enumerate(layers):
        if isinstance(module, nn.BatchNorm2d):
            continue
        follower = layers[position + 1] if position + 1 < len(layers) else None
        batch_norm = follower[0] if follower and isinstance(follower[1], nn.BatchNorm2d) else None
        targets.append((name, module, batch_norm))
    return targets


def _fit_weight(layer: TFLiteLayer, name: str, module, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``layer``'s weight and bias shaped for ``module``; a 1001-way classifier loses row 0 (background)."""
    import torch.nn as nn

    weight, bias = layer.weight, layer.bias
    expected = tuple(module.weight.shape)
    if isinstance(module, nn.Linear):
        if weight.ndim == 4 and weight.shape[2:] == (1, 1):  # the 1x1 "Logits" convolution
            weight = weight[:, :, 0, 0]
        if weight.shape[0] == expected[0] + 1:  # TF-slim's class 0 is "background"
            weight, bias = weight[1:], bias[1:]
    else:
        depthwise = module.groups == module.out_channels and module.groups > 1
        if depthwise != (layer.kind == "depthwise"):
            raise TFLiteConversionError(
                f"{source}: operator {layer.op_index} ({layer.weight_name!r}) is a {layer.kind} layer but "
                f"{name} is {'a depthwise' if depthwise else 'an ordinary'} convolution; not MobileNetV2 1.0 224")
    if tuple(weight.shape) != expected:
        raise TFLiteConversionError(
            f"{source}: operator {layer.op_index} ({layer.weight_name!r}) has weight shape "
            f"{tuple(layer.weight.shape)}; {name}.weight expects {expected} (not MobileNetV2 1.0 224?)")
    return np.ascontiguousarray(weight), np.ascontiguousarray(bias)


def tflite_layers_to_state_dict(layers: list[TFLiteLayer], model, source: str = "the TFLite file") -> dict:
    """A complete state dict for the timm ``model`` (its ``state_dict()`` keys, dtypes and shapes) from the
    dequantised ``layers``: weights paired in order; each folded bias goes to the following batch norm, made the
    identity (weight 1, running_mean 0, running_var 1 − eps, num_batches_tracked 0), or to the layer's own bias."""
    import torch

    targets = _timm_targets(model)
    if len(layers) != len(targets):
        raise TFLiteConversionError(
            f"{source}: {len(layers)} convolution/fully-connected operators; expected {len(targets)} "
            f"({type(model).__name__} has {len(targets)} convolution and linear layers), so this is not "
            f"MobileNetV2 1.0 224")
    template = model.state_dict()
    state, filled = {}, set()
    for layer, (name, module, batch_norm) in zip(layers, targets):
        weight, bias = _fit_weight(layer, name, module, source)
        state[f"{name}.weight"] = torch.from_numpy(weight.copy())
        if batch_norm is not None:
            eps = getattr(model.get_submodule(batch_norm), "eps")
            channels = bias.shape[0]
            state[f"{batch_norm}.weight"] = torch.ones(channels)
            state[f"{batch_norm}.bias"] = torch.from_numpy(bias.copy())
            state[f"{batch_norm}.running_mean"] = torch.zeros(channels)
            state[f"{batch_norm}.running_var"] = torch.full((channels,), 1.0 - eps)
            state[f"{batch_norm}.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
        elif module.bias is not None:
            state[f"{name}.bias"] = torch.from_numpy(bias.copy())
        elif np.any(bias != 0):
            raise TFLiteConversionError(f"{source}: operator {layer.op_index} has a bias but {name} has none "
                                        f"and no batch norm follows it")
    missing = sorted(set(template) - set(state))
    if missing:
        raise TFLiteConversionError(f"{source}: nothing in the TFLite file fills {missing[:5]} "
                                    f"({len(missing)} keys of {type(model).__name__})")
    return {key: state[key].to(template[key].dtype).contiguous() for key in template}


def _metadata(tflite_path: Path, normalisation: dict) -> dict[str, str]:
    digest = hashlib.sha256(tflite_path.read_bytes()).hexdigest()
    source = TFLITE_SOURCE if digest == TFLITE_SHA256 else (
        f"{tflite_path.name} (TFLite, sha256 {digest}), dequantized")
    values = {"architecture": ARCHITECTURE, "create_kwargs": json.dumps(CREATE_KWARGS),
              "input_size": str(normalisation["input_size"]), "mean": json.dumps(normalisation["mean"]),
              "std": json.dumps(normalisation["std"]), "source": source}
    return {key: values[key] for key in METADATA_ORDER}


def _with_ordered_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """``data`` (a serialised safetensors file) with its ``__metadata__`` keys in ``metadata``'s order; the
    header keeps its length, so the tensor offsets stay valid."""
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > length:
        raise RuntimeError(f"re-serialised safetensors header is {len(text)} bytes, longer than {length}")
    return data[:8] + text + b" " * (length - len(text)) + data[8 + length:]


def convert_tflite_mobilenetv2(tflite_path, out_path) -> Path:
    """Convert Google's int8 ``mobilenet_v2_1.0_224_quant.tflite`` at ``tflite_path`` into a timm
    ``mobilenetv2_100`` (``pad_type="same"``) safetensors file at ``out_path`` (written atomically); see the
    module docstring for the steps. Returns ``out_path``. Raises :class:`TFLiteConversionError` naming the file
    when it is not a TFLite file or not MobileNetV2 1.0 with a 1000/1001-way classifier."""
    import timm
    from safetensors.torch import save

    tflite_path, out_path = Path(tflite_path), Path(out_path)
    if not tflite_path.is_file():
        raise FileNotFoundError(f"cannot convert {tflite_path}: no such file (expected {TFLITE_NAME})")
    normalisation = input_normalisation(tflite_path)
    model = timm.create_model(ARCHITECTURE, pretrained=False, **CREATE_KWARGS)
    state = tflite_layers_to_state_dict(read_tflite_layers(tflite_path), model, str(tflite_path))
    metadata = _metadata(tflite_path, normalisation)
    data = _with_ordered_metadata(save(state, metadata=metadata), metadata)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(f".{out_path.name}.part{os.getpid()}")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, out_path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return out_path
