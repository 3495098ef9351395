from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ocrserve import Engine, ModelError, ModelNotFoundError, ModelSet
from ocrserve.engine.models import BUILTIN_MODELS, default_model_dir, sha256_of
from ocrserve.engine.quantize import ensure_int8


def copy_models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for spec in BUILTIN_MODELS:
        (folder / spec.file).symlink_to(default_model_dir() / spec.file)
    return folder


def test_the_wheels_models_are_found_and_verified() -> None:
    models = ModelSet.locate()
    assert models.folder == default_model_dir()
    assert models.det.file == "PP-OCRv6_det_small.onnx"
    assert models.rec_for("en") is not None and models.rec_for("zh") is not None
    assert models.rec_for("klingon") is None


def test_a_missing_model_names_the_file_the_folder_and_the_hash(tmp_path: Path) -> None:
    folder = copy_models(tmp_path)
    (folder / "PP-OCRv6_rec_small.onnx").unlink()
    with pytest.raises(ModelNotFoundError) as info:
        ModelSet.locate(folder)
    err = info.value
    assert err.path == folder / "PP-OCRv6_rec_small.onnx"
    assert err.searched == folder
    assert err.expected_sha256 is not None and err.expected_sha256 in str(err)
    assert "PP-OCRv6_rec_small.onnx" in str(err) and str(folder) in str(err)


def test_a_corrupt_model_is_refused_before_it_is_loaded(tmp_path: Path) -> None:
    folder = copy_models(tmp_path)
    target = folder / "PP-OCRv6_det_small.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.unlink()
    target.write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match="corrupt or not the expected file"):
        ModelSet.locate(folder)


def test_an_empty_folder_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found in"):
        ModelSet.locate(tmp_path)


def test_a_manifest_describes_other_models(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    manifest = []
    for spec in BUILTIN_MODELS:
        name = "my_" + spec.file
        shutil.copyfile(default_model_dir() / spec.file, folder / name)
        langs = ["xx"] if spec.task == "rec" else []
        manifest.append({"task": spec.task, "file": name, "sha256": spec.sha256, "langs": langs})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    engine = Engine(ModelSet.locate(folder))
    assert engine.langs == ("xx",)
    assert engine.models.rec_for("xx") is not None


def test_a_broken_manifest_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"task": ')
    with pytest.raises(ModelError, match=r"manifest\.json"):
        ModelSet.locate(tmp_path)


def test_the_model_dir_setting_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ocrserve import Settings

    monkeypatch.setenv("OCRSERVE_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        Engine.from_settings(Settings())
    assert info.value.searched == tmp_path


# --- model tiers ------------------------------------------------------------------------------

LONG_LINE = Path(__file__).parent / "fixtures" / "en_line_long_text.jpg"


def two_tiers(tmp_path: Path) -> Path:
    """A model folder with two real model sets: ``small`` (the built-in files, manifest.json)
    and ``fast`` (the same detector and classifier, the recogniser quantised to int8: other
    weights, another file and hash), each described by its own manifest."""
    folder = copy_models(tmp_path)
    small = [
        {"task": s.task, "file": s.file, "sha256": s.sha256, "langs": list(s.langs)}
        for s in BUILTIN_MODELS
    ]
    (folder / "manifest.json").write_text(json.dumps(small))
    rec = next(s for s in BUILTIN_MODELS if s.task == "rec")
    int8 = ensure_int8(default_model_dir() / rec.file, rec.sha256, tmp_path / "cache")
    shutil.copyfile(int8, folder / "fast_rec.onnx")
    fast = [dict(item) for item in small]
    fast[-1] |= {"file": "fast_rec.onnx", "sha256": sha256_of(folder / "fast_rec.onnx")}
    (folder / "manifest.fast.json").write_text(json.dumps(fast))
    return folder


def test_the_model_tier_setting_picks_its_manifests_set(tmp_path: Path) -> None:
    from ocrserve import Settings, decode_path

    folder = two_tiers(tmp_path)
    small = Engine.from_settings(Settings(model_dir=folder, data_dir=tmp_path))
    fast = Engine.from_settings(Settings(model_dir=folder, data_dir=tmp_path, model_tier="fast"))
    assert small.models.recs[0].file == "PP-OCRv6_rec_small.onnx"
    assert fast.models.recs[0].file == "fast_rec.onnx"
    assert "fast_rec@" in fast.model_version and fast.model_version != small.model_version
    page = decode_path(LONG_LINE).pages
    # Both sets really read: the same line, whichever weights (int8 is within a few characters).
    texts = [e.run(page)[0].text for e in (small, fast)]
    assert texts[0] == "采用高端宝石制作镜片，更有效保护眼睛，避免辐射"
    assert sum(a != b for a, b in zip(texts[0], texts[1], strict=False)) <= 2, texts


def test_a_tier_no_manifest_describes_is_refused_with_what_to_write(tmp_path: Path) -> None:
    from ocrserve import Settings

    folder = two_tiers(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        Engine.from_settings(Settings(model_dir=folder, data_dir=tmp_path, model_tier="tiny"))
    assert info.value.path == folder / "manifest.tiny.json"
    assert "no 'tiny' model set" in info.value.message
    with pytest.raises(ModelNotFoundError, match=r"manifest\.tiny\.json"):  # nor built in
        ModelSet.locate(tier="tiny")
    with pytest.raises(ValueError, match="model_tier"):
        Settings(model_tier="../etc")
