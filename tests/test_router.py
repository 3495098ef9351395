"""The engines behind one surface (engine/router.py): languages by engine, Tesseract as the
fallback when PP-OCR fails, its circuit breaker, and the rollout's split of requests.

Real engines on real images: PP-OCR on the repository's fixtures, Tesseract (Debian's) on a
line of Russian rendered with Debian's Noto Sans (no permissively licensed scan at hand).
PP-OCR's failures are made by replacing its ``run`` on one test's router: nothing else can
make a verified model fail on demand.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ocrserve import Engine, Settings
from ocrserve.api.metrics import Metrics
from ocrserve.decode import decode_path
from ocrserve.engine import Engines
from ocrserve.engine.models import BUILTIN_MODELS, ModelSet, default_model_dir
from ocrserve.engine.tesseract import TesseractEngine
from ocrserve.errors import CorruptFileError, LanguageNotInstalledError, ModelError, OptionError
from ocrserve.types import OCROptions, Page, PageResult

from .conftest import FIXTURES, cer

NOTO = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")
RUSSIAN = "Счёт № 123 от 01.02.2024"
ENGLISH = FIXTURES / "phototest.tif"  # Tesseract's own test page: both engines read it


@pytest.fixture(scope="module")
def tesseract() -> TesseractEngine:
    found = TesseractEngine.detect()
    assert found is not None, "tesseract is installed by `make system-deps`"
    return found


def engines(
    engine: Engine,
    tesseract: TesseractEngine,
    *,
    breaker_failures: int = 5,
    breaker_reset_s: float = 30.0,
) -> Engines:
    return Engines(engine, second=tesseract, events=Metrics(), breaker_failures=breaker_failures,
                   breaker_reset_s=breaker_reset_s)  # fmt: skip


def rendered(text: str, size: int = 40) -> np.ndarray:
    font = ImageFont.truetype(str(NOTO), size)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGB", (right - left + 60, bottom - top + 60), "white")
    ImageDraw.Draw(img).text((30 - left, 30 - top), text, font=font, fill="black")
    return np.asarray(img)[:, :, ::-1].copy()


def english_page() -> Page:
    [page] = decode_path(ENGLISH).pages
    return page


def counted(metrics: object, name: str, **labels: str) -> float:
    assert isinstance(metrics, Metrics)
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# --- languages -------------------------------------------------------------------------------


def test_a_language_ppocr_lacks_is_read_by_tesseract(
    engine: Engine, tesseract: TesseractEngine
) -> None:
    router = engines(engine, tesseract)
    assert router.engine_for("ru") == "tesseract"
    assert router.engine_for("en") == "ppocr"
    [result] = router.run([Page(rendered(RUSSIAN))], OCROptions(lang="ru"))
    assert result.engine == "tesseract"
    assert result.model == tesseract.model_version
    assert cer(RUSSIAN, result.text) < 0.05, result.text
    by_engine = router.langs_by_engine()
    assert {"ko", "ru", "ar"} <= set(by_engine["tesseract"])
    assert "en" in by_engine["ppocr"] and "en" not in by_engine["tesseract"]


def test_a_page_read_by_ppocr_names_its_model(engine: Engine, tesseract: TesseractEngine) -> None:
    router = engines(engine, tesseract)
    [result] = router.run([english_page()], OCROptions(lang="en"))
    assert result.engine == "ppocr"
    assert result.model == engine.model_version
    metrics = router.events
    assert counted(metrics, "ocrserve_pages_read_total", engine="ppocr",
                   model=engine.model_version, result="text") == 1  # fmt: skip


def test_a_language_no_engine_reads_lists_every_installed_one(
    engine: Engine, tesseract: TesseractEngine
) -> None:
    router = engines(engine, tesseract)
    with pytest.raises(LanguageNotInstalledError) as caught:
        router.resolve(OCROptions(lang="tlh"))  # Klingon: no model, no pack
    assert {"en", "ch", "ko", "ru", "ar"} <= set(caught.value.installed)


def test_without_tesseract_only_ppocr_languages_are_served(engine: Engine) -> None:
    router = Engines(engine)
    with pytest.raises(LanguageNotInstalledError) as caught:
        router.resolve(OCROptions(lang="ko"))
    assert "ko" not in caught.value.installed and "en" in caught.value.installed


# --- fallback and the breaker ----------------------------------------------------------------


class Failing:
    """PP-OCR's ``run``, raising on the pages in ``poison`` (every page when None) as a model
    failing at run time does; counts its calls."""

    def __init__(
        self, engine: Engine, poison: set[int] | None = None, error: Exception | None = None
    ) -> None:
        self.real = engine.run
        self.poison = poison
        self.error = error or ModelError("inference failed in PP-OCRv6_rec_small.onnx (test)")
        self.calls = 0

    def __call__(
        self, pages: Sequence[Page], options: OCROptions | None = None
    ) -> list[PageResult]:
        self.calls += 1
        if self.poison is None or any(p.index in self.poison for p in pages):
            raise self.error
        return self.real(pages, options)


def test_pages_ppocr_fails_on_are_read_by_tesseract(
    engine: Engine, tesseract: TesseractEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = engines(engine, tesseract, breaker_failures=5)
    monkeypatch.setattr(router.main, "run", Failing(engine))
    [result] = router.run([english_page()], OCROptions(lang="en"))
    assert result.engine == "tesseract"
    assert "quick brown dog" in result.text, result.text
    assert counted(router.events, "ocrserve_fallback_pages_total", reason="engine_error") == 1
    assert counted(router.events, "ocrserve_engine_errors_total", engine="ppocr",
                   model=engine.model_version) == 1  # fmt: skip


def test_only_the_page_that_fails_goes_to_the_fallback(
    engine: Engine, tesseract: TesseractEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = engines(engine, tesseract, breaker_failures=5)
    image = english_page().image
    pages = [Page(image, index=1), Page(image, index=2), Page(image, index=3)]
    monkeypatch.setattr(router.main, "run", Failing(engine, poison={2}))
    results = router.run(pages, OCROptions(lang="en"))
    assert [r.engine for r in results] == ["ppocr", "tesseract", "ppocr"]
    assert [r.index for r in results] == [1, 2, 3]


def test_the_breaker_opens_after_consecutive_failures(
    engine: Engine, tesseract: TesseractEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = engines(engine, tesseract, breaker_failures=2, breaker_reset_s=600)
    run = Failing(engine)
    monkeypatch.setattr(router.main, "run", run)
    page = english_page()
    for _ in range(2):
        assert router.run([page], OCROptions(lang="en"))[0].engine == "tesseract"
    assert router.breaker_state == "open"
    assert counted(router.events, "ocrserve_breaker_open") == 1
    calls = run.calls
    [result] = router.run([page], OCROptions(lang="en"))
    assert result.engine == "tesseract"
    assert run.calls == calls, "an open breaker sends pages to the fallback without PP-OCR"
    assert counted(router.events, "ocrserve_fallback_pages_total", reason="breaker_open") >= 1


def test_bad_input_is_not_an_engine_failure(
    engine: Engine, tesseract: TesseractEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = engines(engine, tesseract, breaker_failures=1)
    bad = CorruptFileError("page 0 cannot be decoded", reason="test")
    monkeypatch.setattr(router.main, "run", Failing(engine, error=bad))
    with pytest.raises(CorruptFileError):
        router.run([english_page()], OCROptions(lang="en"))
    assert router.breaker_state == "closed"


def test_no_fallback_for_a_language_tesseract_lacks(
    engine: Engine, tesseract: TesseractEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = _model_copy(tmp_path, "copy", rec_langs=["xx"])
    router = engines(Engine(ModelSet.locate(folder), defaults=OCROptions(lang="xx")), tesseract)
    monkeypatch.setattr(router.main, "run", Failing(router.main))
    with pytest.raises(ModelError):
        router.run([english_page()], OCROptions(lang="xx"))


# --- rollout ---------------------------------------------------------------------------------


def _model_copy(tmp_path: Path, prefix: str, rec_langs: list[str] | None = None) -> Path:
    """The shipped models under other file names: another model set, the same weights."""
    folder = tmp_path / prefix
    folder.mkdir()
    manifest = []
    for spec in BUILTIN_MODELS:
        name = f"{prefix}_{spec.file}"
        shutil.copyfile(default_model_dir() / spec.file, folder / name)
        langs = list(spec.langs) if rec_langs is None else rec_langs if spec.task == "rec" else []
        manifest.append({"task": spec.task, "file": name, "sha256": spec.sha256, "langs": langs})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    folder = _model_copy(tmp_path_factory.mktemp("models"), "candidate")
    return Engine.from_settings(Settings(model_dir=folder, intra_op_threads=2))


def test_the_candidate_reads_its_share_of_requests(engine: Engine, candidate: Engine) -> None:
    router = Engines(engine, candidate=candidate, share=0.05)
    picks = [router.choose(f"request-{n}".encode()) for n in range(2000)]
    share = picks.count("candidate") / len(picks)
    assert abs(share - 0.05) <= 0.02, share
    # The same request, retried, reads the same set.
    assert [router.choose(f"request-{n}".encode()) for n in range(200)] == picks[:200]


def test_a_header_forces_the_model_set(engine: Engine, candidate: Engine) -> None:
    router = Engines(engine, candidate=candidate, share=0.0)
    assert router.choose(b"any", "candidate") == "candidate"
    assert router.choose(b"any", "stable") == "stable"
    with pytest.raises(OptionError):
        router.choose(b"any", "newest")
    with pytest.raises(OptionError, match="no candidate"):
        Engines(engine).choose(b"any", "candidate")


def test_each_set_names_its_version(engine: Engine, candidate: Engine) -> None:
    router = Engines(engine, candidate=candidate, share=0.5)
    page = english_page()
    [stable] = router.run([page], OCROptions(lang="en", models="stable"))
    [tried] = router.run([page], OCROptions(lang="en", models="candidate"))
    assert stable.model == engine.model_version != tried.model == candidate.model_version
    assert tried.text == stable.text  # the same weights under other names


# --- several recognisers, warm ---------------------------------------------------------------


def test_other_languages_models_load_once_and_give_way_past_the_budget(tmp_path: Path) -> None:
    """Two recognisers (a copy of the shipped one for "xx") and a detector for "xx": the
    budget holds one extra model, so reading "xx" then "yy" lets the first go."""
    folder = tmp_path / "multi"
    folder.mkdir()
    manifest = []
    for spec in BUILTIN_MODELS:
        shutil.copyfile(default_model_dir() / spec.file, folder / spec.file)
        manifest.append({"task": spec.task, "file": spec.file, "sha256": spec.sha256,
                         "langs": ["en"] if spec.task == "rec" else []})  # fmt: skip
        if spec.task == "rec":
            for code in ("xx", "yy"):
                shutil.copyfile(default_model_dir() / spec.file, folder / f"{code}_{spec.file}")
                manifest.append({"task": "rec", "file": f"{code}_{spec.file}",
                                 "sha256": spec.sha256, "langs": [code]})  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rec_bytes = (folder / "xx_PP-OCRv6_rec_small.onnx").stat().st_size
    engine = Engine(ModelSet.locate(folder), defaults=OCROptions(lang="en"),
                    model_memory=rec_bytes + 1)  # fmt: skip
    page = english_page()
    [en] = engine.run([page], OCROptions(lang="en"))
    assert engine.warm.loads == 0  # the default language's models are loaded with the engine
    [xx] = engine.run([page], OCROptions(lang="xx"))
    [xx_again] = engine.run([page], OCROptions(lang="xx"))
    assert engine.warm.loads == 1 and engine.warm.loaded == ("xx_PP-OCRv6_rec_small.onnx@fp32",)
    [yy] = engine.run([page], OCROptions(lang="yy"))
    assert engine.warm.loads == 2 and engine.warm.evictions == 1
    assert engine.warm.loaded == ("yy_PP-OCRv6_rec_small.onnx@fp32",)
    assert en.text == xx.text == xx_again.text == yy.text


def test_a_broken_tesseract_leaves_ppocr_serving(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = tmp_path / "bin" / "tesseract"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    router = Engines.from_settings(Settings(), main=engine)
    assert router.second is None
    assert "tesseract cannot be used" in caplog.text
    [result] = router.run([english_page()], OCROptions(lang="en"))
    assert result.engine == "ppocr"
