"""The int8 recogniser (``engine/quantize.py``): what it reads, and that it is made once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ocrserve import Engine, ModelSet, decode_path
from ocrserve.engine.quantize import (
    CALIBRATION_BATCH,
    RECIPE,
    ROW_HEIGHT,
    ROW_WIDTH,
    calibration_rows,
    ensure_int8,
)

from .conftest import FIXTURES, cer

GOLDEN = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))
INT8 = "PP-OCRv6_rec_small.int8.onnx"


@pytest.fixture(scope="module")
def int8_engine(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[Engine]:
    """An int8 engine over a writable folder of links to the real models (quantised once)."""
    folder = tmp_path_factory.mktemp("models")
    for spec in (engine.models.det, engine.models.cls, *engine.models.recs):
        (folder / spec.file).symlink_to(engine.models.path(spec))
    yield Engine(ModelSet.locate(folder), precision="int8")


def test_the_calibration_rows_are_the_recognisers_input() -> None:
    rows = calibration_rows()
    assert rows.shape[1:] == (3, ROW_HEIGHT, ROW_WIDTH) and rows.dtype == np.float32
    assert len(rows) >= 8 * CALIBRATION_BATCH and len(rows) % CALIBRATION_BATCH == 0
    assert -1.0 <= rows.min() < -0.5 and 0.5 < rows.max() <= 1.0  # real ink on real paper


@pytest.mark.parametrize(("name", "bound"), [("phototest.tif", 0.01), ("eurotext.tif", 0.03)])
def test_int8_reads_within_a_few_characters_of_fp32(
    engine: Engine, int8_engine: Engine, name: str, bound: float
) -> None:
    pages = decode_path(FIXTURES / name).pages
    [fp32] = engine.run(pages)
    [int8] = int8_engine.run(pages)
    assert cer(fp32.text, int8.text) <= bound, (fp32.text, int8.text)
    assert cer(GOLDEN[name], int8.text) <= cer(GOLDEN[name], fp32.text) + bound


def test_int8_reads_chinese(int8_engine: Engine) -> None:
    text = int8_engine.run(decode_path(FIXTURES / "zh_doc_certificate.jpeg").pages)[0].text
    for expected in ("使用性质", "2018-06-29", "解除抵押登记"):
        assert expected in text


def test_the_int8_model_is_static_qdq_and_made_once(int8_engine: Engine) -> None:
    import onnx

    spec = int8_engine.models.recs[0]
    target = int8_engine.models.folder / INT8
    model = onnx.load(str(target))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # static QDQ, not dynamic
    assert "DynamicQuantizeLinear" not in ops
    stamp = target.with_suffix(".sha256").read_text()
    assert stamp.startswith(f"{spec.sha256}:{RECIPE} ")
    made = target.stat().st_mtime_ns
    assert ensure_int8(int8_engine.models.path(spec), spec.sha256, Path("/nonexistent")) == target
    Engine(ModelSet.locate(int8_engine.models.folder), precision="int8")
    assert target.stat().st_mtime_ns == made
