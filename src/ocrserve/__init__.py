"""ocrserve: self-hosted OCR with PaddleOCR's PP-OCR models on ONNX Runtime.

>>> from ocrserve import Engine, Settings, decode_path
>>> engine = Engine.from_settings(Settings())                 # doctest: +SKIP
>>> print(engine.run(decode_path("invoice.pdf").pages)[0].text)  # doctest: +SKIP

Only ``__version__`` is imported with the package; every other name here loads its module on
first use (PEP 562). So ``import ocrserve.client`` and ``import ocrserve.webhooks`` (all a
webhook receiver needs) never import onnxruntime, OpenCV or pypdfium2, and a command that runs
no engine starts quickly (tests/test_startup.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ocrserve._version import __version__

if TYPE_CHECKING:
    from ocrserve.config import Settings
    from ocrserve.decode import DecodeLimits, decode_bytes, decode_path
    from ocrserve.engine import Engine, ModelSet, RuntimeOptions
    from ocrserve.errors import (
        AspectRatioError,
        AuthError,
        ConfigError,
        CorruptFileError,
        DeadlineExceededError,
        EngineError,
        FileTooLargeError,
        InputError,
        InvalidURLError,
        LanguageNotInstalledError,
        LimitExceededError,
        ModelError,
        ModelNotFoundError,
        OCRServeError,
        OptionError,
        PixelBudgetError,
        QueueFullError,
        RateLimitedError,
        ServiceError,
        SideTooLongError,
        StorageUnavailableError,
        StoreError,
        TooManyFilesError,
        TooManyPagesError,
        TooManyPixelsError,
        UnreadableFileError,
        UnsupportedFormatError,
        UnsupportedMediaTypeError,
        URLError,
        URLFetchError,
        URLNotAllowedError,
    )
    from ocrserve.types import Document, Line, OCROptions, Page, PageResult, Timings

#: Each public name and the module that defines it.
_LAZY: dict[str, str] = {
    "AspectRatioError": "ocrserve.errors",
    "AuthError": "ocrserve.errors",
    "ConfigError": "ocrserve.errors",
    "CorruptFileError": "ocrserve.errors",
    "DeadlineExceededError": "ocrserve.errors",
    "DecodeLimits": "ocrserve.decode",
    "Document": "ocrserve.types",
    "Engine": "ocrserve.engine",
    "EngineError": "ocrserve.errors",
    "FileTooLargeError": "ocrserve.errors",
    "InputError": "ocrserve.errors",
    "InvalidURLError": "ocrserve.errors",
    "LanguageNotInstalledError": "ocrserve.errors",
    "LimitExceededError": "ocrserve.errors",
    "Line": "ocrserve.types",
    "ModelError": "ocrserve.errors",
    "ModelNotFoundError": "ocrserve.errors",
    "ModelSet": "ocrserve.engine",
    "OCROptions": "ocrserve.types",
    "OCRServeError": "ocrserve.errors",
    "OptionError": "ocrserve.errors",
    "Page": "ocrserve.types",
    "PageResult": "ocrserve.types",
    "PixelBudgetError": "ocrserve.errors",
    "QueueFullError": "ocrserve.errors",
    "RateLimitedError": "ocrserve.errors",
    "RuntimeOptions": "ocrserve.engine",
    "ServiceError": "ocrserve.errors",
    "Settings": "ocrserve.config",
    "SideTooLongError": "ocrserve.errors",
    "StorageUnavailableError": "ocrserve.errors",
    "StoreError": "ocrserve.errors",
    "Timings": "ocrserve.types",
    "TooManyFilesError": "ocrserve.errors",
    "TooManyPagesError": "ocrserve.errors",
    "TooManyPixelsError": "ocrserve.errors",
    "URLError": "ocrserve.errors",
    "URLFetchError": "ocrserve.errors",
    "URLNotAllowedError": "ocrserve.errors",
    "UnreadableFileError": "ocrserve.errors",
    "UnsupportedFormatError": "ocrserve.errors",
    "UnsupportedMediaTypeError": "ocrserve.errors",
    "decode_bytes": "ocrserve.decode",
    "decode_path": "ocrserve.decode",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ocrserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute: __getattr__ is not asked again
    return value


def __dir__() -> list[str]:
    # The public names, loaded or not, and the module's own dunders; not the helpers above.
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


__all__ = [
    "AspectRatioError",
    "AuthError",
    "ConfigError",
    "CorruptFileError",
    "DeadlineExceededError",
    "DecodeLimits",
    "Document",
    "Engine",
    "EngineError",
    "FileTooLargeError",
    "InputError",
    "InvalidURLError",
    "LanguageNotInstalledError",
    "LimitExceededError",
    "Line",
    "ModelError",
    "ModelNotFoundError",
    "ModelSet",
    "OCROptions",
    "OCRServeError",
    "OptionError",
    "Page",
    "PageResult",
    "PixelBudgetError",
    "QueueFullError",
    "RateLimitedError",
    "RuntimeOptions",
    "ServiceError",
    "Settings",
    "SideTooLongError",
    "StorageUnavailableError",
    "StoreError",
    "Timings",
    "TooManyFilesError",
    "TooManyPagesError",
    "TooManyPixelsError",
    "URLError",
    "URLFetchError",
    "URLNotAllowedError",
    "UnreadableFileError",
    "UnsupportedFormatError",
    "UnsupportedMediaTypeError",
    "__version__",
    "decode_bytes",
    "decode_path",
]
