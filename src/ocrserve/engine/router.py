"""Every engine of a process behind the one surface the service runs: :class:`Engines`.

- **By language.** PP-OCR (:class:`~ocrserve.engine.pipeline.Engine`) reads the languages it
  has a recogniser for; the second engine (Tesseract) reads every language it has a pack for
  and PP-OCR has not (Korean, Arabic, Cyrillic scripts, ...). A language neither reads is a
  :class:`~ocrserve.errors.LanguageNotInstalledError` listing what both have.
- **Fallback.** When PP-OCR fails on a call (a model or runtime error, an invariant broken),
  its pages are read again one by one, and the pages that fail alone are read by the second
  engine where it has the language. A circuit breaker (``breaker.py``) counts PP-OCR's consecutive
  failures: past ``breaker_failures`` it opens, and for ``breaker_reset_s`` pages go straight
  to the second engine, then one call tries PP-OCR again. Bad input is not a failure: it is
  raised as it is, and counts nothing.
- **Rollout.** A candidate model set reads the requests :meth:`Engines.choose` gives it: a
  share of them by a stable hash of the request (the same request, retried, reads the same
  model), or those a header forces. Each page names the engine and model version that read
  it (``PageResult.engine``, ``.model``).

>>> engines = Engines.from_settings(Settings())           # doctest: +SKIP
>>> engines.run(pages, OCROptions(lang="ko"))[0].engine   # doctest: +SKIP
'tesseract'
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from ocrserve.config import Settings
from ocrserve.engine.breaker import Breaker, BreakerOpen, State
from ocrserve.engine.pipeline import Engine
from ocrserve.errors import (
    ConfigError,
    InputError,
    LanguageNotInstalledError,
    ModelError,
    OptionError,
    ServiceError,
)
from ocrserve.pdftext import page_from_text_layer
from ocrserve.types import MODEL_CHOICES, ModelChoice, OCROptions, Page, PageResult

log = logging.getLogger(__name__)

MAIN = "ppocr"


class OCREngine(Protocol):
    """What an engine is to the router: pages and options in, one result per page out."""

    name: str

    @property
    def model_version(self) -> str: ...

    @property
    def langs(self) -> tuple[str, ...]: ...

    def serves(self, lang: str) -> bool: ...

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]: ...

    def warmup(self) -> float: ...


class EngineEvents(Protocol):
    """What the router tells whoever watches it (the service's metrics)."""

    def page_read(self, result: PageResult) -> None: ...
    def engine_failed(self, engine: str, model: str) -> None: ...
    def fell_back(self, reason: str, pages: int) -> None: ...
    def breaker_changed(self, state: str) -> None: ...


class _NoEvents:
    def page_read(self, result: PageResult) -> None:
        pass

    def engine_failed(self, engine: str, model: str) -> None:
        pass

    def fell_back(self, reason: str, pages: int) -> None:
        pass

    def breaker_changed(self, state: str) -> None:
        pass


def _not_a_failure(e: BaseException) -> bool:
    """The errors that say nothing about the engine's health: the caller's, or the service's."""
    return isinstance(e, InputError | OptionError | ServiceError)


class Engines:
    """PP-OCR, its candidate model set and the second engine, as one engine to the service.

    Thread-safe: the lanes of the batcher share one.
    """

    def __init__(
        self,
        main: Engine,
        *,
        second: OCREngine | None = None,
        candidate: Engine | None = None,
        share: float = 0.0,
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
        events: EngineEvents | None = None,
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"a candidate's share is between 0 and 1, not {share!r}")
        self.main = main
        self.second = second
        self.candidate = candidate
        self.share = share if candidate is not None else 0.0
        self.breaker = Breaker(
            failures=breaker_failures,
            reset_s=breaker_reset_s,
            is_failure=lambda e: not _not_a_failure(e),
            on_change=self._breaker_moved,
        )
        #: Told of every page read, engine failure, fallback and breaker turn (metrics).
        self.events: EngineEvents = events or _NoEvents()

    @classmethod
    def from_settings(cls, settings: Settings, main: Engine | None = None) -> Engines:
        """The engines ``settings`` describe; ``main`` when it is built already (lanes)."""
        from ocrserve.engine.tesseract import TesseractEngine

        main = main or Engine.from_settings(settings)
        candidate = None
        if settings.candidate_model_dir is not None:
            candidate = Engine.from_settings(
                settings.model_copy(
                    update={
                        "model_dir": settings.candidate_model_dir,
                        "model_tier": settings.candidate_model_tier,
                        "intra_op_threads": main.runtime.intra_op_threads,
                    }
                )
            )
        second = None
        if settings.second_engine == "tesseract":
            try:
                second = TesseractEngine.detect()
            except (ModelError, ConfigError) as e:  # there, but broken: PP-OCR still serves
                log.error("tesseract cannot be used (%s): no second engine", e)
            if second is None:
                log.warning("no tesseract: PP-OCR's languages only, and no fallback")
        return cls(
            main,
            second=second,
            candidate=candidate,
            share=settings.candidate_share,
            breaker_failures=settings.breaker_failures,
            breaker_reset_s=settings.breaker_reset_s,
        )

    # --- what the service reads of the main engine ------------------------------------------

    @property
    def defaults(self) -> OCROptions:
        return self.main.defaults

    @property
    def precision(self) -> str:
        return self.main.precision

    @property
    def providers(self) -> tuple[str, ...]:
        return self.main.providers

    @property
    def model_version(self) -> str:
        """The stable model set's version."""
        return self.main.model_version

    def version(self, choice: ModelChoice) -> str:
        """The version of the model set ``choice`` names (the stable one without a candidate)."""
        return self._pp(choice).model_version

    @property
    def langs(self) -> tuple[str, ...]:
        """Every language some engine reads."""
        return tuple(sorted({lang for langs in self.langs_by_engine().values() for lang in langs}))

    def langs_by_engine(self) -> dict[str, tuple[str, ...]]:
        """The languages each engine reads, the second engine's less those PP-OCR reads."""
        out = {MAIN: self.main.langs}
        if self.second is not None:
            out[self.second.name] = tuple(
                lang for lang in self.second.langs if not self.main.serves(lang)
            )
        return out

    def engine_for(self, lang: str) -> str:
        """The name of the engine that reads ``lang``; raises when none does."""
        if self.main.serves(lang):
            return MAIN
        if self.second is not None and self.second.serves(lang):
            return self.second.name
        raise LanguageNotInstalledError(lang, installed=self.langs)

    def resolve(self, options: OCROptions | None) -> OCROptions:
        """Check per-call options before any work: the language, the precision, the model set."""
        opts = options or self.defaults
        if self.engine_for(opts.lang) == MAIN:
            self._pp(opts.models).resolve(opts)
        else:
            self.main.resolve(replace(opts, lang=self.main.defaults.lang))  # the precision
        return opts

    # --- rollout -----------------------------------------------------------------------------

    def choose(self, key: bytes | str, forced: str | None = None) -> ModelChoice:
        """The model set for a request: ``forced`` ("stable"/"candidate", from a header) when
        given, else the candidate for the ``share`` of keys whose hash falls under it.

        ``key`` identifies the request (its document's bytes and options), so a retry of the
        same request reads the same model. SHA-256, not Python's ``hash``: the split must be
        the same in every process and after every restart.
        """
        if forced is not None:
            if forced not in MODEL_CHOICES:
                raise OptionError(
                    f"the model set is one of {', '.join(MODEL_CHOICES)}, not {forced!r}",
                    option="model",
                    value=forced,
                    allowed=MODEL_CHOICES,
                )
            if forced == "candidate" and self.candidate is None:
                raise OptionError(
                    "no candidate model set is installed (OCRSERVE_CANDIDATE_MODEL_DIR)",
                    option="model",
                    value=forced,
                    allowed=("stable",),
                )
            return "candidate" if forced == "candidate" else "stable"
        if self.candidate is None or self.share <= 0.0:
            return "stable"
        data = key.encode() if isinstance(key, str) else key
        point = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2**64
        return "candidate" if point < self.share else "stable"

    def _pp(self, choice: ModelChoice) -> Engine:
        return self.candidate if choice == "candidate" and self.candidate else self.main

    # --- running -----------------------------------------------------------------------------

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]:
        """One result per page, in order, each naming the engine and model that read it."""
        opts = self.resolve(options)
        if not pages:
            return []
        if self.engine_for(opts.lang) != MAIN:
            results = self._second_run(pages, opts)
        elif self.second is None or not self.second.serves(opts.lang):
            # No fallback for this language: errors as they come.
            results = self._counted(self._pp(opts.models).run, pages, opts)
        else:
            results = self._with_fallback(self._pp(opts.models), pages, opts)
        for result in results:
            self.events.page_read(result)
        return results

    def _counted(
        self,
        run: Callable[[Sequence[Page], OCROptions], list[PageResult]],
        pages: Sequence[Page],
        opts: OCROptions,
    ) -> list[PageResult]:
        """PP-OCR's run, its failures counted by model version (not the caller's errors)."""
        try:
            return run(pages, opts)
        except Exception as e:
            if not _not_a_failure(e):
                self.events.engine_failed(MAIN, self._pp(opts.models).model_version)
            raise

    def _guarded(self, engine: Engine, pages: Sequence[Page], opts: OCROptions) -> list[PageResult]:
        return self.breaker.call(self._counted, engine.run, pages, opts)

    def _breaker_moved(self, state: State) -> None:
        log.warning("%s circuit breaker: %s", MAIN, state)
        self.events.breaker_changed(state)

    def _with_fallback(
        self, engine: Engine, pages: Sequence[Page], opts: OCROptions
    ) -> list[PageResult]:
        try:
            return self._guarded(engine, pages, opts)
        except BreakerOpen:
            self.events.fell_back("breaker_open", len(pages))
            return self._second_run(pages, opts)
        except Exception as e:
            if _not_a_failure(e):
                raise
            log.warning("%s failed on %d pages (%r): reading them again", MAIN, len(pages), e)
        if len(pages) == 1:
            self.events.fell_back("engine_error", 1)
            return self._second_run(pages, opts)
        # One page may have failed the call: each alone, and only those that fail again go
        # to the second engine (while the breaker stays closed).
        results: list[PageResult] = []
        for page in pages:
            try:
                [result] = self._guarded(engine, [page], opts)
            except Exception as e:
                if _not_a_failure(e):
                    raise
                reason = "breaker_open" if isinstance(e, BreakerOpen) else "engine_error"
                self.events.fell_back(reason, 1)
                [result] = self._second_run([page], opts)
            results.append(result)
        return results

    def _second_run(self, pages: Sequence[Page], opts: OCROptions) -> list[PageResult]:
        """The second engine's reading, PDF pages with a usable text layer read from it."""
        assert self.second is not None
        results: list[PageResult | None] = [page_from_text_layer(p, opts) for p in pages]
        todo = [n for n, r in enumerate(results) if r is None]
        if todo:
            for n, result in zip(
                todo, self.second.run([pages[n] for n in todo], opts), strict=True
            ):
                results[n] = result
        return [r for r in results if r is not None]

    def warmup(self) -> float:
        t0 = time.perf_counter()
        self.main.warmup()
        if self.candidate is not None:
            self.candidate.warmup()
        # Not the second engine: Tesseract runs a process per page, so nothing of a first run
        # stays warm, and finding it ran it already (--version, --list-langs). 0.24 s a start.
        return time.perf_counter() - t0

    @property
    def warmed(self) -> bool:
        return self.main.warmed

    @property
    def breaker_state(self) -> str:
        """``closed`` (PP-OCR reads), ``open`` (the second engine reads) or ``half-open``."""
        return self.breaker.state
