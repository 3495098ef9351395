"""Text recognition: PP-OCR's CTC recogniser over line crops pooled from many pages."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from ocrserve.engine.session import OrtSession
from ocrserve.errors import EngineError, ModelError

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecOptions:
    height: int = 48
    batch_size: int = 16
    #: Crops narrower than this at ``height`` (short words, digits, single characters) are
    #: padded to it: the recogniser reads a short word better with some blank after it
    #: (PaddleOCR pads every crop to 320, faster-paddle to 96). Measured on the dev sets
    #: (issue 12, bag-of-words F1): 96 gave scene text +0.2, FUNSD +0.1, receipts +0.1, IRS
    #: form -0.04 (one word); 160 lost 2.9 on signboards; 320 gained 0.3 on FUNSD but lost 1.1
    #: on scene text and 1.0 on signboards.
    min_width: int = 96
    #: A batch is also capped by its padded width summed over crops: the recogniser's
    #: activations grow with it (its 18,710-class output no longer does: see
    #: session.py's argmax). The CLI over the speed set peaked at 693 MB with 8192, 633 MB
    #: with 4096, 557 MB with 2048, all at en_doc_paper_page.jpg's batches of wide lines
    #: (issue 12 item 5), with the same texts and CPU time within noise (94, 104, 98 s).
    max_batch_width: int = 2048


@dataclass(frozen=True, slots=True)
class RecResult:
    """What the recogniser read in each crop.

    ``positions[k][j]`` is where the ``j``-th character of ``texts[k]`` sits along its crop,
    as a fraction of the crop's width: the middle of the time step CTC emitted it at, and
    ``char_confidences[k][j]`` that step's probability. Word boxes and word confidences are
    made from these (``engine/words.py``).
    """

    texts: tuple[str, ...]
    confidences: tuple[float, ...]
    elapsed: float
    positions: tuple[tuple[float, ...], ...] = ()
    char_confidences: tuple[tuple[float, ...], ...] = ()


class TextRecognizer:
    """Reads line crops, batched by width.

    Each crop is scaled to height 48 and padded on the right to its width bucket (at most
    ~12% wider, and to at least ``min_width``), and only crops of one bucket share a batch.
    PP-OCR instead pads every crop to at least 320 px and to the widest crop of its batch: that
    costs time, and because the recogniser attends over the whole line, the padding changes
    what it reads. With buckets a crop is read from the same tensor whatever else is in the
    call, so a page gives the same text alone or batched with other requests' pages.

    The session must be built with ``argmax=True``: greedy decoding needs only each step's
    best class and its probability, which the graph then returns instead of the whole
    (batch, width / 8, 18,710) probability tensor.

    >>> session = OrtSession(path, RuntimeOptions(), argmax=True)  # doctest: +SKIP
    >>> rec = TextRecognizer(session, RecOptions())                 # doctest: +SKIP
    >>> rec(crops).texts                                           # doctest: +SKIP
    ('TAX INVOICE', '10 MAR 2018')
    """

    def __init__(self, session: OrtSession, options: RecOptions) -> None:
        self.session = session
        self.options = options
        name = session.path.name
        if not session.argmax:
            raise ModelError(f"the recogniser's session for {name} needs argmax=True")
        chars = session.metadata.get("character")
        if not chars:
            raise ModelError(f"{name} carries no 'character' list in its metadata")
        # CTC index 0 is the blank; the dictionary ends with the space the models also emit.
        self.charset: tuple[str, ...] = ("", *chars.splitlines(), " ")
        if session.classes is not None and session.classes != len(self.charset):
            raise ModelError(
                f"{name} has {session.classes} output classes for {len(self.charset)} characters"
            )

    def __call__(self, crops: list[U8]) -> RecResult:
        t0 = time.perf_counter()
        n = len(crops)
        texts = [""] * n
        confs = [0.0] * n
        positions: list[tuple[float, ...]] = [()] * n
        scores: list[tuple[float, ...]] = [()] * n
        for batch in self._batches(crops):
            width = self._padded(crops[batch[0]])
            tensor = np.zeros((len(batch), 3, self.options.height, width), dtype=np.float32)
            for j, i in enumerate(batch):
                img = self._resize(crops[i])
                tensor[j, :, :, : img.shape[1]] = img.transpose(2, 0, 1)
            best, top = self.session.run_argmax(tensor)
            if best.shape[0] != len(batch) or best.shape != top.shape:
                raise EngineError(
                    f"recogniser returned {best.shape} and {top.shape} for {len(batch)} crops"
                )
            # One time step covers this many pixels of the padded input: 8 for PP-OCR's
            # recognisers, read from the output rather than assumed.
            step = width / best.shape[1]
            for j, i in enumerate(batch):
                texts[i], confs[i], steps = self._decode(best[j], top[j])
                scale = step / self._width(crops[i])
                positions[i] = tuple(min(1.0, float((t + 0.5) * scale)) for t in steps)
                scores[i] = tuple(float(p) for p in top[j][steps])
        return RecResult(
            tuple(texts), tuple(confs), time.perf_counter() - t0, tuple(positions), tuple(scores)
        )

    def _width(self, crop: U8) -> int:
        h, w = crop.shape[:2]
        return max(8, math.ceil(self.options.height * int(w) / int(h)))

    def _padded(self, crop: U8) -> int:
        """The width a crop is padded to: its bucket, at least ``min_width``."""
        return max(_bucket(self._width(crop)), self.options.min_width)

    def _batches(self, crops: list[U8]) -> list[list[int]]:
        buckets: dict[int, list[int]] = {}
        for i, crop in enumerate(crops):
            buckets.setdefault(self._padded(crop), []).append(i)
        batches: list[list[int]] = []
        for width, members in sorted(buckets.items()):
            size = max(1, min(self.options.batch_size, self.options.max_batch_width // width))
            batches += [members[k : k + size] for k in range(0, len(members), size)]
        return batches

    def _resize(self, crop: U8) -> F32:
        resized = cv2.resize(crop, (self._width(crop), self.options.height))
        return resized.astype(np.float32) * np.float32(2 / 255) - np.float32(1.0)

    def _decode(
        self, best: npt.NDArray[np.int64], top: F32
    ) -> tuple[str, float, npt.NDArray[np.intp]]:
        """Greedy CTC over each step's best class and its probability: repeats merged, blanks
        dropped; the confidence is the mean probability of the kept steps. Also returns the
        step each character was emitted at."""
        keep = best != 0
        keep[1:] &= best[1:] != best[:-1]
        steps = np.flatnonzero(keep)
        if not steps.size:
            return "", 0.0, steps
        pieces = [self.charset[k] for k in best[keep]]
        # (An entry of the dictionary may be more than one code point: each gets its step.)
        per_char = np.repeat(steps, [len(p) for p in pieces])
        return "".join(pieces), float(top[keep].mean()), per_char


def _bucket(width: int) -> int:
    """Round a crop width up to its bucket: finer steps for narrow crops."""
    step = 16 if width <= 128 else 32 if width <= 512 else 64 if width <= 1024 else 128
    return -(-width // step) * step
