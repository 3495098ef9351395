"""Page orientation: which quarter turn a page's text is in, before it is recognised.

The shipped models have no page-orientation classifier, only the 0/180 line classifier; the
page's detected boxes and that classifier together tell all four turns:

- most of the page's long boxes are tall: its lines run down the page, so it lies on its side
  (90 or 270 degrees); otherwise it is upright or upside down (0 or 180);
- a sample of its longest lines, cut out and laid flat as the engine would read them, is shown
  to the line classifier: if most of the lines it is sure of are upside down, the page is at
  the other angle of the pair (270 rather than 90, 180 rather than 0).

A page of vertical Chinese or Japanese columns also has tall boxes; it is read as turned by 90
degrees (columns become rows, rightmost first), which gives the same crops and the columns'
right-to-left order.

>>> angle = page_angle(img, boxes, classifier)    # doctest: +SKIP
>>> upright = turn_upright(img, angle)             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from ocrserve.engine.cls import AngleClassifier

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class OrientOptions:
    #: A box counts as a line when its long side is this many times its short one: single
    #: characters and digits ("1" is tall) do not vote.
    elongation: float = 2.0
    #: Lines shown to the classifier, the longest first.
    sample: int = 16
    #: A vote counts when the classifier is at least this sure either way.
    sure: float = 0.9
    #: Votes needed before a page is turned at all. One: a shop sign or a scene photo has
    #: one or two lines, and the classifier is sure of at most one of them. Measured with
    #: bench/documents.py's turns (det + classifier votes only) on ReCTS (5 images) and the
    #: first 12 ICDAR 2015 scenes, turned pages right / upright pages left upright:
    #: min_votes 2, sure 0.8 (before): 4/15 and 5/5 (ReCTS), 18/36 and 12/12 (ICDAR);
    #: 1 and 0.8: 11/15, 4/5, 24/36, 11/12; 1 and 0.9 (now): 10/15, 4/5, 23/36, 12/12.
    #: Document pages (receipts, forms, Tesseract's pages) have tens of sure votes: all right
    #: under both rules.
    min_votes: int = 1


def page_angle(
    img: U8,
    boxes: Sequence[F32] | F32,
    classifier: AngleClassifier,
    crop: Callable[[U8, F32], U8],
    options: OrientOptions = OrientOptions(),
) -> int:
    """How far the page's content is turned clockwise: 0, 90, 180 or 270 degrees.

    ``crop`` cuts a box out of the page as the engine does (a tall one laid flat,
    counter-clockwise).
    """
    wide: list[tuple[float, F32]] = []
    tall: list[tuple[float, F32]] = []
    for box in boxes:
        w = float(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
        h = float(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
        if w >= options.elongation * h:
            wide.append((w, box))
        elif h >= options.elongation * w:
            tall.append((h, box))
    sideways = sum(s for s, _ in tall) > sum(s for s, _ in wide)
    lines = sorted(tall if sideways else wide, key=lambda item: -item[0])[: options.sample]
    if len(lines) < options.min_votes:
        return 0
    upside_down = classifier.scores([crop(img, box) for _, box in lines])
    down = sum(p >= options.sure for p in upside_down)
    up = sum(p <= 1.0 - options.sure for p in upside_down)
    turned = down > up and down >= options.min_votes
    if sideways:
        # Laid flat counter-clockwise, a line of a page turned 90 degrees clockwise reads
        # upright; one of a page turned 270 reads upside down.
        if up + down < options.min_votes:
            return 0
        return 270 if turned else 90
    return 180 if turned else 0


_TURN_BACK = {
    90: cv2.ROTATE_90_COUNTERCLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_CLOCKWISE,
}


def turn_upright(img: U8, angle: int) -> U8:
    """The page turned back by ``angle`` degrees (counter-clockwise), so its text is upright."""
    if angle == 0:
        return img
    return np.ascontiguousarray(cv2.rotate(img, _TURN_BACK[angle]))


def to_original(
    points: npt.NDArray[np.float64], angle: int, width: int, height: int
) -> npt.NDArray[np.float64]:
    """Points of the upright page back in the pixels of the page as it came (``width`` x
    ``height``: the original's size)."""
    x, y = points[..., 0], points[..., 1]
    if angle == 90:
        out = np.stack([width - y, x], axis=-1)
    elif angle == 180:
        out = np.stack([width - x, height - y], axis=-1)
    elif angle == 270:
        out = np.stack([y, height - x], axis=-1)
    else:
        return points
    return out
