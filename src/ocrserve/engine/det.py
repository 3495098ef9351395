"""Text detection: PP-OCR's DB (differentiable binarisation) model and its post-processing."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import pyclipper

from ocrserve.engine.session import OrtSession

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

#: Pixels of context each tile has beyond its core (a multiple of 32, the model's stride).
_OVERLAP = 96


@dataclass(frozen=True, slots=True, kw_only=True)
class DetOptions:
    """Resize policy and DB post-processing thresholds.

    The short side is scaled towards ``limit_side`` (small text needs ~700 px to be found),
    but never up by more than ``max_upscale`` and never past ``max_side`` on the long side.
    PP-OCR's own policy scales the short side to 736 whatever the long side becomes, which
    turns a 709x132 paragraph into a 3968x736 input: 1.3 s for one line of text.
    """

    limit_side: int = 736
    max_side: int = 2400
    max_upscale: float = 2.0
    #: DB post-processing. PaddleOCR's PP-OCRv5/v6 det configs and faster-paddle use 0.2 / 0.45
    #: (small) / 1.4: tighter boxes. Measured against these on the dev sets (issue 12, with the
    #: normalisation below, bag-of-words F1): FUNSD forms +0.2, but receipts -0.7, scene text
    #: -1.1, signboards -1.8, IRS form -0.2; unclip 1.5 alone: scene text -1.5, signboards
    #: -2.6; box_thresh 0.45 alone: within 0.1 either way. So RapidOCR's values stay.
    thresh: float = 0.3
    box_thresh: float = 0.5
    unclip_ratio: float = 1.6
    #: Per-channel normalisation of the detector's input, (x / 255 - mean) / std, in the
    #: page's B, G, R order: the ImageNet statistics PaddleOCR's DB models are trained and
    #: exported with (det inference.yml), and faster-paddle feeds. RapidOCR feeds
    #: (x / 255 - 0.5) / 0.5 (our old input), which shifts the probability map. Measured on the
    #: dev sets (issue 12, bag-of-words F1): scene text +2.5, receipts +0.9, signboards +0.5,
    #: Chinese mind map +0.3, FUNSD +0.1, IRS form -0.2 (a vertical side note the classifier
    #: then left unturned; see ClsOptions.thresh); page CER down 0.1-5 points on those but
    #: the IRS form (+0.3), the other PDF pages (+0.1) and FUNSD (+0.05).
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_candidates: int = 1000
    #: Very wide or very flat images (a single line) are padded to at most this aspect ratio
    #: before detection: DB needs background above and below a line to find its edges.
    max_aspect: float = 8.0
    min_height: int = 30
    #: Detection sized to the print. A page whose input would be longer than ``probe_side``
    #: x ``probe_over`` is first read at ``probe_side`` on its long side (a fifth of the work
    #: of 2400 px). If the 5th percentile of its lines' heights there is at least
    #: ``text_height`` px, the probe's boxes are the answer: 10-pt text on a 200 dpi A4 page
    #: is 13-14 px high at 1024 px, well within what DB finds. If it is under ``probe_floor``
    #: (the probe saw text at the edge of its reach, and smaller text may be there unseen),
    #: or the probe found fewer than ``probe_min_boxes`` lines, the page is read at the full
    #: policy's scale; in between, at the scale that makes that percentile ``text_height``.
    #: 0 turns the probe off.
    probe_side: int = 1024
    probe_over: float = 1.5
    probe_min_boxes: int = 8
    text_height: float = 12.0
    probe_floor: float = 10.0
    #: Inputs larger than this run as overlapping tiles (bounds memory; see _probabilities).
    tile_pixels: int = 1536 * 1024


@dataclass(frozen=True, slots=True)
class DetResult:
    boxes: F32  # (N, 4, 2): TL, TR, BR, BL in the original image's pixels
    scores: tuple[float, ...]
    elapsed: float
    #: Detector input pixels per page pixel of the pass the boxes came from.
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class _Prepared:
    tensor: F32  # (3, H, W)
    scale_x: float  # input pixels per original pixel
    scale_y: float
    top: int  # input rows of padding above the page
    width: int  # original size
    height: int


class TextDetector:
    """Finds text lines on whole pages.

    >>> det = TextDetector(OrtSession(path, RuntimeOptions()), DetOptions())  # doctest: +SKIP
    >>> [r.boxes.shape for r in det([page_a, page_b])]                       # doctest: +SKIP
    [(12, 4, 2), (3, 4, 2)]
    """

    def __init__(self, session: OrtSession, options: DetOptions) -> None:
        self.session = session
        self.options = options
        self._dilate = np.ones((2, 2), dtype=np.uint8)

    def __call__(self, images: list[U8]) -> list[DetResult]:
        # One page at a time: batching pages buys nothing measurable on CPU, and one large
        # page's activations already cost hundreds of MB.
        results = []
        for img in images:
            t0 = time.perf_counter()
            boxes, scores, scale = self._detect(img)
            results.append(DetResult(boxes, scores, time.perf_counter() - t0, scale))
        return results

    def _detect(self, img: U8) -> tuple[F32, tuple[float, ...], float]:
        """The page's boxes, at the scale its print needs (see ``DetOptions.probe_side``)."""
        o = self.options
        full = self._scale(img)
        canvas = self._canvas(img)
        if not o.probe_side or max(canvas) * full <= o.probe_side * o.probe_over:
            return self._boxes_at(img, full)
        probe = o.probe_side / max(canvas)
        boxes, scores, _ = self._boxes_at(img, probe)
        if len(boxes) < o.probe_min_boxes:
            return self._boxes_at(img, full)
        # The short side of each box at the probe's scale: its line's height (or a vertical
        # line's width).
        sides = np.minimum(
            np.linalg.norm(boxes[:, 0] - boxes[:, 1], axis=1),
            np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1),
        )
        small = float(np.percentile(sides, 5)) * probe
        if small >= o.text_height:
            return boxes, scores, probe
        if small < o.probe_floor:
            # The probe found text at the edge of what it sees: smaller text may be there
            # unseen, so the page is read at the full policy's scale.
            return self._boxes_at(img, full)
        return self._boxes_at(img, min(full, probe * o.text_height / small))

    def _boxes_at(self, img: U8, scale: float) -> tuple[F32, tuple[float, ...], float]:
        prep = self._prepare(img, scale)
        return *self._boxes(self._probabilities(prep.tensor), prep), scale

    def _probabilities(self, tensor: F32) -> F32:
        """The text probability map of a (3, H, W) input, by tiles when the input is large.

        The model's activations grow with the input: about 190 MB per megapixel here, so a
        2400 px page would take ~800 MB at once. Large inputs run as overlapping tiles of at
        most ``tile_pixels``; each tile contributes only its core, away from the edges where
        the convolutions see padding. The map is close to the whole-image one, not equal (the
        model's context is wider than the overlap): on receipts and the IRS form 5-10% of lines
        read slightly differently, with page CER and word F1 unchanged within 0.2 points.
        """
        _, h, w = tensor.shape
        if h * w <= self.options.tile_pixels:
            whole: F32 = self.session.run(tensor[None])[0, 0]
            return whole
        core_w, core_h = _tile_grid(w, h, self.options.tile_pixels)
        out = np.empty((h, w), dtype=np.float32)
        for y0 in range(0, h, core_h):
            for x0 in range(0, w, core_w):
                ty0, tx0 = max(0, y0 - _OVERLAP), max(0, x0 - _OVERLAP)
                ty1, tx1 = min(h, y0 + core_h + _OVERLAP), min(w, x0 + core_w + _OVERLAP)
                tile = self.session.run(np.ascontiguousarray(tensor[None, :, ty0:ty1, tx0:tx1]))
                y1, x1 = min(h, y0 + core_h), min(w, x0 + core_w)
                out[y0:y1, x0:x1] = tile[0, 0, y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]
        return out

    def _canvas(self, img: U8) -> tuple[int, int]:
        """(height, width) of the page on its detection canvas: flat pages get background
        above and below (``max_aspect``, ``min_height``)."""
        o = self.options
        h, w = img.shape[:2]
        pad = 0
        if h <= o.min_height or w / h > o.max_aspect:
            pad = max((max(int(w / o.max_aspect), o.min_height) * 2 - h) // 2, 0)
        return h + 2 * pad, w

    def _scale(self, img: U8) -> float:
        """The resize policy's scale: short side towards ``limit_side``, within the caps."""
        o = self.options
        ph, pw = self._canvas(img)
        scale = 1.0
        if min(ph, pw) < o.limit_side:
            scale = min(o.limit_side / min(ph, pw), o.max_upscale)
        if max(ph, pw) * scale > o.max_side:
            scale = o.max_side / max(ph, pw)
        return scale

    def _prepare(self, img: U8, scale: float) -> _Prepared:
        """The model's input: the page scaled by ``scale``, on a taller canvas if flat.

        Every array here is at most the input's size, (``max_side`` + 16)^2 pixels or
        ``max_upscale``^2 times the page, whatever the page's shape: the padding is added
        after the resize, never at the page's own resolution, where a 1 x 300,000 strip
        would pad to a 75,000 x 300,000 canvas (67 GB).
        """
        o = self.options
        h, w = img.shape[:2]
        ph, pw = self._canvas(img)  # the padded canvas, never allocated at this size
        pad = (ph - h) // 2
        rh = max(32, round(ph * scale / 32) * 32)
        rw = max(32, round(pw * scale / 32) * 32)
        if pad:
            # The page's rows land where they would on the padded canvas scaled to rh rows.
            top = min(round(pad * rh / ph), rh - 1)
            rows = min(max(1, round(h * rh / ph)), rh - top)
            resized = np.zeros((rh, rw, 3), dtype=np.uint8)
            resized[top : top + rows] = cv2.resize(img, (rw, rows))
        else:
            top, rows = 0, rh
            resized = np.asarray(cv2.resize(img, (rw, rh)), dtype=np.uint8)
        # (x / 255 - mean) / std per channel, folded into one multiply-add
        std = np.asarray(o.std, dtype=np.float32)
        gain = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        bias = (np.asarray(o.mean, dtype=np.float32) / std).reshape(3, 1, 1)
        tensor = resized.transpose(2, 0, 1).astype(np.float32) * gain - bias
        return _Prepared(np.ascontiguousarray(tensor), rw / w, rows / h, top, w, h)

    def _boxes(self, prob: F32, prep: _Prepared) -> tuple[F32, tuple[float, ...]]:
        o = self.options
        mask = cv2.dilate((prob > o.thresh).astype(np.uint8), self._dilate)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes: list[F32] = []
        scores: list[float] = []
        for contour in contours[: o.max_candidates]:
            points, short_side = _min_box(np.asarray(contour, dtype=np.int32))
            if short_side < 3:
                continue
            score = _box_score(prob, points)
            if score < o.box_thresh:
                continue
            expanded = _unclip(points, o.unclip_ratio)
            if expanded is None:
                continue
            box, short_side = _min_box(np.asarray(expanded, dtype=np.int32))
            if short_side < 5:
                continue
            # map pixels -> original pixels
            box[:, 0] = box[:, 0] / prep.scale_x
            box[:, 1] = (box[:, 1] - prep.top) / prep.scale_y
            box[:, 0] = np.clip(box[:, 0], 0, prep.width - 1)
            box[:, 1] = np.clip(box[:, 1], 0, prep.height - 1)
            box = _order_clockwise(box)
            if np.linalg.norm(box[0] - box[1]) <= 3 or np.linalg.norm(box[0] - box[3]) <= 3:
                continue
            boxes.append(box)
            scores.append(score)
        if not boxes:
            return np.zeros((0, 4, 2), dtype=np.float32), ()
        return np.stack(boxes).astype(np.float32), tuple(scores)


def _tile_grid(w: int, h: int, budget: int) -> tuple[int, int]:
    """Core width and height of the tiling of a w x h input with the least total tile area."""
    best: tuple[int, int, int] | None = None
    for nx in range(1, 9):
        for ny in range(1, 9):
            cw = -(-math.ceil(w / nx) // 32) * 32
            ch = -(-math.ceil(h / ny) // 32) * 32
            tw, th = min(w, cw + 2 * _OVERLAP), min(h, ch + 2 * _OVERLAP)
            if tw * th > budget:
                continue
            total = math.ceil(w / cw) * math.ceil(h / ch) * tw * th
            if best is None or total < best[0]:
                best = (total, cw, ch)
    if best is None:  # a budget below one overlap's worth: fall back to small square tiles
        return 256, 256
    return best[1], best[2]


def _min_box(contour: npt.NDArray[np.int32]) -> tuple[F32, float]:
    rect = cv2.minAreaRect(contour)
    pts = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = sorted(pts[:2], key=lambda p: p[1])
    right = sorted(pts[2:], key=lambda p: p[1])
    box = np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
    return box, float(min(rect[1]))


def _box_score(prob: F32, box: F32) -> float:
    """Mean probability inside the box: DB's 'fast' score."""
    h, w = prob.shape
    xmin = int(np.clip(math.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(math.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(math.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(math.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = box - np.array([xmin, ymin], dtype=np.float32)
    cv2.fillPoly(mask, [shifted.reshape(-1, 2).astype(np.int32)], 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _unclip(box: F32, ratio: float) -> npt.NDArray[np.int32] | None:
    """Grow the shrunk kernel back to the text's extent (DB predicts a shrunk region)."""
    area = cv2.contourArea(box)
    length = cv2.arcLength(box, closed=True)
    if length == 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    expanded = offset.Execute(area * ratio / length)
    if not expanded:
        return None
    # Rarely the offset splits into several polygons; their hull is the region, as in PP-OCR.
    return np.concatenate([np.array(p, dtype=np.int32) for p in expanded]).reshape(-1, 1, 2)


def _order_clockwise(pts: F32) -> F32:
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    tl, bl = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    tr, br = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], dtype=np.float32)
