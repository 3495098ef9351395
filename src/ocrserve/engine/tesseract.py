"""Tesseract 5: the second engine, for the languages PP-OCR has no recogniser for (Korean,
Arabic, the Cyrillic scripts, Indic scripts, ...) and for PP-OCR's own languages when it fails.

Same shape as :class:`~ocrserve.engine.pipeline.Engine`: numpy pages and :class:`OCROptions`
in, one :class:`PageResult` per page out, each line with its words and 4-point boxes in the
page's pixels. The language packs are Debian's (``tesseract-ocr-kor``, ...); a code of ours
(ISO 639-1, PP-OCR's, or Tesseract's own) is mapped to a pack by :data:`LANG_PACKS`.

Why pytesseract, the binding the issue names: it runs the ``tesseract`` command line, one
process per page, so a crash or a runaway page in Tesseract (a native library with its own
memory and threads) cannot take the server down, and a page past ``timeout_s`` is killed.
tesserocr, the in-process binding, would have to be compiled against libtesseract's headers
for every platform and Tesseract release, and a fault in it would kill the server. The price
is a process per page: 0.06 s (Arabic) to 0.25 s (simplified Chinese) to start it and load
the pack, 25-65 MB each, and the page written to a temporary file (PNM, 3 bytes a pixel).

Measured on this machine (Tesseract 5.3.0, Debian's packs, which are ``tessdata_fast``
4.1.0 models, one thread):

- Page segmentation: ``--psm 3`` (automatic, with columns) loses the first characters of
  lines of Korean, Japanese and traditional Chinese text, read as separate blocks (Korean
  lines at 24 to 64 px: 56-90% of the text right; ``--psm 4`` and ``6``: 100%). It does
  read a three-column page in column order, where ``4`` runs across the columns. So the
  Hangul, kana and Han packs use ``4`` (one column of lines of varying sizes, see
  :data:`SINGLE_COLUMN_PACKS`), and Thai (``3`` cut a page of 40 px Thai lines into blocks out
  of order: 4.5% CER, ``4`` 0.3%; bench/RESULTS.md, reach); every other pack ``3``.
- Confidence: a clean line's words score 0.90-0.97 (Tesseract's 0-100 divided by 100), but
  on harder pages Tesseract's confidences run far lower than PP-OCR's for text read as well:
  small bold "TAX INVOICE" on a receipt, read right, scores 0.02. Dropping lines below
  PP-OCR's 0.5 raised the CER of 20 SROIE receipts from 15.7% (nothing dropped) to 20.0% and
  of 10 FUNSD forms from 26.6% to 34.5%: most dropped lines were text. Below 0.2 the
  receipts score best (15.3%) and the forms lose 0.3 points. So a line is dropped below
  ``min_confidence`` times ``min_confidence_scale`` (0.4: 0.2 at the default 0.5); the
  confidences reported are Tesseract's own.
- Right-to-left text: Tesseract gives an Arabic or Hebrew line's words in reading (logical)
  order, the first word the rightmost, each word's characters in logical order; lines and
  words keep that order here, so a line's text reads right.
- Boxes: a word's box is Tesseract's, its line's the union of its words'. Some Korean
  syllables' boxes reach 16 px below the ink of a 40 px line (into the space between lines).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import pytesseract

from ocrserve.engine.models import normalize_lang
from ocrserve.engine.pipeline import checked_image
from ocrserve.errors import (
    ConfigError,
    EngineError,
    LanguageNotInstalledError,
    ModelError,
)
from ocrserve.layout import join_text
from ocrserve.types import Box, Line, OCROptions, Page, PageResult, Timings, Word

log = logging.getLogger(__name__)

__all__ = ["LANG_PACKS", "SINGLE_COLUMN_PACKS", "TesseractEngine"]

#: Our language codes -> Tesseract's pack (the traineddata file, ``tesseract-ocr-<pack>`` in
#: Debian with ``_`` as ``-``). Three vocabularies, one table: PP-OCR's codes (models.py's
#: PPOCRV6_LANGS, so the fallback reads PP-OCR's languages), ISO 639-1 codes for the languages
#: PP-OCR does not read, and PaddleOCR's names for its script models where one pack stands
#: for the script (``cyrillic`` -> Russian, ``devanagari`` -> Hindi). A code is normalised
#: first (models.normalize_lang: ``zh`` -> ``ch``, ``ja`` -> ``japan``), and a pack's own name
#: (``kor``) is accepted as it is. PaddleOCR's ``ka`` (Kannada) is left out: ISO's ``ka`` is
#: Georgian. PP-OCR's ``rm`` (Romansh) has no pack.
LANG_PACKS: dict[str, str] = {
    # PP-OCR's codes
    "ch": "chi_sim", "chinese_cht": "chi_tra", "en": "eng", "japan": "jpn",
    "af": "afr", "az": "aze", "bs": "bos", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan",
    "de": "deu", "es": "spa", "et": "est", "eu": "eus", "fi": "fin", "fr": "fra", "ga": "gle",
    "gl": "glg", "hr": "hrv", "hu": "hun", "id": "ind", "is": "isl", "it": "ita", "ku": "kmr",
    "la": "lat", "lb": "ltz", "lt": "lit", "lv": "lav", "mi": "mri", "ms": "msa", "mt": "mlt",
    "nl": "nld", "no": "nor", "oc": "oci", "pl": "pol", "pt": "por", "qu": "que",
    "rs_latin": "srp_latn", "sk": "slk", "sl": "slv", "sq": "sqi", "sv": "swe", "sw": "swa",
    "tl": "tgl", "tr": "tur", "uz": "uzb", "vi": "vie",
    # ISO 639-1, languages PP-OCR does not read
    "ko": "kor", "ar": "ara", "fa": "fas", "ur": "urd", "ps": "pus", "sd": "snd", "ug": "uig",
    "he": "heb", "yi": "yid", "ru": "rus", "uk": "ukr", "be": "bel", "bg": "bul", "mk": "mkd",
    "sr": "srp", "kk": "kaz", "ky": "kir", "mn": "mon", "tg": "tgk", "tt": "tat", "el": "ell",
    "hi": "hin", "mr": "mar", "ne": "nep", "sa": "san", "bn": "ben", "as": "asm", "gu": "guj",
    "pa": "pan", "or": "ori", "ta": "tam", "te": "tel", "kn": "kan", "ml": "mal", "si": "sin",
    "th": "tha", "lo": "lao", "km": "khm", "my": "mya", "bo": "bod", "dz": "dzo", "ka": "kat",
    "hy": "hye", "am": "amh", "ti": "tir", "dv": "div", "ro": "ron", "eo": "epo", "fy": "fry",
    "gd": "gla", "br": "bre", "co": "cos", "fo": "fao", "ht": "hat", "iu": "iku", "jv": "jav",
    "su": "sun", "yo": "yor", "to": "ton",
    # PaddleOCR's script models
    "korean": "kor", "arabic": "ara", "cyrillic": "rus", "devanagari": "hin",
    "rs_cyrillic": "srp",
}  # fmt: skip

#: Packs read with ``--psm 4`` (one column of lines) instead of ``3`` (automatic, columns):
#: on Hangul, kana and Han text ``3`` drops lines' first characters, and orders Thai lines
#: wrong (module docstring).
SINGLE_COLUMN_PACKS: frozenset[str] = frozenset(
    {"kor", "kor_vert", "jpn", "jpn_vert", "chi_sim", "chi_sim_vert", "chi_tra", "chi_tra_vert",
     "tha"}
)  # fmt: skip

#: Not languages: orientation and script detection, and equations.
_NOT_LANGUAGES = frozenset({"osd", "equ"})

U8 = npt.NDArray[np.uint8]


class TesseractEngine:
    """Recognises text on pages with Tesseract, one ``tesseract`` process per page.
    Thread-safe: share one instance (each call runs its own processes).

    >>> engine = TesseractEngine.detect()                              # doctest: +SKIP
    >>> engine.model_version, engine.pack_for("ko"), engine.serves("ar")  # doctest: +SKIP
    ('tesseract-5.3.0', 'kor', True)
    >>> engine.run([Page(image)], OCROptions(lang="ko"))[0].text       # doctest: +SKIP
    '안녕하세요 세계'

    ``psm`` None reads each pack with its own page segmentation (:data:`SINGLE_COLUMN_PACKS`,
    else 3); a number makes every page use it. A line is dropped below the call's
    ``min_confidence`` times ``min_confidence_scale`` (module docstring: Tesseract's
    confidences run lower than PP-OCR's). Building one sets ``OMP_THREAD_LIMIT=1`` in
    the process's environment unless it is set already: see :meth:`__init__`.
    """

    name = "tesseract"

    def __init__(
        self,
        *,
        binary: str = "tesseract",
        timeout_s: float = 60.0,
        psm: int | None = None,
        min_confidence_scale: float = 0.4,
        defaults: OCROptions = OCROptions(),
    ) -> None:
        """Check the binary and list its packs (two short ``tesseract`` runs).

        Raises :class:`ModelError` when ``binary`` cannot be run, and :class:`ConfigError`
        when another engine of this process uses another binary: pytesseract keeps the
        binary in one module global that every call reads.
        """
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}", setting="timeout_s")
        if psm is not None and not 3 <= psm <= 13:
            # (0 and 2 find the layout only; 1 needs the osd pack)
            raise ConfigError(f"psm must be 3 to 13, got {psm!r}", setting="psm")
        if not 0.0 <= min_confidence_scale <= 1.0:
            raise ConfigError(
                f"min_confidence_scale must be 0 to 1, got {min_confidence_scale!r}",
                setting="min_confidence_scale",
            )
        # The tesseract processes run one OpenMP thread each: the service runs its own lanes
        # side by side, and Tesseract's default (a thread per core, per process) would put
        # lanes x cores threads on the cores. pytesseract hands os.environ to every process
        # it starts and takes no environment of its own, so the limit goes there, once, here
        # (not at import). It reaches only processes started later: nothing in this process
        # links OpenMP (onnxruntime, OpenCV and numpy's wheels use their own thread pools).
        # An operator's own OMP_THREAD_LIMIT wins.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        self.binary = binary
        self.timeout_s = timeout_s
        self.psm = psm
        #: A line is dropped below ``options.min_confidence`` times this (module docstring).
        self.min_confidence_scale = min_confidence_scale
        self.defaults = defaults
        version, listed = _use_binary(binary)
        self._version = f"tesseract-{version}"
        self._installed = tuple(sorted(str(p) for p in listed if str(p) not in _NOT_LANGUAGES))
        packs = set(self._installed)
        ours = {code for code, pack in LANG_PACKS.items() if pack in packs}
        self._langs = tuple(sorted(ours | packs))
        #: Whether :meth:`warmup` has run.
        self.warmed = False

    @classmethod
    def detect(
        cls,
        *,
        binary: str = "tesseract",
        timeout_s: float = 60.0,
        psm: int | None = None,
        min_confidence_scale: float = 0.4,
        defaults: OCROptions = OCROptions(),
    ) -> TesseractEngine | None:
        """The engine, or None when ``binary`` is not installed (not on PATH, or no such
        file). A binary that is there but cannot be run raises, as the constructor does."""
        if shutil.which(binary) is None:
            log.info("tesseract: %r is not installed: no second engine", binary)
            return None
        return cls(
            binary=binary,
            timeout_s=timeout_s,
            psm=psm,
            min_confidence_scale=min_confidence_scale,
            defaults=defaults,
        )

    @property
    def model_version(self) -> str:
        """``tesseract-<version>``, e.g. ``tesseract-5.3.0`` (the packs' own versions are not
        in it: Debian ships one set per release)."""
        return self._version

    @property
    def installed(self) -> tuple[str, ...]:
        """Tesseract's installed packs (``eng``, ``kor``, ...), sorted, less ``osd``/``equ``."""
        return self._installed

    @property
    def langs(self) -> tuple[str, ...]:
        """Every code :meth:`serves`, sorted: the :data:`LANG_PACKS` codes whose pack is
        installed, and the packs' own names."""
        return self._langs

    def pack_for(self, lang: str) -> str | None:
        """The installed pack that reads ``lang`` (``"ko"``, ``"korean"`` and ``"kor"`` ->
        ``"kor"``); None when there is none."""
        code = normalize_lang(lang)
        pack = LANG_PACKS.get(code, code)
        return pack if pack in self._installed else None

    def serves(self, lang: str) -> bool:
        return self.pack_for(lang) is not None

    def psm_for(self, pack: str) -> int:
        """The page segmentation mode a page in ``pack`` is read with."""
        if self.psm is not None:
            return self.psm
        return 4 if pack in SINGLE_COLUMN_PACKS else 3

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]:
        """Recognise every page; returns one result per page, in order.

        Pages are read one after the other, each by its own ``tesseract`` process, and each
        page's image is let go once written for it. Options Tesseract has no use for
        (``use_cls``, ``orientation``, ``precision``) are ignored; PDF text layers are the
        caller's (the router reads them first).
        """
        opts = options or self.defaults
        pack = self.pack_for(opts.lang)
        if pack is None:
            raise LanguageNotInstalledError(opts.lang, installed=self._langs)
        floor = opts.min_confidence * self.min_confidence_scale
        results = [self._page(page, pack, floor) for page in pages]
        if len(results) != len(pages):
            raise EngineError(f"{len(results)} results for {len(pages)} pages")
        return results

    def _page(self, page: Page, pack: str, min_confidence: float) -> PageResult:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ocrserve-tesseract-") as folder:
            image = _checked(page.image, page.index)
            height, width = image.shape[:2]
            # PNM: written in milliseconds (PNG's compression took 0.67 s of a 1700x2200
            # page's 6 s), and read by Tesseract as it is.
            src = os.path.join(folder, "page.pgm" if image.ndim == 2 else "page.ppm")
            if not cv2.imwrite(src, np.ascontiguousarray(image)):
                raise EngineError(f"page {page.index}: cannot write the image for tesseract")
            del image
            tsv, txt = self._read(src, os.path.join(folder, "out"), pack, page.index)
        blocks = _lines(_words(tsv, page.index), _text_lines(txt), min_confidence)
        lines = [line for block in blocks for line in block]
        # Tesseract's own reading order: its blocks as they come, each block's lines.
        order, k = [], 0
        for block in blocks:
            order.append([[i] for i in range(k, k + len(block))])
            k += len(block)
        return PageResult(
            index=page.index,
            width=width,
            height=height,
            lines=tuple(lines),
            text=join_text([line.text for line in lines], order),
            timings=Timings(total=time.perf_counter() - t0),
            angle=0,
            source="ocr",
            engine=self.name,
            model=self._version,
        )

    def _read(self, src: str, out: str, pack: str, index: int) -> tuple[str, str]:
        """Tesseract's TSV (words, boxes, confidences) and plain text (where its words are
        spaced) of one page, from one process; its failures as :class:`EngineError`.

        Not ``image_to_data``: its TSV lists Tesseract's word objects, and in Korean or
        Japanese text one word can be several, with no space between them in what Tesseract
        reads ("날씨가" comes as "날", "씨", "가"); only its text output says where spaces go.
        pytesseract's one run with two outputs (``run_and_get_multiple_output``) takes no
        ``--psm``, so this calls ``run_tesseract``, which every ``image_to_*`` goes through
        (the same process handling, timeout and errors), for both outputs.
        """
        try:
            pytesseract.pytesseract.run_tesseract(
                src,
                out,
                extension="txt",  # a config file of Tesseract's: also write the text
                lang=pack,
                config=f"--psm {self.psm_for(pack)} -c tessedit_create_tsv=1",
                timeout=self.timeout_s,
            )
            with (
                open(f"{out}.tsv", encoding="utf-8") as f_tsv,
                open(f"{out}.txt", encoding="utf-8") as f_txt,
            ):
                return f_tsv.read(), f_txt.read()
        except pytesseract.TesseractError as e:
            raise EngineError(
                f"tesseract failed on page {index} (lang {pack}, exit status {e.status}): "
                f"{e.message}"
            ) from e
        except RuntimeError as e:  # pytesseract's timeout, after it killed the process
            raise EngineError(
                f"tesseract took more than {self.timeout_s:g} s on page {index} "
                f"(lang {pack}) and was stopped"
            ) from e
        except OSError as e:  # the binary went away since start; an output not written
            raise EngineError(f"cannot run tesseract on page {index}: {e!r}") from e

    def warmup(self) -> float:
        """Read a small synthetic page once (the binary and a pack into the page cache);
        returns the seconds it took (0 when it has run before)."""
        if self.warmed:
            return 0.0
        t0 = time.perf_counter()
        img = np.full((64, 256, 3), 255, dtype=np.uint8)
        cv2.putText(img, "ocrserve 123", (8, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        pack = "eng" if "eng" in self._installed else (self._installed or ("eng",))[0]
        self.run([Page(img)], OCROptions(lang=pack, min_confidence=0.0))
        self.warmed = True
        return time.perf_counter() - t0


#: The binary this process's engines run, once one is built: pytesseract keeps one, in a
#: module global that every call reads.
_binary: str | None = None
_binary_lock = threading.Lock()


def _use_binary(binary: str) -> tuple[str, list[object]]:
    """Make ``binary`` pytesseract's, and return its version and its packs; the binary stays
    as it was when it cannot be run (:class:`ModelError`), and a second binary in one process
    is refused (:class:`ConfigError`)."""
    global _binary
    with _binary_lock:
        if _binary not in (None, binary):
            raise ConfigError(
                f"this process runs Tesseract as {_binary!r} already; pytesseract keeps one "
                f"binary per process, so {binary!r} cannot be used beside it",
                setting="binary",
            )
        before = pytesseract.pytesseract.tesseract_cmd
        pytesseract.pytesseract.tesseract_cmd = binary
        try:
            version = str(pytesseract.get_tesseract_version(cached=False))
            listed = list(pytesseract.get_languages(cached=False))
        except (
            OSError,
            subprocess.CalledProcessError,
            pytesseract.TesseractError,
            SystemExit,
        ) as e:
            # (SystemExit: pytesseract's answer to a version string it cannot parse.)
            pytesseract.pytesseract.tesseract_cmd = before
            raise ModelError(f"cannot run Tesseract as {binary!r}: {e!r}") from e
        _binary = binary
        return version, listed


@dataclass(frozen=True, slots=True)
class _TsvWord:
    """One word row of Tesseract's TSV (level 5)."""

    line: tuple[int, int, int]  # (block, paragraph, line)
    text: str
    confidence: float  # 0..1
    box: Box


#: Tesseract's TSV columns (``level page_num block_num par_num line_num word_num left top width
#: height conf text``); a word row is level 5.
_TSV_COLUMNS = 12
_WORD_LEVEL = "5"
#: How many lines of Tesseract's text a TSV line is looked for in, from where the last was
#: found (a line it wrote blank is skipped before; this is for a line it left out).
_TEXT_WINDOW = 3


def _words(tsv: str, index: int) -> list[_TsvWord]:
    """The non-empty words of Tesseract's TSV, in its order."""
    rows = tsv.splitlines()
    if not rows or not rows[0].startswith("level\t"):
        raise EngineError(f"tesseract gave no TSV header on page {index}: {tsv[:80]!r}")
    words = []
    for row in rows[1:]:
        cells = row.split("\t", _TSV_COLUMNS - 1)
        if len(cells) < _TSV_COLUMNS or cells[0] != _WORD_LEVEL:
            continue
        text = cells[11].strip()
        if not text:
            continue
        try:
            block, par, line = int(cells[2]), int(cells[3]), int(cells[4])
            x0, y0, w, h = (int(c) for c in cells[6:10])
            conf = float(cells[10])
        except ValueError as e:
            raise EngineError(f"tesseract gave a TSV row we cannot read: {row!r}") from e
        words.append(
            _TsvWord(
                (block, par, line),
                text,
                min(max(conf / 100.0, 0.0), 1.0),
                _rect(x0, y0, x0 + w, y0 + h),
            )
        )
    return words


def _text_lines(txt: str) -> list[str]:
    """The non-blank lines of Tesseract's text output (blank lines part its paragraphs)."""
    return [line for line in txt.splitlines() if line.strip()]


def _lines(words: list[_TsvWord], text: list[str], min_confidence: float) -> list[list[Line]]:
    """Tesseract's lines, grouped by its blocks, in its order, each made of the words its text
    output spaces apart (see :func:`_runs`); a line whose words' mean confidence is below
    ``min_confidence`` is dropped."""
    grouped: dict[tuple[int, int, int], list[_TsvWord]] = {}
    for word in words:
        grouped.setdefault(word.line, []).append(word)
    blocks: dict[int, list[Line]] = {}
    at = 0  # the next line of ``text`` to look at
    for key, parts in grouped.items():
        runs = None
        for j in range(at, min(at + _TEXT_WINDOW, len(text))):
            runs = _runs([w.text for w in parts], text[j])
            if runs is not None:
                at = j + 1
                break
        if runs is None:  # not found in the text: each of Tesseract's words a word
            log.debug("tesseract: line %r not found in its text output", key)
            runs = [[i] for i in range(len(parts))]
        line_words = [_joined([parts[i] for i in run]) for run in runs]
        confidence = sum(w.confidence for w in line_words) / len(line_words)
        if confidence < min_confidence:
            continue
        blocks.setdefault(key[0], []).append(
            Line(
                text=" ".join(w.text for w in line_words),
                confidence=confidence,
                box=_union([w.box for w in line_words]),
                words=tuple(line_words),
            )
        )
    return list(blocks.values())


def _runs(words: Sequence[str], spaced: str) -> list[list[int]] | None:
    """Which of Tesseract's consecutive words make one word, as ``spaced`` (its text output's
    line) spaces them: ``["오늘", "날", "씨", "가"]`` in ``"오늘 날씨가"`` is ``[[0], [1, 2, 3]]``.
    None when ``spaced`` is not these words."""
    runs: list[list[int]] = []
    pos = 0
    for i, word in enumerate(words):
        start = pos
        while pos < len(spaced) and spaced[pos].isspace():
            pos += 1
        if not spaced.startswith(word, pos):
            return None
        if runs and pos == start:
            runs[-1].append(i)
        else:
            runs.append([i])
        pos += len(word)
    return runs if not spaced[pos:].strip() else None


def _joined(parts: list[_TsvWord]) -> Word:
    """One word of Tesseract's words written without a space between them."""
    if len(parts) == 1:
        return Word(parts[0].text, parts[0].confidence, parts[0].box)
    return Word(
        "".join(p.text for p in parts),
        sum(p.confidence for p in parts) / len(parts),
        _union([p.box for p in parts]),
    )


def _rect(x0: float, y0: float, x1: float, y1: float) -> Box:
    return (
        (float(x0), float(y0)),
        (float(x1), float(y0)),
        (float(x1), float(y1)),
        (float(x0), float(y1)),
    )


def _union(boxes: Sequence[Box]) -> Box:
    return _rect(
        min(b[0][0] for b in boxes),
        min(b[0][1] for b in boxes),
        max(b[2][0] for b in boxes),
        max(b[2][1] for b in boxes),
    )


def _checked(image: U8, index: int) -> U8:
    """The page as Tesseract is given it: grey or BGR as they are, BGRA without its alpha."""
    image = checked_image(image, index)
    return image if image.ndim == 2 else image[:, :, :3]
