"""Word boxes (engine/words.py) and page orientation (engine/orient.py), on real fixtures."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from ocrserve import Engine, OCROptions, Page, decode_path
from ocrserve.engine.orient import OrientOptions, page_angle
from ocrserve.engine.words import CropGeometry

from .conftest import FIXTURES

TURN = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
FIRST_LINE = "This is a lot of 12 point text to test the"


def phototest() -> npt.NDArray[np.uint8]:
    return decode_path(FIXTURES / "phototest.tif").pages[0].image


def quad_iou(a: object, b: object) -> float:
    pa = np.asarray(a, np.float32).reshape(-1, 2)
    pb = np.asarray(b, np.float32).reshape(-1, 2)
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = cv2.contourArea(pa) + cv2.contourArea(pb) - inter
    return float(inter / union) if union > 0 else 0.0


def ink_words(img: npt.NDArray[np.uint8], box: object) -> list[tuple[int, int, int, int]]:
    """The words of a horizontal line as the ink shows them: (x0, y0, x1, y1), across from the
    line's highest ink to its lowest (a word box spans the line's text height: "a" as "The"),
    along a run of inked columns inside ``box``, runs split at gaps wider than a third of
    that height."""
    pts = np.asarray(box)
    x0, y0 = int(pts[:, 0].min()), int(pts[:, 1].min())
    x1, y1 = int(np.ceil(pts[:, 0].max())), int(np.ceil(pts[:, 1].max()))
    ink = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY) < 128
    rows = np.flatnonzero(ink.any(axis=1))
    gap = max(2, (rows[-1] - rows[0] + 1) // 3)
    cols = np.flatnonzero(ink.any(axis=0))
    runs, start = [], cols[0]
    for a, b in itertools.pairwise(cols):
        if b - a > gap:
            runs.append((start, a + 1))
            start = b
    runs.append((start, cols[-1] + 1))
    top, bottom = y0 + int(rows[0]), y0 + int(rows[-1]) + 1
    return [(x0 + int(a), top, x0 + int(b), bottom) for a, b in runs]


def rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# --------------------------------------------------------------------------- orientation


@pytest.fixture(scope="module")
def upright(engine: Engine) -> object:
    return engine.run([Page(phototest())], OCROptions(orientation="auto"))[0]


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_a_turned_page_comes_back_with_its_angle_and_text(
    engine: Engine, upright: object, angle: int
) -> None:
    img = np.ascontiguousarray(cv2.rotate(phototest(), TURN[angle]))
    [result] = engine.run([Page(img)], OCROptions(orientation="auto"))
    assert result.angle == angle
    assert result.text == upright.text  # type: ignore[attr-defined]
    # Boxes stay in the turned page's pixels: the first line, turned back, lies where it lies
    # on the upright page.
    first = next(line for line in result.lines if line.text.startswith("This is a lot"))
    size = (result.width, result.height)
    back = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillConvexPoly(back, np.asarray(first.box, np.int32), 255)
    undo = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
    ys, xs = np.nonzero(cv2.rotate(back, undo[angle]))
    ref = np.asarray(upright.lines[0].box)  # type: ignore[attr-defined]
    assert upright.lines[0].text.startswith("This is a lot")  # type: ignore[attr-defined]
    assert quad_iou(rect(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), ref) > 0.8


def test_the_upright_page_is_not_turned_and_off_turns_nothing(
    engine: Engine, upright: object
) -> None:
    assert upright.angle == 0  # type: ignore[attr-defined]
    img = np.ascontiguousarray(cv2.rotate(phototest(), TURN[180]))
    [result] = engine.run([Page(img)], OCROptions(orientation="off"))
    assert result.angle == 0


class Votes:
    """A line classifier that answers fixed upside-down probabilities."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = probs

    def scores(self, crops: list[npt.NDArray[np.uint8]]) -> list[float]:
        return self.probs[: len(crops)]


def boxes(tall: int, wide: int) -> list[npt.NDArray[np.float32]]:
    out = [np.array(rect(10 * k, 0, 10 * k + 8, 100), np.float32) for k in range(tall)]
    out += [np.array(rect(0, 10 * k, 100, 10 * k + 8), np.float32) for k in range(wide)]
    return out


@pytest.mark.parametrize(
    ("tall", "wide", "probs", "angle"),
    [
        (0, 6, [0.0] * 6, 0),
        (0, 6, [1.0] * 6, 180),
        (0, 6, [1.0, 1.0, 0.0, 0.0, 0.5, 0.5], 0),  # a tie is no turn
        (6, 1, [0.0] * 6, 90),
        (6, 1, [1.0] * 6, 270),
        (6, 0, [0.5] * 6, 0),  # on its side, but no line the classifier is sure of
        (0, 6, [0.85] * 6, 0),  # not sure enough (OrientOptions.sure)
        (0, 1, [0.95], 180),  # a shop sign: one sure line turns the page
        (0, 2, [0.99, 0.6], 180),
        (0, 0, [], 0),  # no line at all
    ],
)
def test_the_vote_rule(tall: int, wide: int, probs: list[float], angle: int) -> None:
    img = np.zeros((200, 200, 3), np.uint8)

    def crop(im: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        return im[:8, :32]  # the crops' pixels do not matter here

    got = page_angle(img, boxes(tall, wide), Votes(probs), crop, OrientOptions())  # type: ignore[arg-type]
    assert got == angle


# --------------------------------------------------------------------------- word boxes


def test_word_boxes_follow_the_ink(upright: object) -> None:
    img = phototest()
    line = upright.lines[0]  # type: ignore[attr-defined]
    assert line.text == FIRST_LINE
    ink = ink_words(img, line.box)
    assert [w.text for w in line.words] == FIRST_LINE.split()
    assert len(ink) == len(line.words)
    ious = [quad_iou(w.box, rect(*b)) for w, b in zip(line.words, ink, strict=True)]
    # Measured 0.42 ("a": its box starts 6 px after its ink) to 0.80, mean 0.67; with the
    # line's full height (before WORD_HEIGHT) the mean was about 0.5.
    assert min(ious) >= 0.4, ious
    assert float(np.mean(ious)) >= 0.6, ious


def test_word_quads_along_a_flat_a_flipped_and_a_vertical_crop() -> None:
    box = np.array(rect(100, 50, 300, 70), np.float32)
    positions = [0.05, 0.15, 0.45, 0.55, 0.65]  # "ab cde": a 0.1 step per character
    flat = CropGeometry(box, vertical=False, flipped=False).words(
        "ab cde", _at(positions), [0.9] * 6
    )
    assert [w.text for w in flat] == ["ab", "cde"]
    (x0, _), (x1, _), *_ = flat[1].box
    assert x0 == pytest.approx(100 + 200 * 0.4) and x1 == pytest.approx(100 + 200 * 0.7)
    # Read upside down: the first word is at the box's right end.
    flipped = CropGeometry(box, vertical=False, flipped=True).words(
        "ab cde", _at(positions), [0.9] * 6
    )
    xs = [p[0] for p in flipped[0].box]
    assert min(xs) == pytest.approx(100 + 200 * 0.8) and max(xs) == pytest.approx(300)
    # A tall crop, read top to bottom.
    tall = np.array(rect(100, 50, 120, 250), np.float32)
    down = CropGeometry(tall, vertical=True, flipped=False).words(
        "ab cde", _at(positions), [0.9] * 6
    )
    ys = [p[1] for p in down[1].box]
    assert min(ys) == pytest.approx(50 + 200 * 0.4) and max(ys) == pytest.approx(50 + 200 * 0.7)


def _at(word_positions: list[float]) -> list[float]:
    """Per character of "ab cde", the space included (at its own step)."""
    a, b, c, d, e = word_positions
    return [a, b, (b + c) / 2, c, d, e]
