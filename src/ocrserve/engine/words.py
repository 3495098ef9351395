"""Word boxes from the recogniser's CTC alignment.

CTC emits each character at one time step of the crop it reads, and a step covers a fixed
width of that crop (8 px at height 48 for PP-OCR's recognisers): so the recogniser says where
each character is along its line. A word's box runs from half a character before its first
character to half a character after its last, and is carried back to the page through the
crop's geometry: the classifier's half turn, the quarter turn of a vertical line, and the
line's (possibly rotated) box on the page.

>>> crop = CropGeometry(box, vertical=False, flipped=False)           # doctest: +SKIP
>>> [w.text for w in crop.words("Total 12.50", positions, scores)]    # doctest: +SKIP
['Total', '12.50']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ocrserve.types import Box, Word

F32 = npt.NDArray[np.float32]

#: Where no neighbour tells a character's width (a line of one character), it is taken as
#: this share of the line.
_LONE_CHAR = 1.0
#: A word's box across its line: this share of the line's box height, centred. The detector's
#: box is its kernel grown by the unclip offset (1.6 x area / perimeter) on every side, so it
#: stands above and below the ink: against the labelled word boxes (bench/documents.py) the
#: full height was a median 1.32x theirs, 2x on a form's small print, where IoU 0.5 is out of
#: reach however well the word is placed along the line. Words read right and matched at
#: IoU >= 0.5, first 2 FUNSD forms (285 words): 82.8% with the full height (and one-word
#: lines given the line's box), 93.0% with 0.75; all 30 forms 93.9%, ICDAR 2015 96.4%, the
#: median height then 1.01x the labels'. Boxes scaled across offline: from the full height
#: on those 2 forms, 0.8 / 0.75 / 0.7 gave 91.9 / 92.6 / 91.6%; from 0.75 on all 30, a
#: further x0.9 gave 93.1%.
WORD_HEIGHT = 0.75


@dataclass(frozen=True, slots=True)
class CropGeometry:
    """How a crop the recogniser read lies on its page.

    ``box`` is the detected quad (TL, TR, BR, BL) the crop was cut from, ``vertical`` says
    the crop was turned a quarter counter-clockwise to read a tall line, ``flipped`` that
    the classifier turned it upside down before it was read.
    """

    box: F32
    vertical: bool
    flipped: bool

    def words(
        self, text: str, positions: Sequence[float], scores: Sequence[float]
    ) -> tuple[Word, ...]:
        """The words of ``text`` (split at spaces) with boxes on the page.

        ``positions`` and ``scores`` are per character of ``text``, as the recogniser gives
        them (:class:`~ocrserve.engine.rec.RecResult`); without them (a recogniser that does
        not align) each word gets the line's box.
        """
        spans = _spans(text)
        if not spans:
            return ()
        aligned = len(positions) == len(text) == len(scores)
        pos = np.asarray(positions, dtype=np.float64)
        # A character's width: the median distance between neighbours within words.
        gaps = [pos[k + 1] - pos[k] for a, b in spans for k in range(a, b - 1)] if aligned else []
        if not gaps and (len(spans) == 1 or not aligned):
            # Nothing tells a character's width: the word is the line. A one-word line of two
            # characters or more is placed by its characters like any other, not given the
            # line's box, which the unclip offset pads on both ends too ("No": 2.3x its label).
            conf = float(np.mean(scores)) if aligned and scores else 0.0
            return tuple(
                Word(text[a:b], _mean(scores, a, b, conf), self._quad(0.0, 1.0)) for a, b in spans
            )
        width = float(np.median(gaps)) if gaps else _LONE_CHAR / max(len(text), 1)
        words = []
        for a, b in spans:
            lo = max(0.0, float(pos[a]) - width / 2)
            hi = min(1.0, float(pos[b - 1]) + width / 2)
            words.append(Word(text[a:b], _mean(scores, a, b, 0.0), self._quad(lo, hi)))
        return tuple(words)

    def _quad(self, lo: float, hi: float) -> Box:
        """The box of the span ``lo``..``hi`` of the crop as read, on the page."""
        if self.flipped:  # read turned half way: its left is the crop's right
            lo, hi = 1.0 - hi, 1.0 - lo
        # np.rot90 turned the tall crop counter-clockwise: what was read left to right ran
        # down the crop as it was cut.
        a0, a1 = (1.0 - WORD_HEIGHT) / 2, (1.0 + WORD_HEIGHT) / 2
        u0, u1, v0, v1 = (a0, a1, lo, hi) if self.vertical else (lo, hi, a0, a1)
        return (
            self._point(u0, v0), self._point(u1, v0), self._point(u1, v1), self._point(u0, v1),
        )  # fmt: skip

    def _point(self, u: float, v: float) -> tuple[float, float]:
        tl, tr, br, bl = self.box.astype(np.float64)
        top = tl + u * (tr - tl)
        bottom = bl + u * (br - bl)
        x, y = top + v * (bottom - top)
        return float(x), float(y)


def _spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each run of non-space characters."""
    spans, start = [], None
    for k, char in enumerate(text):
        if char.isspace():
            if start is not None:
                spans.append((start, k))
                start = None
        elif start is None:
            start = k
    if start is not None:
        spans.append((start, len(text)))
    return spans


def _mean(scores: Sequence[float], a: int, b: int, default: float) -> float:
    part = scores[a:b]
    return float(sum(part) / len(part)) if part else default
