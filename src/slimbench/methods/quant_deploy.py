"""Int8 for deployment runtimes: torchao's PT2E flow (lowered by inductor) and ONNX Runtime's
static QDQ quantization. Both calibrate on the images every PTQ method uses (quant.py's
``calibration_batches``); the torch.ao FX method (``quant_ptq_int8``) is the baseline they are
compared against.

- ``quant_pt2e_int8``: ``torch.export`` capture, ``prepare_pt2e`` with ``X86InductorQuantizer``
  (per-channel symmetric int8 weights, uint8 activations in 0..127), calibration, ``convert_pt2e``. The
  result is a graph of quantize/dequantize ops around float convs: slow in eager, int8 kernels
  once inductor (the ``inductor`` runtime) fuses the patterns. Not cacheable: the activation
  scales are literals in the converted graph, not state, so a state_dict cannot rebuild it;
  calibrating again takes seconds.
- ``quant_ort_int8``: the model exported to ONNX, ``onnxruntime.quantization.quantize_static``
  (QDQ, per-channel int8 weights, int8 activations). The model is an ``OnnxModel`` whose one
  state tensor is the ONNX file: cached and md5-checked like any weights.
"""

from __future__ import annotations

import io
import tempfile
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import metrics
from ..budgets import Budget
from .base import Context, Method, register
from .quant import calibrate, calibration_batches, calibration_size

OPSET = 18
BATCH = torch.export.Dim("batch", min=1, max=4096)


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The model as ONNX with a dynamic batch axis: the dynamo exporter, else TorchScript's."""
    model = model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                        dynamic_shapes=({0: BATCH},))
        return program.model_proto.SerializeToString()
    except Exception as dynamo_error:  # noqa: BLE001  (any exporter failure: try the other one)
        buffer = io.BytesIO()
        try:
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        except Exception as script_error:  # noqa: BLE001
            raise RuntimeError(f"ONNX export failed (dynamo: {_first_line(dynamo_error)}; "
                               f"torchscript: {_first_line(script_error)})") from None
        return buffer.getvalue()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def ort_session(blob: bytes, threads: int):
    """An ONNX Runtime CPU session: all graph optimisations, ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


class Artefact(nn.Module):
    """A model whose deployable form is a runtime's file, not torch modules: the file's bytes are
    its state tensors (uint8 buffers, stored and md5-checked by the case cache like weights), and
    ``info`` keeps what cannot be read off the file: stored params, MACs per image, weight bits."""

    def __init__(self, files: dict[str, bytes], params: int = 0, macs: int = 0, bits: int = 32) -> None:
        super().__init__()
        for name, blob in files.items():
            self.register_buffer(name, torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob
                                 else torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("info", torch.tensor([params, macs, bits], dtype=torch.int64))
        self._run = None

    def blob(self, name: str) -> bytes:
        return getattr(self, name).numpy().tobytes()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        for name, value in self._buffers.items():  # take the stored files' lengths, not the placeholders'
            if value is not None and value.dtype == torch.uint8 and prefix + name in state_dict:
                self._buffers[name] = torch.zeros_like(state_dict[prefix + name])
        self._run = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._run is None:
            self._run = self.runner()
        return torch.from_numpy(self._run(x.detach().contiguous().numpy()))

    def runner(self):
        raise NotImplementedError


class OnnxModel(Artefact):
    """An ONNX graph (``onnx``) run by ONNX Runtime."""

    def __init__(self, blob: bytes = b"", params: int = 0, macs: int = 0, bits: int = 32) -> None:
        super().__init__({"onnx": blob}, params, macs, bits)

    def onnx_bytes(self) -> bytes:
        return self.blob("onnx")

    def runner(self):
        session = ort_session(self.onnx_bytes(), torch.get_num_threads())
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]


class OpenVinoModel(Artefact):
    """An OpenVINO IR (``xml`` graph, ``bin`` weights) run by OpenVINO's CPU plugin."""

    def __init__(self, xml: bytes = b"", weights: bytes = b"", params: int = 0, macs: int = 0, bits: int = 32) -> None:
        super().__init__({"xml": xml, "bin": weights}, params, macs, bits)

    def runner(self):
        request = ov_compile(self.blob("xml"), self.blob("bin"), torch.get_num_threads()).create_infer_request()
        return lambda x: request.infer([x], share_inputs=True, share_outputs=False)[0]


def ov_compile(xml: bytes, weights: bytes, threads: int):
    """An OpenVINO CPU compiled model from IR bytes: ``threads`` inference threads, latency hint,
    f32 inference precision (the plugin would pick bf16 on CPUs that have it)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(model=xml.decode(), weights=ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))
    return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                             "INFERENCE_PRECISION_HINT": "f32"})


def onnx_to_ir(blob: bytes):
    """An OpenVINO model read from ONNX bytes."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(blob)
        return ov.Core().read_model(str(path))


def ir_bytes(model) -> tuple[bytes, bytes]:
    """(xml, bin) of an OpenVINO model, weights kept in their own precision (no fp16 compression)."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
        return path.read_bytes(), path.with_suffix(".bin").read_bytes()


@dataclass(frozen=True)
class DeploySettings:
    calibration_size: int | str = 1000  # training images, or "all" (as quant_ptq_int8)


class DeployInt8(Method):
    """What the deployment int8 paths share: the budget kinds, settings and the export example."""

    family = "quant"
    budget_kinds = ("bits", "bytes")
    settings_type = DeploySettings
    stored_bits = 8

    @staticmethod
    def example(ctx: Context) -> torch.Tensor:
        """Two training images: the input shape an export traces (values do not matter)."""
        return ctx.data.train.images[:2].float()


@register
class PT2EInt8(DeployInt8):
    """torchao PT2E static int8 (X86InductorQuantizer); fast under the ``inductor`` runtime."""

    name = "quant_pt2e_int8"
    cacheable = False

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)

        # Activations in 0..127 (reduce_range), as quant_ptq_int8's: without VNNI, the u8 x s8 kernels'
        # int16 sums saturate (full-range uint8 lost 1.6 points on ResNet-20 under inductor here).
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(reduce_range=True))
        example = self.example(ctx)
        captured = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: BATCH},)).module()
        prepared = prepare_pt2e(captured, quantizer)
        calibrate(prepared, ctx, calibration_size(ctx))
        converted = convert_pt2e(prepared)
        converted.eval = types.MethodType(_exported_eval, converted)  # the harness calls .eval() on every model
        return _constants_as_buffers(converted)


def _exported_eval(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``eval()`` of a converted export: already an inference graph (BN folded, no dropout);
    torchao forbids the nn.Module call, which the harness makes on every model."""
    return graph


def _constants_as_buffers(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The state a converted graph runs on, and only that: the folded int8 weights (plain
    attributes after ``convert_pt2e``) registered as buffers, and the float weights they replaced
    (parameters no node reads any more) dropped, so that the state_dict, its size and
    ``model_md5`` are those of the int8 model."""
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name in used:
        value = getattr(graph, name, None) if "." not in name else None
        if isinstance(value, torch.Tensor) and name not in graph._buffers and name not in graph._parameters:
            delattr(graph, name)
            graph.register_buffer(name, value)
    for name in [n for n, _ in [*graph.named_parameters(), *graph.named_buffers()] if n not in used]:
        owner, _, leaf = name.rpartition(".")
        delattr(graph.get_submodule(owner) if owner else graph, leaf)
    return graph


@register
class OrtInt8(DeployInt8):
    """ONNX Runtime static int8: QDQ, per-channel 7-bit weights, uint8 activations (min-max).

    uint8 activations x int8 weights is the pair ONNX Runtime's x86 kernels fuse: every conv of
    ResNet-20 becomes a QLinearConv, where int8 activations left 10 of its 19 convs in float
    between Quantize/DequantizeLinear nodes (1.63 ms at batch 1 against 0.74 ms, 2 threads, this
    AVX2 CPU). Weights in 7 bits (``reduce_range``), because without VNNI the u8 x s8 kernels sum
    pairs in int16 and saturate: full-range weights lost 1.24 points of ResNet-20's 87.97%,
    7-bit ones 0.02.
    """

    name = "quant_ort_int8"

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        example = self.example(ctx)
        batches = calibration_batches(ctx, calibration_size(ctx))

        class Reader(CalibrationDataReader):
            def __init__(self, name: str) -> None:
                self.name = name

            def get_next(self) -> dict[str, Any] | None:
                batch = next(batches, None)
                return None if batch is None else {self.name: batch.numpy()}

        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
            source.write_bytes(export_onnx(model, example))
            name = ort_session(source.read_bytes(), 1).get_inputs()[0].name
            quantize_static(str(source), str(target), Reader(name), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
            blob = target.read_bytes()
        return OnnxModel(blob, metrics.count_stored_params(model), metrics.count_macs(model, example[:1]), 8).eval()

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        return OnnxModel()


@register
class OpenVinoInt8(DeployInt8):
    """NNCF's post-training int8 for OpenVINO (performance preset: symmetric, per-channel weights)
    on the ONNX export; the model is its OpenVINO IR, run by OpenVINO."""

    name = "quant_ov_int8"

    def compress(self, model: nn.Module, budget: Budget, ctx: Context) -> nn.Module:
        import nncf

        example = self.example(ctx)
        images = [x[i:i + 1].numpy() for x in calibration_batches(ctx, calibration_size(ctx)) for i in range(len(x))]
        quantized = nncf.quantize(onnx_to_ir(export_onnx(model, example)), nncf.Dataset(images),
                                  preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(images))
        xml, weights = ir_bytes(quantized)
        return OpenVinoModel(xml, weights, metrics.count_stored_params(model), metrics.count_macs(model, example[:1]),
                             8).eval()

    def structure(self, model: nn.Module, state: dict, budget: Budget, ctx: Context) -> nn.Module:
        return OpenVinoModel()
