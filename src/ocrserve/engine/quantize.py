"""int8 recognisers: static (QDQ) quantisation of the convolutions, made once and cached.

Where a dense A4 page at 200 dpi costs ~630 GFLOP, 526 are recognition and 434 of those its
1x1 convolutions; onnxruntime profiles the PP-OCRv6 small recogniser at 65% of its time in
Conv. So convolutions are quantised statically: weights int8 per output channel, activations
uint8 with ranges fixed ahead of time from real line crops, in QDQ form, which onnxruntime
fuses into QLinearConv (3.4x faster than the float Conv on the same crops).

Only the narrow stages' convolutions are int8 (up to the first with more than 192 channels),
because of the acceptance rule: page CER within 0.2 points of fp32 on every dev set. Measured
(issue 12, 2 cores, AVX-512 VNNI; recogniser seconds on 201 dev line crops, alternating, median;
SROIE receipt page CER, fp32 2.94%):

- every convolution but the stem, squeeze-and-excite and neck: 1.33-1.47x, CER 3.19% (+0.25,
  rejected; BoW F1 -1.9). Quantising those three too changed more characters (1.7% of receipt
  line characters against 1.25%) for nothing: they are little compute;
- per stage alone: the 96/192-channel stages 1.10x (+0.11 CER), the 384 ones 1.12x and 1.06x,
  the 768 one 1.02x; each stage changes 0.4-0.6% of line characters, so none is the culprit,
  and the narrow stages give the most speed per character changed. Those are kept;
- ranges: the 99.99th percentile of each activation; MinMax changed 1.25% of receipt and 1.24%
  of FUNSD line characters, 99.99% 0.91% and 0.81% (99.9%: 1.39/1.76, 99.999%: 1.35/1.01,
  entropy: 1.73/1.18). Symmetric int8 activations: 0.7x and 3.0%;
- MatMul (attention and head) stays float: 4% of the time after the GELU fix below.

The calibration rows are ``int8_lines.png`` beside this module: 112 line crops that the fp32
engine found on the committed test fixtures (``tests/fixtures``: Tesseract's pages, the IRS form,
RapidOCR's and PaddleOCR's test images; Apache-2.0 or public domain), each scaled to the
recogniser's height and padded to 320 px as :class:`~ocrserve.engine.rec.TextRecognizer` pads,
stacked. ``bench/int8_calibration.py`` rebuilds it. Nothing here reads the evaluation data.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from ocrserve.engine.models import sha256_of
from ocrserve.errors import ModelError

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"
#: Bumped whenever the recipe below changes: part of the cache stamp, so an int8 model made by
#: an older recipe is rebuilt rather than reused.
RECIPE = "qdq-conv192-p9999-v1"
CALIBRATION = Path(__file__).with_name("int8_lines.png")
#: Height and width of one calibration row: the recogniser's input height, and a width that
#: holds most crops whole (a calibrator needs one shape for every batch).
ROW_HEIGHT, ROW_WIDTH = 48, 320
CALIBRATION_BATCH = 8
PERCENTILE = 99.99
#: Channels of the widest convolution made int8 (see the module docstring).
NARROW = 192
#: The opset the quantised model is written in: per-channel DequantizeLinear needs 13.
OPSET = 17

_POOLS = frozenset({"ReduceMean", "GlobalAveragePool", "GlobalMaxPool"})
#: Ops that keep a tensor pooled: a squeeze-and-excite block is pool, conv, act, conv, act.
_PER_POSITION = frozenset(
    {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Conv", "Relu", "HardSigmoid",
     "Sigmoid", "Clip", "HardSwish"}
)  # fmt: skip


def int8_path(source: Path, cache_dir: Path) -> Path:
    """The int8 variant of ``source``: next to it when that folder is writable, else in cache."""
    name = source.name.removesuffix(".onnx") + INT8_SUFFIX
    if os.access(source.parent, os.W_OK):
        return source.parent / name
    return cache_dir / name


def ensure_int8(source: Path, source_sha256: str, cache_dir: Path) -> Path:
    """Quantise the recogniser ``source`` once (see the module docstring) and return the
    cached int8 model.

    A sidecar file holds the source's hash, the recipe and the output's hash, so a new source
    model, a new recipe or a half-written cache is rebuilt, never used.

    >>> ensure_int8(models / "PP-OCRv6_rec_small.onnx", sha, cache)  # doctest: +SKIP
    PosixPath('.../PP-OCRv6_rec_small.int8.onnx')
    """
    target = int8_path(source, cache_dir)
    stamp = target.with_suffix(".sha256")
    key = f"{source_sha256}:{RECIPE}"
    if target.is_file() and stamp.is_file():
        src_key, _, out_hash = stamp.read_text().partition(" ")
        if src_key == key and out_hash.strip() == sha256_of(target):
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("quantising %s to int8 (once; cached at %s)", source.name, target)
    # Write to a temporary name and rename: a crash mid-write or two processes quantising at
    # once can never leave a truncated model under the real name.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        quantize_recognizer(source, tmp)
        out_hash = sha256_of(tmp)
        tmp.replace(target)
        stamp.write_text(f"{key} {out_hash}\n")
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"int8 quantisation of {source} failed: {e}") from e
    return target


def calibration_rows(path: Path = CALIBRATION) -> npt.NDArray[np.float32]:
    """The calibration rows as the recogniser's input: (N, 3, 48, 320), in [-1, 1]."""
    atlas = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if atlas is None or atlas.shape[0] % ROW_HEIGHT or atlas.shape[1] != ROW_WIDTH:
        raise ModelError(f"{path} is not a calibration atlas of {ROW_HEIGHT}x{ROW_WIDTH} rows")
    rows = atlas.reshape(-1, ROW_HEIGHT, ROW_WIDTH, 3).transpose(0, 3, 1, 2)
    out: npt.NDArray[np.float32] = rows.astype(np.float32) * np.float32(2 / 255) - 1
    return out


def quantize_recognizer(source: Path, target: Path) -> None:
    """Write the QDQ int8 model of the recogniser ``source`` to ``target``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rows = calibration_rows()
    batches = [
        rows[k : k + CALIBRATION_BATCH]
        for k in range(0, len(rows) - CALIBRATION_BATCH + 1, CALIBRATION_BATCH)
    ]

    class Rows(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
        def __init__(self, name: str) -> None:
            self._feeds: Iterator[dict[str, npt.NDArray[np.float32]]] = ({name: b} for b in batches)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            return next(self._feeds, None)

    model = onnx.load(str(source))
    if model.opset_import and _onnx_opset(model) < OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
    _fuse_gelu(model)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fused, prepared = Path(tmp) / "fused.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, str(fused))
        # Shape inference and onnxruntime's basic fusions (a convolution's bias Add folded
        # into it, so the bias is quantised with it) before the quantiser reads the graph.
        quant_pre_process(str(fused), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        nodes = _convolutions_to_quantise(prepared_model)
        # The calibrator prints its progress; a server's stdout is its log stream.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(target),
                Rows(prepared_model.graph.input[0].name),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_quantize=nodes,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": PERCENTILE},
            )


def _onnx_opset(model: ModelProto) -> int:
    return next(
        (int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")),
        0,
    )


def _convolutions_to_quantise(model: ModelProto) -> list[str]:
    """The convolutions made int8: those of the narrow stages (up to the first convolution with
    more than :data:`NARROW` channels), less the stem and the squeeze-and-excite ones."""
    graph = model.graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def pooled(tensor: str) -> bool:
        node = producer.get(tensor)
        while node is not None and node.op_type in _PER_POSITION:
            node = producer.get(node.input[0])
        return node is not None and node.op_type in _POOLS

    names = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        dims = weights[node.input[1]]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if max(dims[0], dims[1] * group) > NARROW:
            break
        stem = group == 1 and dims[2:] != [1, 1]
        if not stem and not pooled(node.input[0]):
            names.append(node.name)
    return names


def _fuse_gelu(model: ModelProto) -> int:
    """Replace each erf GELU (x * 0.5 * (1 + erf(x / sqrt 2))) by one contrib Gelu node.

    onnxruntime fuses that pattern itself in a float model, but not once a DequantizeLinear
    feeds it: the int8 model then ran GELU as five element-wise ops, 1.9 s against 0.55 s
    fused on the same crops, which ate most of what the int8 convolutions saved.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    # One list of the nodes, held throughout: ids below name these objects.
    before = list(graph.node)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in before for out in node.output}
    consumers: dict[str, list[NodeProto]] = {}
    for node in before:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def const(node: NodeProto, value: float) -> bool:
        return any(
            name in consts and consts[name].size == 1 and abs(float(consts[name]) - value) < 1e-4
            for name in node.input
        )

    def only(name: str, op: str) -> NodeProto | None:
        after = consumers.get(name, [])
        return after[0] if len(after) == 1 and after[0].op_type == op else None

    replaced: dict[int, NodeProto] = {}
    dropped: set[int] = set()
    for erf in [n for n in before if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not const(div, 2**0.5):
            continue
        x = div.input[0]
        add = only(erf.output[0], "Add")
        mul = add and only(add.output[0], "Mul")
        half = mul and only(mul.output[0], "Mul")
        if not (add and const(add, 1.0) and mul and x in mul.input and half and const(half, 0.5)):
            continue
        dropped |= {id(div), id(erf), id(add), id(mul), id(half)}
        replaced[id(div)] = helper.make_node(
            "Gelu",
            [x],
            [half.output[0]],
            name=f"{erf.name}_gelu",
            domain="com.microsoft",
        )
    if not replaced:
        return 0
    nodes = [replaced.get(id(n), n) for n in before if id(n) in replaced or id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(replaced)
