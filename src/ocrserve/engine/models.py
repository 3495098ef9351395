"""Where the models are and whether they are the files we expect (int8 variants: quantize.py).

By default the models are the ONNX files that the ``rapidocr`` wheel ships in its package
folder (PP-OCRv6 small); ``OCRSERVE_MODEL_DIR`` points at another folder instead. That folder
describes its model sets in manifests, a list of ``{"task", "file", "sha256", "langs"}`` each:
``manifest.<tier>.json`` per tier (``OCRSERVE_MODEL_TIER``: ``small``, ``tiny``, ``medium``, any
name), and ``manifest.json`` as the ``small`` tier's. Nothing here ever downloads: a missing or
altered file is a :class:`~ocrserve.errors.ModelNotFoundError` naming the file, the folder and
the expected hash; a tier no manifest describes is one too, naming the manifests it looked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from ocrserve.config import DEFAULT_TIER
from ocrserve.errors import ModelError, ModelNotFoundError

Task = Literal["det", "cls", "rec"]
MANIFEST = "manifest.json"

#: What the PP-OCRv6 small recogniser reads (RapidOCR 3.10's model table for it).
PPOCRV6_LANGS: tuple[str, ...] = (
    "ch", "chinese_cht", "en", "japan", "af", "az", "bs", "ca", "cs", "cy", "da", "de", "es",
    "et", "eu", "fi", "fr", "ga", "gl", "hr", "hu", "id", "is", "it", "ku", "la", "lb", "lt",
    "lv", "mi", "ms", "mt", "nl", "no", "oc", "pl", "pt", "qu", "rm", "rs_latin", "sk", "sl",
    "sq", "sv", "sw", "tl", "tr", "uz", "vi",
)  # fmt: skip

#: Common spellings users type, mapped to the codes above.
LANG_ALIASES: dict[str, str] = {
    "zh": "ch", "zh_cn": "ch", "zh-cn": "ch", "chi_sim": "ch", "chinese": "ch",
    "zh_tw": "chinese_cht", "zh-tw": "chinese_cht", "ja": "japan", "jp": "japan",
    "eng": "en", "english": "en", "french": "fr", "german": "de",
    # Tesseract's pack names for PP-OCR's languages: PP-OCR reads them (Tesseract is its fallback).
    "chi_tra": "chinese_cht", "jpn": "japan", "fra": "fr", "deu": "de", "spa": "es",
    "ita": "it", "por": "pt", "nld": "nl", "vie": "vi", "tur": "tr", "pol": "pl",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelSpec:
    task: Task
    file: str
    sha256: str
    langs: tuple[str, ...] = ()


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "det",
        "PP-OCRv6_det_small.onnx",
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    ),
    ModelSpec(
        "cls",
        "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
    ModelSpec(
        "rec",
        "PP-OCRv6_rec_small.onnx",
        "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
        PPOCRV6_LANGS,
    ),
)


def normalize_lang(lang: str) -> str:
    key = lang.strip().lower()
    return LANG_ALIASES.get(key, key)


def default_model_dir() -> Path:
    spec = find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the rapidocr package, which ships the PP-OCR models, is not installed; "
            "install it or set OCRSERVE_MODEL_DIR",
            path=Path("rapidocr/models"),
            searched=Path("site-packages"),
            expected_sha256=None,
        )
    return Path(spec.origin).parent / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelSet:
    """The verified model files of one folder: one detector, one classifier, recognisers.

    >>> models = ModelSet.locate()            # doctest: +SKIP
    >>> models.rec_for("en").file
    'PP-OCRv6_rec_small.onnx'
    """

    folder: Path
    det: ModelSpec  # the detector of languages no other detector names
    cls: ModelSpec
    recs: tuple[ModelSpec, ...]
    #: Detectors made for some languages (a manifest's det entries with ``langs``).
    dets: tuple[ModelSpec, ...] = ()

    @classmethod
    def locate(
        cls, folder: Path | None = None, *, tier: str = DEFAULT_TIER, verify: bool = True
    ) -> ModelSet:
        folder = (folder or default_model_dir()).expanduser()
        specs = _tier_specs(folder, tier)
        by_task: dict[str, list[ModelSpec]] = {"det": [], "cls": [], "rec": []}
        for spec in specs:
            by_task[spec.task].append(spec)
        for task in ("det", "cls", "rec"):
            if not by_task[task]:
                raise ModelError(f"no {task} model described for {folder}")
        dets = by_task["det"]
        general = next((d for d in dets if not d.langs), dets[0])
        special = tuple(d for d in dets if d is not general)
        model_set = cls(folder, general, by_task["cls"][0], tuple(by_task["rec"]), special)
        if verify:
            for spec in model_set.specs:
                model_set.verify(spec)
        return model_set

    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        """Every model of the set, the general detector first."""
        return (self.det, *self.dets, self.cls, *self.recs)

    def path(self, spec: ModelSpec) -> Path:
        return self.folder / spec.file

    def verify(self, spec: ModelSpec) -> None:
        path = self.path(spec)
        if not path.is_file():
            raise ModelNotFoundError(
                f"{spec.task} model {spec.file} not found in {self.folder} "
                f"(expected a file with SHA-256 {spec.sha256})",
                path=path,
                searched=self.folder,
                expected_sha256=spec.sha256,
            )
        actual = sha256_of(path)
        if actual != spec.sha256:
            raise ModelNotFoundError(
                f"{spec.task} model {path} is corrupt or not the expected file: "
                f"SHA-256 {actual}, expected {spec.sha256}",
                path=path,
                searched=self.folder,
                expected_sha256=spec.sha256,
            )

    @property
    def langs(self) -> tuple[str, ...]:
        return tuple(sorted({lang for spec in self.recs for lang in spec.langs}))

    def rec_for(self, lang: str) -> ModelSpec | None:
        code = normalize_lang(lang)
        return next((spec for spec in self.recs if code in spec.langs), None)

    def det_for(self, lang: str) -> ModelSpec:
        """The detector made for ``lang`` where the set has one, else the general one."""
        code = normalize_lang(lang)
        return next((spec for spec in self.dets if code in spec.langs), self.det)


def manifest_name(tier: str) -> str:
    return f"manifest.{tier}.json"


def _tier_specs(folder: Path, tier: str) -> tuple[ModelSpec, ...]:
    """The model set of ``tier`` in ``folder``: its ``manifest.<tier>.json``; for the default
    tier also ``manifest.json``, or the built-in models where the folder describes none."""
    candidates = [folder / manifest_name(tier)]
    if tier == DEFAULT_TIER:
        candidates.append(folder / MANIFEST)
    for manifest in candidates:
        if manifest.is_file():
            return _read_manifest(manifest)
    if tier == DEFAULT_TIER:  # the wheel's folder, or one holding the built-in files
        return BUILTIN_MODELS
    raise ModelNotFoundError(
        f"no {tier!r} model set in {folder}: write {manifest_name(tier)} there (a list of "
        '{"task": "det"|"cls"|"rec", "file", "sha256", "langs"}) next to its ONNX files, e.g. '
        "PaddleX's PP-OCRv6 tiny models exported to ONNX; the built-in models are the "
        f"{DEFAULT_TIER!r} tier",
        path=folder / manifest_name(tier),
        searched=folder,
        expected_sha256=None,
    )


def _read_manifest(manifest: Path) -> tuple[ModelSpec, ...]:
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        return tuple(
            ModelSpec(
                task=item["task"],
                file=item["file"],
                sha256=item["sha256"].lower(),
                langs=tuple(item.get("langs", ())),
            )
            for item in raw
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"cannot read {manifest}: {e}") from e
