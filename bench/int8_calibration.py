#!/usr/bin/env python3
"""Rebuild ``src/ocrserve/engine/int8_lines.png``, the int8 recogniser's calibration rows.

    python bench/int8_calibration.py            # writes the PNG, prints how many rows

The fp32 engine finds the lines on every committed test fixture (``tests/fixtures``: their
licences are in its README), and cuts them out as the pipeline does. Every line of the small
fixtures is kept and 130 lines spread evenly over the IRS form's five pages (it has 691 and
would otherwise be most of the set); each line is scaled to the recogniser's height, and those
that fit in a 320 px row are placed on the recogniser's padding (mid grey, 0 after its
normalisation), a whole number of calibration batches of them, stacked into one image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from ocrserve import Engine, ModelSet, decode_path
from ocrserve.engine.pipeline import _as_bgr, _crop
from ocrserve.engine.quantize import CALIBRATION, CALIBRATION_BATCH, ROW_HEIGHT, ROW_WIDTH

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
IMAGES = (".jpg", ".jpeg", ".tif", ".png", ".pdf")
DENSE = "irs_f1040nr.pdf"
DENSE_LINES = 130


def main() -> int:
    engine = Engine(ModelSet.locate())
    det = engine.stages("fp32").det
    lines: dict[str, list[np.ndarray]] = {}
    for path in sorted(p for p in FIXTURES.iterdir() if p.suffix.lower() in IMAGES):
        lines[path.name] = []
        for page in decode_path(path).pages:
            img = _as_bgr(page.image, page.index)
            [found] = det([img])
            lines[path.name] += [_crop(img, box) for box in found.boxes]
    dense = lines.pop(DENSE)
    crops = [c for found in lines.values() for c in found]
    crops += dense[:: max(1, len(dense) // DENSE_LINES)][:DENSE_LINES]
    rows = []
    for crop in crops:
        h, w = crop.shape[:2]
        width = max(8, -(-ROW_HEIGHT * w // h))
        if width > ROW_WIDTH:
            continue
        row = np.full((ROW_HEIGHT, ROW_WIDTH, 3), 128, dtype=np.uint8)
        row[:, :width] = cv2.resize(crop, (width, ROW_HEIGHT))
        rows.append(row)
    rows = rows[: len(rows) // CALIBRATION_BATCH * CALIBRATION_BATCH]
    cv2.imwrite(str(CALIBRATION), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{CALIBRATION}: {len(rows)} rows of {ROW_HEIGHT}x{ROW_WIDTH} from {len(crops)} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
