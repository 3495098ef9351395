"""The only module that imports onnxruntime: one wrapper around an inference session.

It checks that the execution providers asked for really loaded (onnxruntime silently falls
back to CPU otherwise) and re-raises runtime failures as :class:`~ocrserve.errors.ModelError`.
``InferenceSession.run`` is thread-safe, so one :class:`OrtSession` serves every thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from ocrserve.errors import ModelError

log = logging.getLogger(__name__)

# onnxruntime's Linux builds carry Microsoft's 1DS telemetry client (the library holds
# mobile.events.data.microsoft.com). ocrserve promises to run offline and to open no connection
# it was not asked to: turn it off before the first session exists, once per process.
ort.disable_telemetry_events()

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """How sessions run. ``providers=()`` means CUDA when onnxruntime has it, else CPU.

    >>> RuntimeOptions(intra_op_threads=1, providers=("CPUExecutionProvider",))
    RuntimeOptions(intra_op_threads=1, providers=('CPUExecutionProvider',))
    """

    intra_op_threads: int = 0
    providers: tuple[str, ...] = ()


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """The providers to ask for: the requested ones, or CUDA-then-CPU when it is available."""
    available = available_providers()
    if not requested:
        return [CUDA, CPU] if CUDA in available else [CPU]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ModelError(
            f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
            f"build; available: {', '.join(available)}"
        )
    return list(requested)


class OrtSession:
    """One ONNX model, ready to run from any thread.

    With ``argmax=True`` the model's output is reduced over its last axis inside the graph,
    and :meth:`run_argmax` returns the index and the value of each row's maximum instead of
    the whole tensor (see :func:`_append_argmax`).

    >>> s = OrtSession(Path("PP-OCRv6_det_small.onnx"), RuntimeOptions())  # doctest: +SKIP
    >>> probs = s.run(batch)                                                 # doctest: +SKIP
    """

    def __init__(self, path: Path, options: RuntimeOptions, *, argmax: bool = False) -> None:
        self.path = path
        self.argmax = argmax
        #: Size of the output's last axis, when the model states it (before any reduction).
        self.classes: int | None = None
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        # onnxruntime's CPU arena, shrunk at the end of every run (``self._run``). Without the
        # arena every activation comes from malloc, and a run at a shape not seen before
        # (every new batch width) fragments the heap: 484 MB above the resting RSS for a
        # 7 x 1152 px recogniser batch, 145 MB at a repeated shape; through the arena 254 MB
        # the first time, 153 after, and its regions go back to the OS as each run ends
        # (unshrunk, it would keep the largest activation ever seen for the process's life).
        # `ocrserve serve`, 4 clients, 3 minutes (issue 12 item 5): peak RSS 1129 MB without
        # the arena, 789 MB with it. It costs ~8% CPU (the regions are faulted in afresh each
        # run; engine A/B, 8 speed images x 6 rounds), wall time within this machine's noise.
        so.enable_cpu_mem_arena = True
        so.log_severity_level = 3
        providers = resolve_providers(options.providers)
        try:
            model: str | bytes = str(path)
            if argmax:
                model, self.classes = _append_argmax(path)
            self._session = ort.InferenceSession(model, sess_options=so, providers=providers)
            del model
        except Exception as e:  # onnxruntime and onnx raise their own untyped errors
            raise ModelError(f"cannot load model {path}: {e}") from e
        loaded = self._session.get_providers()
        # A requested GPU provider that failed to initialise (no driver, wrong CUDA) is only a
        # warning inside onnxruntime; say it once, loudly, instead of running slowly on CPU.
        if options.providers and loaded[0] != providers[0]:
            raise ModelError(
                f"execution provider {providers[0]} did not load for {path.name}; "
                f"onnxruntime used {', '.join(loaded)}"
            )
        if not options.providers and CUDA in providers and CUDA not in loaded:
            log.warning("CUDA is installed but did not load for %s; using CPU", path.name)
        self.providers: tuple[str, ...] = tuple(loaded)
        self._input = self._session.get_inputs()[0].name
        self._run = ort.RunOptions()
        self._run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        try:
            out = self._session.run(None, {self._input: batch}, self._run)
        except Exception as e:
            raise ModelError(
                f"inference failed in {self.path.name} on input {batch.shape}: {e}"
            ) from e
        return np.asarray(out[0], dtype=np.float32)

    def run_argmax(
        self, batch: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Index and value of the maximum over the output's last axis (``argmax=True``)."""
        if not self.argmax:
            raise ModelError(f"{self.path.name} was loaded without argmax=True")
        try:
            best, top = self._session.run([_ARGMAX, _MAX], {self._input: batch}, self._run)
        except Exception as e:
            raise ModelError(
                f"inference failed in {self.path.name} on input {batch.shape}: {e}"
            ) from e
        return np.asarray(best, dtype=np.int64), np.asarray(top, dtype=np.float32)


_ARGMAX = "ocrserve_argmax"
_MAX = "ocrserve_max"


def _append_argmax(path: Path) -> tuple[bytes, int | None]:
    """The model file with ArgMax and ReduceMax over the last axis of its first output
    appended as two more outputs, which :meth:`OrtSession.run_argmax` fetches instead of it;
    and that axis' size when the graph states it.

    The recogniser's output is (batch, width / 8, 18,710 classes) floats, 75 MB for a batch of
    8192 px, and greedy CTC decoding reads only each step's best class and its probability.
    Fetched this way the tensor is freed at the end of the run instead of being returned and
    held while decoding (217 -> 145 MB above the resting RSS for a 7 x 1152 px batch, issue 12
    item 5). Both reductions read the same floats numpy did (ties: the first index, as numpy's
    argmax), so the indices and values are identical.

    The nodes go in as a serialised fragment after the file's bytes: protobuf merges a
    concatenation into one message, appending repeated fields (nodes, outputs). Re-serialising
    the whole 21 MB model cost 0.24-0.4 s more of cold start here.
    """
    model = onnx.load(str(path))
    out = model.graph.output[0]
    dims = out.type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    del model
    graph = onnx.GraphProto()
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18 on
        axes = helper.make_tensor(f"{_MAX}_axes", TensorProto.INT64, [1], [-1])
        graph.initializer.append(axes)
        reduce = helper.make_node("ReduceMax", [out.name, axes.name], [_MAX], keepdims=0)
    else:
        reduce = helper.make_node("ReduceMax", [out.name], [_MAX], axes=[-1], keepdims=0)
    argmax = helper.make_node("ArgMax", [out.name], [_ARGMAX], axis=-1, keepdims=0)
    graph.node.extend([argmax, reduce])
    graph.output.extend(
        [
            helper.make_tensor_value_info(_ARGMAX, TensorProto.INT64, None),
            helper.make_tensor_value_info(_MAX, TensorProto.FLOAT, None),
        ]
    )
    fragment = onnx.ModelProto(graph=graph).SerializeToString()
    return path.read_bytes() + fragment, classes
