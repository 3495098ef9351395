"""Where the models are, whether they are the files we expect, and their int8 variants.

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
import logging
import os
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from ocrserve.config import DEFAULT_TIER
from ocrserve.errors import ModelError, ModelNotFoundError

log = logging.getLogger(__name__)

Task = Literal["det", "cls", "rec"]
MANIFEST = "manifest.json"
INT8_SUFFIX = ".int8.onnx"

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
    det: ModelSpec
    cls: ModelSpec
    recs: tuple[ModelSpec, ...]

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
        model_set = cls(folder, by_task["det"][0], by_task["cls"][0], tuple(by_task["rec"]))
        if verify:
            for spec in (model_set.det, model_set.cls, *model_set.recs):
                model_set.verify(spec)
        return model_set

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


def int8_path(source: Path, cache_dir: Path) -> Path:
    """The int8 variant of ``source``: next to it when that folder is writable, else in cache."""
    name = source.name.removesuffix(".onnx") + INT8_SUFFIX
    if os.access(source.parent, os.W_OK):
        return source.parent / name
    return cache_dir / name


def ensure_int8(source: Path, source_sha256: str, cache_dir: Path) -> Path:
    """Quantise ``source`` once (dynamic, MatMul only) and return the cached int8 model.

    Only MatMul is quantised: on this model family that measured 1.2-1.3x faster recognition
    with 0.1-0.2% of characters changed, while quantising every op was slower (the int8
    convolutions have no fast kernels here) and changed 5% of characters. A sidecar file holds
    the source's hash, so a new source model or a half-written cache is rebuilt, never used.
    """
    target = int8_path(source, cache_dir)
    stamp = target.with_suffix(".sha256")
    if target.is_file() and stamp.is_file():
        src_hash, _, out_hash = stamp.read_text().partition(" ")
        if src_hash == source_sha256 and out_hash.strip() == sha256_of(target):
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("quantising %s to int8 (once; cached at %s)", source.name, target)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Write to a temporary name and rename: a crash mid-write or two processes quantising at
    # once can never leave a truncated model under the real name.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        quantize_dynamic(source, tmp, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
        out_hash = sha256_of(tmp)
        tmp.replace(target)
        stamp.write_text(f"{source_sha256} {out_hash}\n")
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"int8 quantisation of {source} failed: {e}") from e
    return target
