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
    #: A crop more than ``window_over`` times the input's aspect (192 x 48) is not squeezed
    #: into one input but read as up to ``windows`` windows of its own 192 x 48 px at height
    #: 48, spread from its start to its end, and their upside-down probabilities averaged.
    #: Squeezed, a long printed line is illegible to the classifier, which then calls it
    #: upside down with confidence: the IRS form's "Caution: Do not check box 7a ..." line
    #: (1034 x 36 px, squeezed 7x) at 0.997, read turned as "Cau  s   n ( n  o on unt"
    #: (issue 14; before ``verify`` that reading was kept). Windowed (3), wrong turns on the
    #: IRS form's 653 crops fell from 29 to 16 (none of them long lines), 54 to 39 on 568 FUNSD
    #: crops, 26 to 24 on 566 receipt crops, every right turn kept; 1 is the old squeeze.
    windows: int = 3
    window_over: float = 1.5


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
        for k, p in enumerate(self._upside_down(crops)):
            if p > 0.5 and p > self.options.thresh:
                out[k] = np.asarray(cv2.rotate(crops[k], cv2.ROTATE_180), np.uint8)
                flipped[k] = True
        return ClsResult(out, tuple(flipped), time.perf_counter() - t0)

    def _upside_down(self, crops: list[U8]) -> list[float]:
        """Each crop's upside-down probability, a long crop's averaged over its windows.

        Inputs are made one batch at a time (a 192 x 48 input is 110 KB)."""
        views = [(k, x) for k, crop in enumerate(crops) for x in self._windows(crop)]
        sums = np.zeros(len(crops), dtype=np.float64)
        counts = np.zeros(len(crops), dtype=np.float64)
        bs = self.options.batch_size
        for start in range(0, len(views), bs):
            chunk = views[start : start + bs]
            probs = self.session.run(np.stack([self._input(crops[k], x) for k, x in chunk]))
            if probs.shape[0] != len(chunk):
                raise EngineError(
                    f"classifier returned {probs.shape[0]} results for {len(chunk)} inputs"
                )
            owners = [k for k, _ in chunk]
            np.add.at(sums, owners, probs[:, 1])
            np.add.at(counts, owners, 1.0)
        return [float(s / c) for s, c in zip(sums, counts, strict=True)]

    def _windows(self, crop: U8) -> list[int]:
        """Where a crop's inputs start, in its pixels at the input's height: ``[-1]`` for
        the whole crop squeezed into one input, or the windows of a long crop
        (``ClsOptions.windows``), its first at 0 and its last at its end."""
        o = self.options
        h, w = crop.shape[:2]
        rw = math.ceil(o.height * w / h)
        n = min(o.windows, math.ceil(rw / o.width))
        if n <= 1 or rw <= o.width * o.window_over:
            return [-1]
        return [int(x) for x in np.linspace(0, rw - o.width, n).round()]

    def _input(self, crop: U8, x: int) -> F32:
        """The classifier's input: the crop squeezed (``x`` < 0), or the window at ``x``."""
        if x < 0:
            return self._prepare(crop)
        o = self.options
        h, w = crop.shape[:2]
        resized = cv2.resize(crop, (math.ceil(o.height * w / h), o.height))
        window = resized[:, x : x + o.width].astype(np.float32)
        return np.ascontiguousarray(
            (window * np.float32(2 / 255) - np.float32(1.0)).transpose(2, 0, 1)
        )

    def scores(self, crops: list[U8]) -> list[float]:
        """The probability that each crop is upside down (orient.py's page vote), a long
        crop's averaged over its windows as for the turn itself."""
        return self._upside_down(crops)

    def _prepare(self, crop: U8) -> F32:
        o = self.options
        h, w = crop.shape[:2]
        rw = min(o.width, math.ceil(o.height * w / h))
        resized = cv2.resize(crop, (rw, o.height)).astype(np.float32)
        tensor = np.zeros((3, o.height, o.width), dtype=np.float32)
        tensor[:, :, :rw] = (resized * np.float32(2 / 255) - np.float32(1.0)).transpose(2, 0, 1)
        return tensor
