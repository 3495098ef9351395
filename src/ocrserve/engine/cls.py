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
    #: How sure the classifier must be that a crop is upside down before the engine considers
    #: turning it. 0.9 when a turn was final (a wrong flip destroys the line); with ``verify``
    #: a wrong turn costs one more recognition of the crop, and 0.7 reads 6 of the 8 lines of
    #: an upside-down phototest.tif right (0.9: 3). Dev sets (issue 12), against 0.9: IRS form
    #: +0.1 F1 (a vertical side note recovered), scene text -0.2, the rest within 0.02.
    thresh: float = 0.7
    batch_size: int = 32
    #: Check every turn: the engine reads a turned crop both ways and keeps the turn only if
    #: the recogniser is surer of the turned reading, by ``verify_margin`` (a lone "9", "0" or
    #: "X" reads about as well either way up). The classifier squeezes a whole line into
    #: 192 x 48 px, and slivers of the lines above and below (dense forms, tight leading) make
    #: it call straight lines upside down: 2% of the crops of the FUNSD forms and receipts,
    #: then read as garbage ("man  n t   nis"). faster-paddle runs no classifier at all.
    #: Checking gave bag-of-words F1 (issue 12, dev sets, old detector normalisation): FUNSD
    #: +3.6, IRS form +0.9, other born-digital pages +0.9, scene text +0.6, receipts +0.5,
    #: signboards -0.4 (5 images); page CER down on every set (the Tesseract pages: equal).
    verify: bool = True
    verify_margin: float = 0.05


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

    def scores(self, crops: list[U8]) -> list[float]:
        """The probability that each crop is upside down (orient.py's page vote)."""
        out: list[float] = []
        bs = self.options.batch_size
        for start in range(0, len(crops), bs):
            chunk = crops[start : start + bs]
            probs = self.session.run(np.stack([self._prepare(c) for c in chunk]))
            if probs.shape[0] != len(chunk):
                raise EngineError(
                    f"classifier returned {probs.shape[0]} results for {len(chunk)} crops"
                )
            out += [float(p[1]) for p in probs]
        return out

    def _prepare(self, crop: U8) -> F32:
        o = self.options
        h, w = crop.shape[:2]
        rw = min(o.width, math.ceil(o.height * w / h))
        resized = cv2.resize(crop, (rw, o.height)).astype(np.float32)
        tensor = np.zeros((3, o.height, o.width), dtype=np.float32)
        tensor[:, :, :rw] = (resized * np.float32(2 / 255) - np.float32(1.0)).transpose(2, 0, 1)
        return tensor
