"""ocrserve: self-hosted OCR with PaddleOCR's PP-OCR models on ONNX Runtime.

>>> from ocrserve import Engine, Settings, decode_path
>>> engine = Engine.from_settings(Settings())                 # doctest: +SKIP
>>> print(engine.run(decode_path("invoice.pdf").pages)[0].text)  # doctest: +SKIP
"""

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

__version__ = "0.1.0"

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
