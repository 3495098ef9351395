from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from pathlib import Path

import ocrserve
from ocrserve import _version

ROOT = Path(__file__).resolve().parents[1]


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(ocrserve)
        if not name.startswith("_") and not isinstance(getattr(ocrserve, name), type(ocrserve))
    }
    assert set(ocrserve.__all__) - {"__version__"} == public


def test_the_version_is_written_once() -> None:
    """pyproject reads it from ocrserve/_version.py, which imports nothing (setuptools parses it
    without importing the package); the installed metadata says the same."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    version_attr = project["tool"]["setuptools"]["dynamic"]["version"]
    assert version_attr == {"attr": "ocrserve._version.__version__"}
    source = ROOT / "src" / "ocrserve" / "_version.py"
    module = ast.parse(source.read_text())
    assert not [node for node in module.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [p for p in source.parent.rglob("*.py") if "__version__ =" in p.read_text()] == [source]
    assert ocrserve.__version__ == _version.__version__
    installed = importlib.metadata.version("ocrserve")
    assert installed == ocrserve.__version__, "the installed metadata is stale: make install"
