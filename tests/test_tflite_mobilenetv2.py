"""The TFLite → timm MobileNetV2 converter (:mod:`lorsp.data.tflite_mobilenetv2`).

A tiny quantised TFLite flatbuffer, built here with the schema's builder functions, pins down the mapping
logic everywhere (also with an empty data root): per-tensor uint8 and per-channel int8 weights, int32 biases with
a stored or an implied (``input_scale · weight_scale``) scale, an unquantised float layer, OHWI/1HWO → OIHW/O1HW,
the batch-norm identity with the folded bias, the classifier's background row dropped, a non-weighted operator
skipped. Where Google's ``mobilenet_v2_1.0_224_quant.tflite`` and the committed safetensors are at hand, the full
conversion must reproduce the committed file tensor by tensor and its metadata.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite")
import flatbuffers  # noqa: E402  (a dependency of tflite)
import tflite  # noqa: E402
import torch  # noqa: E402
from tflite.BuiltinOperator import BuiltinOperator  # noqa: E402
from tflite.TensorType import TensorType  # noqa: E402

from lorsp.data import import_data  # noqa: E402
from lorsp.data import tflite_mobilenetv2 as converter  # noqa: E402
from lorsp.data.root import data_root  # noqa: E402
from lorsp.data.tflite_mobilenetv2 import (SAFETENSORS_NAME, TFLITE_NAME, TFLiteConversionError,  # noqa: E402
                                           convert_tflite_mobilenetv2, input_normalisation, read_tflite_layers,
                                           tflite_layers_to_state_dict)

REPO = Path(__file__).resolve().parents[1]
CLASSES = 5
RNG = np.random.default_rng(24)


# ---------------------------------------------------------------------------------------------------------
# a tiny TFLite flatbuffer
# ---------------------------------------------------------------------------------------------------------
def _quantise(weight: np.ndarray, scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q, scale, zero_point)`` of a torch-layout ``weight``: ``uint8`` asymmetric per tensor, or ``int8``
    symmetric per output channel (axis 0); scales rounded to float32, as a TFLite file stores them."""
    if scheme == "uint8":
        low, high = min(weight.min(), 0.0), max(weight.max(), 0.0)
        scale = np.array([np.float32((high - low) / 255)])
        zero_point = np.round(-low / scale).astype(np.int64)
        q = np.clip(np.round(weight / scale[0]) + zero_point[0], 0, 255).astype(np.uint8)
        return q, scale, zero_point
    scale = (np.abs(weight).reshape(len(weight), -1).max(axis=1) / 127).astype(np.float32)
    shaped = scale.reshape([-1] + [1] * (weight.ndim - 1))
    q = np.clip(np.round(weight / shaped), -127, 127).astype(np.int8)
    return q, scale, np.zeros(len(scale), np.int64)


def _expected(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    shape = [-1] + [1] * (q.ndim - 1) if scale.size > 1 else [1]
    return ((q.astype(np.float64) - zero_point.reshape(shape)) * scale.astype(np.float64).reshape(shape)
            ).astype(np.float32)


class _Flatbuffer:
    """The few TFLite tables a weights reader looks at: buffers, quantised tensors, operators."""

    def __init__(self):
        self.builder = flatbuffers.Builder(1 << 16)
        self.buffers, self.tensors, self.operators, self.codes = [self._buffer(None)], [], [], {}

    def _vector(self, start, items):
        start(self.builder, len(items))
        for item in reversed(items):
            self.builder.PrependUOffsetTRelative(item)
        return self.builder.EndVector()

    def _buffer(self, data: np.ndarray | None):
        vector = None if data is None else self.builder.CreateNumpyVector(
            np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8))
        tflite.BufferStart(self.builder)
        if vector is not None:
            tflite.BufferAddData(self.builder, vector)
        return tflite.BufferEnd(self.builder)

    def tensor(self, name, shape, dtype, data=None, scale=None, zero_point=None, axis=0) -> int:
        b = self.builder
        quant = None
        if scale is not None:
            scales = b.CreateNumpyVector(np.asarray(scale, np.float32))
            zeros = b.CreateNumpyVector(np.asarray(zero_point, np.int64))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scales)
            tflite.QuantizationParametersAddZeroPoint(b, zeros)
            tflite.QuantizationParametersAddQuantizedDimension(b, axis)
            quant = tflite.QuantizationParametersEnd(b)
        buffer = 0
        if data is not None:
            self.buffers.append(self._buffer(data))
            buffer = len(self.buffers) - 1
        name_offset, shape_offset = b.CreateString(name), b.CreateNumpyVector(np.asarray(shape, np.int32))
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape_offset)
        tflite.TensorAddType(b, dtype)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, name_offset)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        self.tensors.append(tflite.TensorEnd(b))
        return len(self.tensors) - 1

    def operator(self, builtin: int, inputs: list[int], outputs: list[int]) -> None:
        b = self.builder
        index = self.codes.setdefault(builtin, len(self.codes))
        inputs_offset = b.CreateNumpyVector(np.asarray(inputs, np.int32))
        outputs_offset = b.CreateNumpyVector(np.asarray(outputs, np.int32))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, index)
        tflite.OperatorAddInputs(b, inputs_offset)
        tflite.OperatorAddOutputs(b, outputs_offset)
        self.operators.append(tflite.OperatorEnd(b))

    def finish(self, graph_input: int, graph_output: int) -> bytes:
        b = self.builder
        codes = []
        for builtin in sorted(self.codes, key=self.codes.get):
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(builtin, 127))
            tflite.OperatorCodeAddBuiltinCode(b, builtin)
            codes.append(tflite.OperatorCodeEnd(b))
        tensors = self._vector(tflite.SubGraphStartTensorsVector, self.tensors)
        operators = self._vector(tflite.SubGraphStartOperatorsVector, self.operators)
        inputs, outputs = (b.CreateNumpyVector(np.asarray([i], np.int32)) for i in (graph_input, graph_output))
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors)
        tflite.SubGraphAddOperators(b, operators)
        tflite.SubGraphAddInputs(b, inputs)
        tflite.SubGraphAddOutputs(b, outputs)
        subgraphs = self._vector(tflite.ModelStartSubgraphsVector, [tflite.SubGraphEnd(b)])
        code_vector = self._vector(tflite.ModelStartOperatorCodesVector, codes)
        buffers = self._vector(tflite.ModelStartBuffersVector, self.buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, code_vector)
        tflite.ModelAddSubgraphs(b, subgraphs)
        tflite.ModelAddBuffers(b, buffers)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


# (timm key, kind, torch-layout shape, weight scheme, bias: "stored" scale, "implied" scale, or "float")
TINY_LAYERS = [("conv_stem", "conv", (8, 3, 3, 3), "uint8", "stored"),
               ("blocks.0.0.conv_dw", "depthwise", (8, 1, 3, 3), "int8", "stored"),
               ("blocks.0.0.conv_pw", "conv", (8, 8, 1, 1), "uint8", "implied"),
               ("blocks.1.0.conv_pw", "conv", (16, 8, 1, 1), "int8", "stored"),
               ("blocks.1.0.conv_dw", "depthwise", (16, 1, 3, 3), "uint8", "stored"),
               ("blocks.1.0.conv_pwl", "conv", (8, 16, 1, 1), "float", "float"),
               ("conv_head", "conv", (16, 8, 1, 1), "uint8", "stored"),
               ("classifier", "conv", (CLASSES + 1, 16, 1, 1), "uint8", "stored")]
TO_TFLITE = {"conv": (0, 2, 3, 1), "depthwise": (1, 2, 3, 0)}  # OIHW -> OHWI, O1HW -> 1HWO
BUILTIN = {"conv": BuiltinOperator.CONV_2D, "depthwise": BuiltinOperator.DEPTHWISE_CONV_2D}


def _add_layer(fb: _Flatbuffer, key, kind, shape, scheme, bias_mode, activation: int) -> dict:
    """One quantised layer in TFLite layout; returns its expected torch-layout float weight and bias."""
    weight = RNG.normal(0, 0.3, shape).astype(np.float32)
    bias = RNG.normal(0, 0.5, shape[0]).astype(np.float32)
    input_scale = np.float32(0.02)
    tflite_axis = 0 if kind == "conv" else 3
    if scheme == "float":
        w_index = fb.tensor(f"{key}/weights", weight.transpose(TO_TFLITE[kind]).shape, TensorType.FLOAT32,
                            weight.transpose(TO_TFLITE[kind]))
        b_index = fb.tensor(f"{key}/bias", bias.shape, TensorType.FLOAT32, bias)
        expected_weight, expected_bias = weight, bias
    else:
        q, scale, zero_point = _quantise(weight, scheme)
        dtype = TensorType.UINT8 if scheme == "uint8" else TensorType.INT8
        stored = q.transpose(TO_TFLITE[kind])
        w_index = fb.tensor(f"{key}/weights_quant", stored.shape, dtype, stored, scale, zero_point,
                            tflite_axis if scale.size > 1 else 0)
        bias_scale = (np.float64(input_scale) * scale.astype(np.float64)).astype(np.float32)
        bias_scale = np.broadcast_to(bias_scale, bias.shape).copy()
        q_bias = np.round(bias / bias_scale).astype(np.int32)
        stored_scale = (bias_scale, np.zeros(len(bias), np.int64)) if bias_mode == "stored" else (None, None)
        b_index = fb.tensor(f"{key}/BatchNorm_Fold/bias", bias.shape, TensorType.INT32, q_bias, *stored_scale)
        expected_weight = _expected(q, scale, zero_point)
        implied = np.float64(input_scale) * scale.astype(np.float64)
        expected_bias = (q_bias * (bias_scale.astype(np.float64) if bias_mode == "stored" else
                                   np.broadcast_to(implied, bias.shape))).astype(np.float32)
        assert np.abs(expected_weight - weight).max() <= scale.max() / 2 + 1e-7  # the fixture quantises right
    output = fb.tensor(f"{key}/out", (1, 4, 4, shape[0]), TensorType.UINT8, None, [0.02], [0])
    fb.operator(BUILTIN[kind], [activation, w_index, b_index], [output])
    return dict(key=key, weight=expected_weight, bias=expected_bias, output=output)


def _tiny_tflite(path: Path) -> list[dict]:
    """Writes the tiny model to ``path``; returns per layer the expected weights (torch layout)."""
    fb = _Flatbuffer()
    activation = graph_input = fb.tensor("input", (1, 8, 8, 3), TensorType.UINT8, None, [1 / 128], [128])
    layers = []
    for spec in TINY_LAYERS:
        layers.append(_add_layer(fb, *spec, activation))
        activation = layers[-1]["output"]
        if spec[0] == "blocks.1.0.conv_pwl":  # a residual ADD: no weights, must be skipped
            added = fb.tensor("add", (1, 4, 4, 8), TensorType.UINT8, None, [0.02], [0])
            fb.operator(BuiltinOperator.ADD, [activation, activation], [added])
            activation = added
    path.write_bytes(fb.finish(graph_input, activation))
    return layers


def _tiny_timm_model():
    import torch.nn as nn
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    return EfficientNet(block_args=decode_arch_def([["ds_r1_k3_s1_c8"], ["ir_r1_k3_s2_e2_c8"]]), num_features=16,
                        stem_size=8, num_classes=CLASSES, pad_type="same", act_layer=nn.ReLU6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    return path, _tiny_tflite(path)


# ---------------------------------------------------------------------------------------------------------
# the mapping logic, on the tiny model (runs everywhere)
# ---------------------------------------------------------------------------------------------------------
def test_reader_dequantises_and_reorders_the_weighted_operators(tiny):
    path, layers = tiny
    read = read_tflite_layers(path)
    assert [r.kind for r in read] == [kind for _, kind, *_ in TINY_LAYERS]  # the ADD is skipped
    assert [r.op_index for r in read] == [0, 1, 2, 3, 4, 5, 7, 8]
    for got, want in zip(read, layers):
        np.testing.assert_allclose(got.weight, want["weight"], rtol=1e-6, atol=0, err_msg=want["key"])
        np.testing.assert_allclose(got.bias, want["bias"], rtol=1e-6, atol=0, err_msg=want["key"])
    assert input_normalisation(path) == {"input_size": 8, "mean": [128 / 255] * 3, "std": [128 / 255] * 3}


def test_state_dict_folds_batch_norm_and_drops_the_background_logit(tiny):
    path, layers = tiny
    model = _tiny_timm_model()
    state = tflite_layers_to_state_dict(read_tflite_layers(path), model, str(path))
    template = model.state_dict()
    assert list(state) == list(template)
    assert all(state[k].dtype == template[k].dtype and state[k].shape == template[k].shape for k in template)
    by_key = {layer["key"]: layer for layer in layers}
    np.testing.assert_allclose(state["classifier.weight"].numpy(), by_key["classifier"]["weight"][1:, :, 0, 0],
                               rtol=1e-6)
    np.testing.assert_allclose(state["classifier.bias"].numpy(), by_key["classifier"]["bias"][1:], rtol=1e-6)
    for conv, bn in [("conv_stem", "bn1"), ("blocks.0.0.conv_dw", "blocks.0.0.bn1"),
                     ("blocks.1.0.conv_pwl", "blocks.1.0.bn3"), ("conv_head", "bn2")]:
        np.testing.assert_allclose(state[f"{conv}.weight"].numpy(), by_key[conv]["weight"], rtol=1e-6)
        np.testing.assert_allclose(state[f"{bn}.bias"].numpy(), by_key[conv]["bias"], rtol=1e-6)
        assert torch.equal(state[f"{bn}.weight"], torch.ones_like(state[f"{bn}.weight"]))
        assert torch.equal(state[f"{bn}.running_mean"], torch.zeros_like(state[f"{bn}.running_mean"]))
        assert torch.equal(state[f"{bn}.running_var"], torch.full_like(state[f"{bn}.running_var"], 1 - 1e-5))
    # in eval mode each batch norm is then "+ folded bias": the stem's output is conv(x) + b, then ReLU6
    model.load_state_dict(state)
    model.eval()
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        conv = model.conv_stem(image)
        expected = (conv + state["bn1.bias"].view(1, -1, 1, 1)).clamp(0, 6)
        torch.testing.assert_close(model.bn1(conv), expected, rtol=1e-5, atol=1e-5)


def test_mismatched_files_are_refused_with_the_file_and_what_was_expected(tiny, tmp_path):
    path, _ = tiny
    not_tflite = tmp_path / "weights.tflite"
    not_tflite.write_bytes(b"PK\x03\x04 a zip, not a flatbuffer")
    with pytest.raises(TFLiteConversionError, match=r"weights\.tflite is not a TFLite file.*TFL3"):
        read_tflite_layers(not_tflite)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        convert_tflite_mobilenetv2(tmp_path / "missing.tflite", tmp_path / "out.safetensors")
    with pytest.raises(TFLiteConversionError, match=r"tiny\.tflite: 8 convolution.*expected 53.*MobileNetV2 1\.0"):
        convert_tflite_mobilenetv2(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    wider = _tiny_timm_model()
    wider.reset_classifier(CLASSES + 3)
    wrong_shape = r"operator 8 .*\(6, 16, 1, 1\).*classifier\.weight expects \(8, 16\)"
    with pytest.raises(TFLiteConversionError, match=wrong_shape):
        tflite_layers_to_state_dict(read_tflite_layers(path), wider, str(path))
    swapped = read_tflite_layers(path)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    wrong_kind = r"operator 2 .* conv layer but blocks\.0\.0\.conv_dw is a depthwise"
    with pytest.raises(TFLiteConversionError, match=wrong_kind):
        tflite_layers_to_state_dict(swapped, _tiny_timm_model(), str(path))


def test_import_converts_a_bundled_tflite_only_when_the_safetensors_is_missing(tiny, tmp_path, monkeypatch):
    path, _ = tiny
    calls = []

    def fake_convert(source, target):
        calls.append((Path(source).name, Path(target)))
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(b"converted")
        return Path(target)

    monkeypatch.setattr(converter, "convert_tflite_mobilenetv2", fake_convert)
    bundle = tmp_path / "bundle"
    (bundle / "weights").mkdir(parents=True)
    (bundle / "weights" / TFLITE_NAME).write_bytes(path.read_bytes())
    root = tmp_path / "root"
    first = import_data(bundle, root=root)
    assert calls == [(TFLITE_NAME, root / "weights" / SAFETENSORS_NAME)]
    assert first[0]["kind"] == "weights converted from TFLite" and first[0]["written"] == 1
    again = import_data(bundle / "weights" / TFLITE_NAME, root=root)  # the file itself; already converted
    assert len(calls) == 1 and again[0]["already_present"] == 1
    (bundle / "weights" / SAFETENSORS_NAME).write_bytes(b"the committed weights")  # a bundled safetensors wins
    other_root = tmp_path / "other"
    results = import_data(bundle, root=other_root)
    assert len(calls) == 1 and [r["kind"] for r in results] == ["weights", "weights converted from TFLite"]
    assert (other_root / "weights" / SAFETENSORS_NAME).read_bytes() == b"the committed weights"


# ---------------------------------------------------------------------------------------------------------
# the real file, where it is at hand: the conversion reproduces the committed weights
# ---------------------------------------------------------------------------------------------------------
def _real_pair() -> tuple[Path, Path] | None:
    folders = [Path("/work/shared/data/weights"), REPO.parent / "shared" / "data" / "weights",
               data_root() / "weights"]
    tflites = [f / TFLITE_NAME for f in folders if (f / TFLITE_NAME).is_file()]
    committed = [f / SAFETENSORS_NAME for f in folders if (f / SAFETENSORS_NAME).is_file()]
    return (tflites[0], committed[0]) if tflites and committed else None


REAL = _real_pair()


@pytest.mark.skipif(REAL is None, reason=f"{TFLITE_NAME} and the committed {SAFETENSORS_NAME} are not both in "
                                         f"../shared/data/weights or the data root's weights/")
def test_conversion_reproduces_the_committed_weights(tmp_path):
    from safetensors import safe_open

    tflite_path, committed = REAL
    assert hashlib.sha256(tflite_path.read_bytes()).hexdigest() == converter.TFLITE_SHA256, tflite_path
    result = import_data(tflite_path, root=tmp_path)  # the data root lacks the safetensors: converted
    rebuilt = tmp_path / "weights" / SAFETENSORS_NAME
    assert result[0]["written"] == 1 and rebuilt.is_file()
    with safe_open(rebuilt, "pt") as ours, safe_open(committed, "pt") as theirs:
        assert ours.metadata() == theirs.metadata()
        assert sorted(ours.keys()) == sorted(theirs.keys()) and len(ours.keys()) == 314
        worst = 0.0
        for key in theirs.keys():
            a, b = ours.get_tensor(key), theirs.get_tensor(key)
            assert a.dtype == b.dtype and a.shape == b.shape, key
            if a.is_floating_point():
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=key)
                worst = max(worst, float((a.double() - b.double()).abs().max()))
            else:
                assert torch.equal(a, b), key
    identical = hashlib.sha256(rebuilt.read_bytes()).digest() == hashlib.sha256(committed.read_bytes()).digest()
    print(f"\nrebuilt {rebuilt.name}: max abs difference {worst:.3g} over 314 tensors; "
          f"byte-identical to {committed}: {identical}", file=sys.stderr)
