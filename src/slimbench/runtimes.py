"""Deployment runtimes: the engines a model is timed under besides eager PyTorch.

One entry per runtime: ``prepare(model, example)`` returns a callable (tensor in, tensor out)
that runs the model under that runtime for any batch size, compiled or exported once; threads
are the process's (the tier's, set before measuring). A model that is already a runtime's file
(``OnnxModel``, ``OpenVinoModel``: the ONNX Runtime and OpenVINO int8 methods) is run from that
file; a runtime that cannot run it says so in the row.

Runtime code is measurement only: no method imports it, so it is not part of any case's key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .methods.quant_deploy import Artefact, OnnxModel, OpenVinoModel, export_onnx, ir_bytes, onnx_to_ir, ov_compile, \
    ort_session

Forward = Callable[[torch.Tensor], torch.Tensor]
# Inductor's mode: the default (with freezing, below); "max-autotune-no-cudagraphs" also searches
# GEMM/conv templates, which costs far more compile time on 2 cores (docs/runtimes.md).
INDUCTOR_MODE = "default"


@dataclass(frozen=True)
class Runtime:
    name: str
    prepare: Callable[[nn.Module, torch.Tensor], Forward]
    exact: bool  # True: the same numerics as eager (no separate test-set pass)
    package: str | None = None  # the import a missing dependency is named by


def eager(model: nn.Module, example: torch.Tensor) -> Forward:
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return forward


def inductor(model: nn.Module, example: torch.Tensor) -> Forward:
    """torch.compile (inductor, frozen weights, static shapes: one graph per batch size)."""
    if isinstance(model, Artefact):
        raise RuntimeError(f"{type(model).__name__} is a runtime's file, with no torch graph to compile")
    import torch._dynamo
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant-fold weights: prepacked oneDNN convs, int8 kernels after PT2E
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 1024)  # many models, one forward code
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
    compiled = torch.compile(model.eval(), mode=INDUCTOR_MODE, dynamic=False, fullgraph=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled(x)

    forward(example)  # compiles now, inside the caller's timing of prepare
    return forward


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """The ONNX graph a model is deployed as: its own (an ``OnnxModel``) or a fresh export."""
    if isinstance(model, OpenVinoModel):
        raise RuntimeError("an OpenVINO IR has no ONNX graph")
    return model.onnx_bytes() if isinstance(model, OnnxModel) else export_onnx(model, example)


def _numpy_forward(run: Callable[[np.ndarray], np.ndarray]) -> Forward:
    return lambda x: torch.from_numpy(np.asarray(run(x.detach().contiguous().numpy())))


def onnxruntime(model: nn.Module, example: torch.Tensor) -> Forward:
    session = ort_session(onnx_bytes(model, example), torch.get_num_threads())
    name = session.get_inputs()[0].name
    return _numpy_forward(lambda x: session.run(None, {name: x})[0])


def openvino(model: nn.Module, example: torch.Tensor) -> Forward:
    """OpenVINO's CPU plugin (``ov_compile``: f32, latency hint, the tier's threads) on the model's
    own IR or on its ONNX export."""
    if isinstance(model, OpenVinoModel):
        xml, weights = model.blob("xml"), model.blob("bin")
    else:
        xml, weights = ir_bytes(onnx_to_ir(onnx_bytes(model, example)))
    request = ov_compile(xml, weights, torch.get_num_threads()).create_infer_request()
    return _numpy_forward(lambda x: request.infer([x], share_inputs=True, share_outputs=False)[0])


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("eager", eager, exact=True),
    Runtime("inductor", inductor, exact=False),
    Runtime("onnxruntime", onnxruntime, exact=False, package="onnxruntime"),
    Runtime("openvino", openvino, exact=False, package="openvino"),
)}


def _first_line(error: BaseException) -> str:
    """The error's type and first telling line (OpenVINO's start with "Exception from <file>:<line>:";
    its last line then says what went wrong), on one line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith("Exception from ")]
    text = " ".join(telling[-1:] + telling[:1]) if lines and lines[0].startswith("Exception from ") else \
        (lines[0] if lines else "")
    return f"{type(error).__name__}: {text}"[:400]


def error_line(runtime: str, error: BaseException) -> str:
    """One line: which runtime failed, and why (a missing package names the install)."""
    if isinstance(error, ImportError):
        return f"{runtime}: {_first_line(error)}; fix: pip install -e . (it pins {RUNTIMES[runtime].package})"
    return f"{runtime}: {_first_line(error)}"


class Timed(nn.Module):
    """A runtime's callable as a module, for ``metrics.paired_latency`` (which times modules)."""

    def __init__(self, forward: Forward) -> None:
        super().__init__()
        self.run = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


_REFERENCES: dict[tuple[str, str, tuple], tuple[Forward, float]] = {}  # references shared by a tier's cases


def prepare_timed(name: str, model: nn.Module, examples: list[torch.Tensor],
                  reuse_key: str | None = None) -> tuple[Forward, float]:
    """(forward, seconds): ``model`` prepared under runtime ``name`` and run once on each example
    (inductor compiles one graph per batch size), the seconds those took (``compile_seconds``).
    With ``reuse_key`` (a reference's model_md5), the result is kept for this process's later cases."""
    key = (name, reuse_key or "", tuple(tuple(x.shape) for x in examples))
    if reuse_key and key in _REFERENCES:
        return _REFERENCES[key]
    start = time.perf_counter()
    forward = RUNTIMES[name].prepare(model, examples[0])
    for x in examples:
        forward(x)
    result = (forward, round(time.perf_counter() - start, 2))
    if reuse_key:
        _REFERENCES[key] = result
    return result
