"""Page orientation: which quarter turn a page's text is in, before it is recognised.

The shipped models have no page-orientation classifier, only the 0/180 line classifier; the
page's detected boxes and that classifier together tell all four turns:

- most of the page's long boxes are tall: its lines run down the page, so it lies on its side
  (90 or 270 degrees); otherwise it is upright or upside down (0 or 180);
- a sample of its longest lines, cut out and laid flat as the engine would read them, is shown
  to the line classifier: if most of the lines it is sure of are upside down, the page is at
  the other angle of the pair (270 rather than 90, 180 rather than 0);
- a turn so called is checked by the recogniser, which reads the longest lines both ways: an
  upright page is never turned on the classifier's word alone;
- a page with too few long lines or sure votes for that (a photo, a sign: a few short words)
  is read in all four turns, and takes the one that reads best.

Measured (``bench/documents.py``): the pages of documents (receipts, forms, scans, PDFs) right
at every turn; scene photos and shop signs less often, as ``bench/RESULTS.md`` says.

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
from ocrserve.types import ANGLES

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
    #: under both rules. (Where the engine gives a reader, a page with fewer than ``few``
    #: votes is decided by reading instead: see below.)
    min_votes: int = 1
    #: A turn the votes call is read by the recogniser on this many of the longest lines,
    #: both ways: the page is turned only where the turned reading is the more confident by
    #: ``read_margin`` (a half turn), and a page on its side takes whichever quarter turn
    #: reads better. The classifier squeezes a line into 192 x 48 px; the recogniser reads it.
    read_sample: int = 8
    read_margin: float = 0.05
    #: A page with fewer long lines or sure votes than this (a photo, a sign: a few short
    #: words) is decided by reading: its largest boxes are read in each of the four turns and
    #: the page takes the turn that reads best, by ``read_margin`` over the page as it is.
    few: int = 3


#: Reads line crops; returns the recogniser's confidence in each.
Reader = Callable[[list[U8]], Sequence[float]]


def page_angle(
    img: U8,
    boxes: Sequence[F32] | F32,
    classifier: AngleClassifier,
    crop: Callable[[U8, F32], U8],
    options: OrientOptions = OrientOptions(),
    read: Reader | None = None,
) -> int:
    """How far the page's content is turned clockwise: 0, 90, 180 or 270 degrees.

    ``crop`` cuts a box out of the page as the engine does (a tall one laid flat,
    counter-clockwise); ``read``, where given, checks a turn the votes call (see
    ``OrientOptions.read_sample``).
    """
    wide: list[tuple[float, F32]] = []
    tall: list[tuple[float, F32]] = []
    for box in boxes:
        w, h = _sides(box)
        if w >= options.elongation * h:
            wide.append((w, box))
        elif h >= options.elongation * w:
            tall.append((h, box))
    sideways = sum(s for s, _ in tall) > sum(s for s, _ in wide)
    lines = sorted(tall if sideways else wide, key=lambda item: -item[0])[: options.sample]
    if read is not None and len(lines) < options.few:
        return _best_read_turn(img, boxes, crop, read, options)
    if len(lines) < options.min_votes:
        return 0
    crops = [crop(img, box) for _, box in lines]
    upside_down = classifier.scores(crops)
    down = sum(p >= options.sure for p in upside_down)
    up = sum(p <= 1.0 - options.sure for p in upside_down)
    if read is not None and up + down < options.few:
        return _best_read_turn(img, boxes, crop, read, options)
    turned = down > up and down >= options.min_votes
    if sideways and up + down < options.min_votes:
        return 0
    if not (sideways or turned):
        return 0
    if read is not None:
        turned = _reads_better_turned(crops[: options.read_sample], read, options.read_margin,
                                      sideways=sideways, voted=turned)  # fmt: skip
    if sideways:
        # Laid flat counter-clockwise, a line of a page turned 90 degrees clockwise reads
        # upright; one of a page turned 270 reads upside down.
        return 270 if turned else 90
    return 180 if turned else 0


def _best_read_turn(
    img: U8,
    boxes: Sequence[F32] | F32,
    crop: Callable[[U8, F32], U8],
    read: Reader,
    options: OrientOptions,
) -> int:
    """The turn whose reading of the page's largest boxes is the most confident (see
    ``OrientOptions.few``); 0 unless another is surer by ``read_margin``."""
    sized = []
    for box in boxes:
        w, h = _sides(box)
        if min(w, h) >= 8:
            sized.append((w * h, w, h, box))
    sized.sort(key=lambda item: -item[0])
    if not sized:
        return 0
    cuts = []
    for _, w, h, box in sized[: options.read_sample]:
        # ``crop`` laid a tall box flat counter-clockwise (pipeline._cut's rule): a quarter
        # turn of the page already made.
        cuts.append((crop(img, box), 1 if h / w >= 1.5 else 0))
    by_turn = {}
    for quarters, angle in enumerate(ANGLES):
        # Content turned ``angle`` clockwise reads upright turned back counter-clockwise.
        views = [
            np.ascontiguousarray(np.rot90(c, (quarters - done) % 4), dtype=np.uint8)
            for c, done in cuts
        ]
        by_turn[angle] = float(np.mean(read(views)))
    best = max(by_turn, key=lambda a: by_turn[a])
    return best if by_turn[best] > by_turn[0] + options.read_margin else 0


def _sides(box: F32) -> tuple[float, float]:
    """A quad's width and height: its longer top/bottom edge and its longer side edge."""
    w = float(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    h = float(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    return w, h


def _reads_better_turned(
    crops: list[U8], read: Reader, margin: float, *, sideways: bool, voted: bool
) -> bool:
    """Whether the lines read better turned half way than as they are. On its side a page is
    one of two quarter turns, and the better reading picks it (the vote where they tie);
    upright, a half turn needs the recogniser to be surer of it by ``margin``."""
    half = [np.ascontiguousarray(cv2.rotate(c, cv2.ROTATE_180), dtype=np.uint8) for c in crops]
    scores = list(read([*crops, *half]))
    as_is = float(np.mean(scores[: len(crops)]))
    flipped = float(np.mean(scores[len(crops) :]))
    if sideways:
        if abs(flipped - as_is) < margin:
            return voted
        return flipped > as_is
    return flipped > as_is + margin


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
