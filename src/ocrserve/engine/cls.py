"""Text-line orientation: PP-OCR's 0/180 degree classifier, run on every crop in batches."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from ocrserve.engine.session import OrtSession
from ocrserve.errors import EngineError

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClsOptions:
    height: int = 48
    width: int = 192
    #: Only a confident "upside down" turns a crop: a wrong flip destroys the line.
    thresh: float = 0.9
    batch_size: int = 32


@dataclass(frozen=True, slots=True)
class ClsResult:
    images: list[U8]  # the crops, those found upside down turned 180 degrees
    flipped: tuple[bool, ...]
    elapsed: float


class AngleClassifier:
    """Turns upside-down line crops the right way up.

    >>> cls = AngleClassifier(OrtSession(path, RuntimeOptions()), ClsOptions())  # doctest: +SKIP
    >>> cls(crops).flipped                                                      # doctest: +SKIP
    (False, True, False)
    """

    def __init__(self, session: OrtSession, options: ClsOptions) -> None:
        self.session = session
        self.options = options

    def __call__(self, crops: list[U8]) -> ClsResult:
        t0 = time.perf_counter()
        out = list(crops)
        flipped = [False] * len(crops)
        bs = self.options.batch_size
        for start in range(0, len(crops), bs):
            chunk = crops[start : start + bs]
            probs = self.session.run(np.stack([self._prepare(c) for c in chunk]))
            if probs.shape[0] != len(chunk):
                raise EngineError(
                    f"classifier returned {probs.shape[0]} results for {len(chunk)} crops"
                )
            for j, p in enumerate(probs):
                if int(p.argmax()) == 1 and float(p[1]) > self.options.thresh:
                    out[start + j] = np.asarray(cv2.rotate(chunk[j], cv2.ROTATE_180), np.uint8)
                    flipped[start + j] = True
        return ClsResult(out, tuple(flipped), time.perf_counter() - t0)

    def _prepare(self, crop: U8) -> F32:
        o = self.options
        h, w = crop.shape[:2]
        rw = min(o.width, math.ceil(o.height * w / h))
        resized = cv2.resize(crop, (rw, o.height)).astype(np.float32)
        tensor = np.zeros((3, o.height, o.width), dtype=np.float32)
        tensor[:, :, :rw] = (resized * np.float32(2 / 255) - np.float32(1.0)).transpose(2, 0, 1)
        return tensor
