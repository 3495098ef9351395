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
import onnxruntime as ort

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

    >>> s = OrtSession(Path("PP-OCRv6_det_small.onnx"), RuntimeOptions())  # doctest: +SKIP
    >>> probs = s.run(batch)                                                 # doctest: +SKIP
    """

    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        self.path = path
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        # The arena keeps the largest activation ever seen (a huge page) for the life of the
        # process; without it peak RSS follows the current input instead.
        so.enable_cpu_mem_arena = False
        so.log_severity_level = 3
        providers = resolve_providers(options.providers)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own untyped errors
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
        self._metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        try:
            out = self._session.run(None, {self._input: batch})
        except Exception as e:
            raise ModelError(
                f"inference failed in {self.path.name} on input {batch.shape}: {e}"
            ) from e
        return np.asarray(out[0], dtype=np.float32)
