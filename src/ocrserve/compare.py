"""``ocrserve compare``: the stable and the candidate model sets over one folder, side by side.

Before a candidate takes a share of traffic (``OCRSERVE_CANDIDATE_SHARE``), a person reads
what it would change: per file, each set's seconds and the diff of their texts; then how many
files read the same, the median seconds of each and the texts' mean similarity
(difflib's ratio over characters: 1.0 is the same text).
"""

from __future__ import annotations

import difflib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ocrserve.config import Settings
from ocrserve.decode import SUPPORTED_FORMATS, decode_path
from ocrserve.engine.pipeline import Engine
from ocrserve.errors import OCRServeError
from ocrserve.types import OCROptions, PdfText


@dataclass(frozen=True, slots=True)
class Reading:
    text: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Compared:
    """One file read by both sets; ``error`` instead when it could not be read."""

    path: Path
    stable: Reading | None = None
    candidate: Reading | None = None
    error: str | None = None

    @property
    def same(self) -> bool:
        return (
            self.stable is not None
            and self.candidate is not None
            and (self.stable.text == self.candidate.text)
        )

    @property
    def similarity(self) -> float:
        if self.stable is None or self.candidate is None:
            return 0.0
        return difflib.SequenceMatcher(None, self.stable.text, self.candidate.text).ratio()

    def diff(self) -> list[str]:
        if self.stable is None or self.candidate is None:
            return []
        return list(
            difflib.unified_diff(
                self.stable.text.splitlines(),
                self.candidate.text.splitlines(),
                "stable",
                "candidate",
                lineterm="",
            )
        )


#: The file names a folder's documents have: the decoder's formats (it reads the bytes, not
#: the name; the name only picks what to read).
SUFFIXES = frozenset({*(f".{f}" for f in SUPPORTED_FORMATS), ".jpg", ".tif"})


def files_of(folder: Path) -> list[Path]:
    """The images and PDFs of ``folder`` (not its subfolders), by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def read_both(
    paths: Sequence[Path],
    stable: Engine,
    candidate: Engine,
    options: OCROptions,
    settings: Settings,
) -> list[Compared]:
    limits = settings.decode_limits()
    out = []
    for path in paths:
        try:
            doc = decode_path(path, limits)
            readings = []
            for engine in (stable, candidate):
                t0 = time.perf_counter()
                pages = engine.run(doc.pages, options)
                text = "\n\n".join(p.text for p in pages)
                readings.append(Reading(text, time.perf_counter() - t0))
            out.append(Compared(path, readings[0], readings[1]))
        except OCRServeError as e:
            out.append(Compared(path, error=f"[{e.code}] {e.message}"))
    return out


def compare_folder(
    folder: Path,
    settings: Settings,
    *,
    lang: str | None = None,
    pdf_text: PdfText = "ocr",
    echo: Callable[[str], None] = print,
) -> int:
    """Compare the sets over ``folder`` and print the report; returns how many files failed."""
    if settings.candidate_model_dir is None:
        raise ValueError("no candidate model folder to compare against")
    stable = Engine.from_settings(settings)
    candidate = Engine.from_settings(
        settings.model_copy(
            update={
                "model_dir": settings.candidate_model_dir,
                "model_tier": settings.candidate_model_tier,
            }
        )
    )
    options = replace(stable.defaults, pdf_text=pdf_text, lang=lang or stable.defaults.lang)
    stable.resolve(options)
    candidate.resolve(options)
    # Each set once on a synthetic page first: a first call's session start-up is not a file's.
    stable.warmup()
    candidate.warmup()
    paths = files_of(folder)
    echo(f"stable:    {stable.model_version}")
    echo(f"candidate: {candidate.model_version}")
    results = read_both(paths, stable, candidate, options, settings)
    for r in results:
        echo(report(r))
    echo(summary(results))
    return sum(1 for r in results if r.error is not None)


def report(r: Compared) -> str:
    if r.error is not None or r.stable is None or r.candidate is None:
        return f"== {r.path.name}: error: {r.error}"
    ratio = r.candidate.seconds / r.stable.seconds if r.stable.seconds else float("nan")
    head = (
        f"== {r.path.name}: stable {r.stable.seconds:.2f} s, candidate "
        f"{r.candidate.seconds:.2f} s ({ratio:.2f}x); "
    )
    if r.same:
        return head + "same text"
    return "\n".join([head + f"texts differ (similarity {r.similarity:.3f})", *r.diff()])


def summary(results: Sequence[Compared]) -> str:
    read = [r for r in results if r.stable is not None and r.candidate is not None]
    failed = len(results) - len(read)
    if not read:
        return f"-- {len(results)} files, none read by both sets ({failed} failed)"
    stable = statistics.median(r.stable.seconds for r in read if r.stable)
    candidate = statistics.median(r.candidate.seconds for r in read if r.candidate)
    same = sum(r.same for r in read)
    mean = statistics.fmean(r.similarity for r in read)
    return (
        f"-- {len(read)} files read by both ({failed} failed): {same} the same text, mean "
        f"similarity {mean:.3f}; median seconds stable {stable:.2f}, candidate {candidate:.2f} "
        f"({candidate / stable if stable else float('nan'):.2f}x)"
    )
