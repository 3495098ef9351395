"""The engine: detection -> optional angle classification -> recognition, over many pages.

One :meth:`Engine.run` call takes pages from any number of documents or requests. Detection
runs per page; the line crops of every page are then pooled, so the classifier and the
recogniser see full batches of similar widths however the work was split into requests.
A page is read (decoded, for a deferred page) only for its detection and let go once its
lines are cut out, under a pixel budget shared by every thread that runs the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from cachetools import LRUCache

from ocrserve.config import Settings
from ocrserve.engine.cls import AngleClassifier, ClsOptions
from ocrserve.engine.det import DetOptions, DetResult, TextDetector
from ocrserve.engine.heap import HeapTrimmer
from ocrserve.engine.models import ModelSet, ModelSpec
from ocrserve.engine.orient import OrientOptions, page_angle, to_original, turn_upright
from ocrserve.engine.quantize import ensure_int8
from ocrserve.engine.rec import RecOptions, RecResult, TextRecognizer
from ocrserve.engine.session import CPU, OrtSession, RuntimeOptions, resolve_providers
from ocrserve.engine.words import CropGeometry
from ocrserve.errors import EngineError, LanguageNotInstalledError, OptionError
from ocrserve.layout import join_text, reading_order
from ocrserve.pdftext import page_from_text_layer
from ocrserve.types import PRECISIONS, Box, Line, OCROptions, Page, PageResult, Precision, Timings

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Stages:
    """The stage objects of one precision that stay loaded: the general detector, the
    classifier and the default language's recogniser (other models: :class:`WarmModels`)."""

    det: TextDetector
    cls: AngleClassifier
    recs: dict[str, TextRecognizer]  # rec model file name -> recogniser


Stage = TextDetector | TextRecognizer


@dataclass(frozen=True, slots=True)
class _Models:
    """The models one call runs: its language's detector and recogniser, the classifier."""

    det: TextDetector
    cls: AngleClassifier
    rec: TextRecognizer


class WarmModels:
    """The models beyond the default ones (other languages' recognisers and detectors), each
    loaded on first use and kept warm while their files' sizes fit in ``budget`` bytes; past
    it the least recently used is let go (a call still running it keeps it until it ends).

    A model's cost is its file's size: the weights are what a session holds, and the file is
    known before loading it, where the process's RSS moves with everything else it does.
    """

    def __init__(self, budget: int, build: Callable[[ModelSpec, Precision], Stage]) -> None:
        self.budget = budget
        self._build = build
        self._lru: LRUCache[tuple[str, Precision], Stage] = LRUCache(
            maxsize=max(budget, 1), getsizeof=_stage_bytes
        )
        self._lock = threading.Lock()
        #: How many models were loaded and let go: the budget is too small when it climbs.
        self.loads = 0
        self.evictions = 0

    def get(self, spec: ModelSpec, precision: Precision) -> Stage:
        key = (spec.file, precision)
        with self._lock:
            stage = self._lru.get(key)
            if stage is not None:
                return stage
            stage = self._build(spec, precision)
            self.loads += 1
            before = len(self._lru)
            if _stage_bytes(stage) <= self._lru.maxsize:
                self._lru[key] = stage
                self.evictions += before + 1 - len(self._lru)
            else:  # larger than the whole budget: used for this call, never kept
                self.evictions += 1
            return stage

    @property
    def loaded(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(f"{file}@{precision}" for file, precision in self._lru)


def _stage_bytes(stage: Stage) -> int:
    return max(stage.session.path.stat().st_size, 1)


class PixelBudget:
    """Pixels of the pages held at once, across every thread that runs one engine.

    A page waits until its pixels fit under ``limit`` beside the pages already held; a page
    larger than the whole budget is let in alone, rather than never.

    >>> budget = PixelBudget(60_000_000)
    >>> with budget.hold(page.pixels):   # doctest: +SKIP
    ...     image = page.image
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a pixel budget must be at least 1, got {limit!r}")
        self.limit = limit
        self._held = 0
        self._cond = threading.Condition()

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._cond:
            while self._held and self._held + pixels > self.limit:
                self._cond.wait()
            self._held += pixels
        try:
            yield
        finally:
            with self._cond:
                self._held -= pixels
                self._cond.notify_all()


class Engine:
    """Recognises text on pages. Thread-safe: share one instance.

    >>> engine = Engine.from_settings(Settings())                    # doctest: +SKIP
    >>> [r.text for r in engine.run(decode_path("scan.pdf").pages)]  # doctest: +SKIP
    ['Form 1040-NR ...', ...]
    """

    name = "ppocr"

    def __init__(
        self,
        models: ModelSet,
        *,
        runtime: RuntimeOptions = RuntimeOptions(),
        det: DetOptions = DetOptions(),
        cls: ClsOptions = ClsOptions(),
        rec: RecOptions = RecOptions(),
        precision: Precision = "fp32",
        defaults: OCROptions = OCROptions(),
        orient: OrientOptions = OrientOptions(),
        cache_dir: Path | None = None,
        max_pixels_in_flight: int = 60_000_000,
        model_memory: int = 512 << 20,
    ) -> None:
        self.models = models
        self.runtime = runtime
        self.det_options, self.cls_options, self.rec_options = det, cls, rec
        self.orient_options = orient
        self.precision: Precision = self._check_precision(precision)
        self.defaults = defaults
        self.cache_dir = cache_dir or models.folder
        #: Pixels of the pages being read at once, by every thread: see ``run``.
        self.pixels_in_flight = PixelBudget(max_pixels_in_flight)
        # Stages per precision, built on first use. The lock guards only this one-time
        # construction; running a stage mutates nothing shared.
        self._stages: dict[Precision, Stages] = {}
        self._build_lock = threading.Lock()
        #: Other languages' models, loaded on first use, kept up to ``model_memory`` bytes.
        self.warm = WarmModels(model_memory, self._stage)
        #: Hands freed heap back to the OS after a call that left the process 128 MB above
        #: its last trim (heap.py; issue 12 item 5).
        self.heap = HeapTrimmer(slack=128 << 20)
        self.stages(self.precision)
        #: Whether :meth:`warmup` has run (a preloaded engine comes warmed up).
        self.warmed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        return cls(
            ModelSet.locate(settings.model_dir, tier=settings.model_tier),
            runtime=RuntimeOptions(
                intra_op_threads=settings.intra_op_threads, providers=settings.providers
            ),
            det=DetOptions(
                limit_side=settings.det_limit_side,
                max_side=settings.det_max_side,
                max_upscale=settings.det_max_upscale,
                thresh=settings.det_thresh,
                box_thresh=settings.det_box_thresh,
                unclip_ratio=settings.det_unclip_ratio,
                probe_side=settings.det_probe_side,
                text_height=settings.det_text_height,
            ),
            cls=ClsOptions(batch_size=settings.cls_batch_size),
            rec=RecOptions(batch_size=settings.rec_batch_size),
            precision=settings.precision,
            defaults=OCROptions(
                lang=settings.lang,
                use_cls=settings.use_cls,
                min_confidence=settings.min_confidence,
            ),
            cache_dir=settings.data_dir / "models",
            max_pixels_in_flight=settings.max_pixels_in_flight,
            model_memory=settings.model_memory_mb << 20,
        )

    @classmethod
    def for_lanes(cls, settings: Settings) -> tuple[Engine, int]:
        """An engine sized for the service's inference lanes, and how many lanes to run.

        On CPU the lanes share the cores (``threads_per_lane`` each); on a GPU one lane.
        """
        on_gpu = resolve_providers(settings.providers)[0] != CPU
        threads = settings.threads_per_lane(on_gpu)
        engine = cls.from_settings(settings.model_copy(update={"intra_op_threads": threads}))
        return engine, settings.lane_count(engine.providers[0] != CPU)

    @classmethod
    def preload(cls, settings: Settings) -> Future[tuple[Engine, int]]:
        """Start :meth:`for_lanes` and :meth:`warmup` in a thread and return at once:
        onnxruntime builds its sessions and runs mostly outside the GIL, so a server imports its
        web stack meanwhile (0.2-0.3 s of a cold start on two cores; ``bench/coldstart.py``).

        >>> loading = Engine.preload(settings)   # doctest: +SKIP
        >>> engine, lanes = loading.result()     # re-raises what loading raised
        """

        def load() -> tuple[Engine, int]:
            engine, lanes = cls.for_lanes(settings)
            engine.warmup()
            return engine, lanes

        pool = ThreadPoolExecutor(1, thread_name_prefix="ocrserve-preload")
        try:
            return pool.submit(load)
        finally:
            pool.shutdown(wait=False)  # the thread ends with its one job

    @property
    def model_version(self) -> str:
        """Identifies the models' exact bytes: part of any cache key over results."""
        parts = self.models.specs
        return "+".join(f"{s.file.removesuffix('.onnx')}@{s.sha256[:12]}" for s in parts)

    @property
    def langs(self) -> tuple[str, ...]:
        return self.models.langs

    @property
    def providers(self) -> tuple[str, ...]:
        return self.stages(self.precision).det.session.providers

    def stages(self, precision: Precision) -> Stages:
        stages = self._stages.get(precision)
        if stages is not None:
            return stages
        with self._build_lock:
            if precision not in self._stages:
                self._stages[precision] = self._build(precision)
            return self._stages[precision]

    def _session(self, spec: ModelSpec, precision: Precision) -> OrtSession:
        path = self.models.path(spec)
        # Only the recogniser is quantised: the detector and the classifier are convolutional,
        # and int8 (MatMul-only or even static QLinearConv) measured no faster on them here.
        if spec.task == "rec" and precision == "int8":
            path = ensure_int8(path, spec.sha256, self.cache_dir)
        return OrtSession(path, self.runtime, argmax=spec.task == "rec")

    def _stage(self, spec: ModelSpec, precision: Precision) -> Stage:
        session = self._session(spec, precision)
        if spec.task == "det":
            return TextDetector(session, self.det_options)
        return TextRecognizer(session, self.rec_options)

    def _build(self, precision: Precision) -> Stages:
        rec = self.models.rec_for(self.defaults.lang) or self.models.recs[0]
        det = self._stage(self.models.det, precision)
        recogniser = self._stage(rec, precision)
        assert isinstance(det, TextDetector) and isinstance(recogniser, TextRecognizer)
        return Stages(
            det=det,
            cls=AngleClassifier(self._session(self.models.cls, precision), self.cls_options),
            recs={rec.file: recogniser},
        )

    def serves(self, lang: str) -> bool:
        return self.models.rec_for(lang) is not None

    def detector(self, lang: str, precision: Precision) -> TextDetector:
        """The detector for ``lang``: the general one, or a language's own, kept warm."""
        spec = self.models.det_for(lang)
        if spec == self.models.det:
            return self.stages(precision).det
        stage = self.warm.get(spec, precision)
        assert isinstance(stage, TextDetector)
        return stage

    def recogniser(self, lang: str, precision: Precision) -> TextRecognizer:
        """The recogniser for ``lang``: the default language's, or another, kept warm."""
        spec = self.models.rec_for(lang)
        if spec is None:
            raise LanguageNotInstalledError(lang, installed=self.langs)
        pinned = self.stages(precision).recs.get(spec.file)
        if pinned is not None:
            return pinned
        stage = self.warm.get(spec, precision)
        assert isinstance(stage, TextRecognizer)
        return stage

    def resolve(self, options: OCROptions | None) -> tuple[OCROptions, str, Precision]:
        """Validate per-call options: the recogniser file for the language and the precision."""
        opts = options or self.defaults
        spec = self.models.rec_for(opts.lang)
        if spec is None:
            raise LanguageNotInstalledError(opts.lang, installed=self.langs)
        precision = self._check_precision(opts.precision or self.precision)
        return opts, spec.file, precision

    @staticmethod
    def _check_precision(value: str) -> Precision:
        for p in PRECISIONS:
            if value == p:
                return p
        raise OptionError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {value!r}",
            option="precision",
            value=value,
            allowed=PRECISIONS,
        )

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]:
        """Recognise every page; returns one result per page, in order.

        A PDF page whose own text layer is usable is read from it, not recognised, unless
        ``options.pdf_text`` is ``"ocr"`` (``"pdf"``: every PDF page is read from its layer,
        usable or not; images are always recognised).

        Pages are read one at a time, each under ``pixels_in_flight`` while it is held: its
        image is read (a deferred page decodes it here), its lines found and cut out, and
        the image let go before the next page's, so a call costs one page of memory however
        many pages it is given, and the process no more than the budget however many calls
        run at once.
        """
        opts, _, precision = self.resolve(options)
        if not pages:
            return []
        results: list[PageResult | None] = [page_from_text_layer(p, opts) for p in pages]
        todo = [n for n, r in enumerate(results) if r is None]
        if todo:
            models = _Models(
                self.detector(opts.lang, precision),
                self.stages(precision).cls,
                self.recogniser(opts.lang, precision),
            )
            read = self._recognise([pages[n] for n in todo], opts, models)
            for n, result in zip(todo, read, strict=True):
                results[n] = result
        done = [r for r in results if r is not None]
        if len(done) != len(pages):
            raise EngineError(f"{len(done)} results for {len(pages)} pages")
        self.heap.maybe_trim()
        return done

    def _recognise(
        self, pages: Sequence[Page], opts: OCROptions, models: _Models
    ) -> list[PageResult]:
        """Detect, turn and read ``pages``: :meth:`run`'s work for the pages without a usable
        text layer."""

        def confident(lines: list[U8]) -> tuple[float, ...]:
            return models.rec(lines).confidences

        detected: list[DetResult] = []
        sizes: list[tuple[int, int]] = []  # (width, height) of each page as it came
        angles: list[int] = []
        crops: list[U8] = []
        geometry: list[CropGeometry] = []
        owner: list[int] = []  # page position of each crop
        for n, page in enumerate(pages):
            with self.pixels_in_flight.hold(page.pixels):
                img = _as_bgr(page.image, page.index)
                sizes.append((img.shape[1], img.shape[0]))
                [found] = models.det([img])
                angle = 0
                if opts.orientation == "auto":
                    angle = page_angle(
                        img, found.boxes, models.cls, _crop, self.orient_options, read=confident
                    )
                if angle:
                    # Detected again upright: the detector finds lines best as they were
                    # printed, and the reading order is the upright page's.
                    img = turn_upright(img, angle)
                    [again] = models.det([img])
                    found = replace(again, elapsed=found.elapsed + again.elapsed)
                for box in found.boxes:
                    crop, vertical = _cut(img, box)
                    crops.append(crop)
                    geometry.append(CropGeometry(box, vertical=vertical, flipped=False))
                    owner.append(n)
                del img
            detected.append(found)
            angles.append(angle)

        recognised, cls_elapsed, flipped = self._read(crops, models, opts.use_cls)

        # Batched stages' time is shared out by each page's share of the crops' pixels.
        work = np.zeros(len(pages))
        for c, n in zip(crops, owner, strict=True):
            work[n] += c.shape[0] * c.shape[1]
        share = work / work.sum() if work.sum() else work

        lines: list[list[Line]] = [[] for _ in pages]
        for k, n in enumerate(owner):
            raw, conf = recognised.texts[k], recognised.confidences[k]
            text = raw.strip()
            if not text or conf < opts.min_confidence:
                continue
            cut = CropGeometry(geometry[k].box, geometry[k].vertical, flipped[k])
            words = cut.words(
                raw,
                recognised.positions[k] if recognised.positions else (),
                recognised.char_confidences[k] if recognised.char_confidences else (),
            )
            lines[n].append(Line(text, conf, _box(geometry[k].box), words))

        results = []
        for n, page in enumerate(pages):
            # Ordered on the upright page, then carried back to the page as it came.
            order = reading_order([line.box for line in lines[n]])
            ordered = [lines[n][i] for block in order for row in block for i in row]
            if angles[n]:
                ordered = [_line_to_original(line, angles[n], *sizes[n]) for line in ordered]
            det_t = detected[n].elapsed
            cls_t = cls_elapsed * float(share[n])
            rec_t = recognised.elapsed * float(share[n])
            results.append(
                PageResult(
                    index=page.index,
                    width=sizes[n][0],
                    height=sizes[n][1],
                    lines=tuple(ordered),
                    text=join_text([line.text for line in lines[n]], order),
                    timings=Timings(det=det_t, cls=cls_t, rec=rec_t, total=det_t + cls_t + rec_t),
                    angle=angles[n],
                    model=self.model_version,
                )
            )
        return results

    def _read(
        self, crops: list[U8], models: _Models, use_cls: bool
    ) -> tuple[RecResult, float, list[bool]]:
        """Turn and read the crops; returns what was read, the classifier's seconds, and
        which crops were read turned upside down.

        With ``ClsOptions.verify`` a crop the classifier turns is read both ways and keeps
        the turn only where the turned reading is the more confident, by ``verify_margin``
        (see ``ClsOptions``).
        """
        rec = models.rec
        flipped = [False] * len(crops)
        if not (use_cls and crops):
            recognised = rec(crops)
            cls_elapsed = 0.0
        else:
            turned = models.cls(crops)
            cls_elapsed = turned.elapsed
            recognised = rec(turned.images)
            flipped = list(turned.flipped)
            which = [k for k, f in enumerate(flipped) if f]
            if which and self.cls_options.verify:
                as_is = rec([crops[k] for k in which])
                texts, confs = list(recognised.texts), list(recognised.confidences)
                places, scores = list(recognised.positions), list(recognised.char_confidences)
                margin = self.cls_options.verify_margin
                for j, k in enumerate(which):
                    if as_is.confidences[j] + margin >= confs[k]:
                        texts[k], confs[k] = as_is.texts[j], as_is.confidences[j]
                        places[k], scores[k] = as_is.positions[j], as_is.char_confidences[j]
                        flipped[k] = False
                recognised = RecResult(
                    tuple(texts),
                    tuple(confs),
                    recognised.elapsed + as_is.elapsed,
                    tuple(places),
                    tuple(scores),
                )
        if len(recognised.texts) != len(crops):
            raise EngineError(f"{len(recognised.texts)} texts for {len(crops)} crops")
        return recognised, cls_elapsed, flipped

    def warmup(self) -> float:
        """Run every stage once on a synthetic page; returns the seconds it took (0 when it
        has run before: once is what the runtime needs)."""
        if self.warmed:
            return 0.0
        t0 = time.perf_counter()
        img = np.full((64, 256, 3), 255, dtype=np.uint8)
        cv2.putText(img, "ocrserve 123", (8, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        self.run([Page(img)])
        self.warmed = True
        return time.perf_counter() - t0


def checked_image(image: npt.NDArray[np.uint8], index: int) -> U8:
    """Check a page at an engine's boundary: uint8, HxW grey or HxWx3 BGR or HxWx4 BGRA (as
    it is; every engine takes these)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise OptionError(
            f"page {index}: expected a uint8 numpy image, got "
            f"{getattr(image, 'dtype', type(image).__name__)}",
            option="pages",
            value=index,
        )
    grey = image.ndim == 2
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    if not (grey or colour) or min(image.shape[:2]) < 1:
        raise OptionError(
            f"page {index}: expected an HxWx3 image, got shape {image.shape}",
            option="pages",
            value=index,
        )
    return image


def _as_bgr(image: npt.NDArray[np.uint8], index: int) -> U8:
    """A checked page as the PP-OCR stages take it: HxWx3 BGR (grey widened, alpha dropped)."""
    image = checked_image(image, index)
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    return image


def _crop(img: U8, box: F32) -> U8:
    """Cut a (possibly rotated) line out of the page and straighten it."""
    return _cut(img, box)[0]


def _cut(img: U8, box: F32) -> tuple[U8, bool]:
    """Cut a (possibly rotated) line out of the page and straighten it; also says whether it
    was a tall line, laid flat counter-clockwise."""
    w = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    h = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    w, h = max(w, 1), max(h, 1)
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(
        img, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    # A tall, narrow crop is a vertical line of text: the recogniser reads left to right.
    vertical = h / w >= 1.5
    if vertical:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop), vertical


def _line_to_original(line: Line, angle: int, width: int, height: int) -> Line:
    """A line of the upright page in the pixels of the page as it came."""

    def back(box: Box) -> Box:
        return _box(to_original(np.asarray(box, np.float64), angle, width, height))

    words = tuple(replace(word, box=back(word.box)) for word in line.words)
    return replace(line, box=back(line.box), words=words)


def _box(box: F32 | npt.NDArray[np.float64]) -> Box:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = box.tolist()
    return ((x0, y0), (x1, y1), (x2, y2), (x3, y3))
