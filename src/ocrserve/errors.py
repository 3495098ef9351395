"""The whole exception tree of ocrserve.

Every error carries what a user needs to act on it, and a stable machine-readable ``code``
that the HTTP layer maps to a status in one place::

    OCRServeError                      code
    ├── InputError                     (bad input: the caller can fix it)
    │   ├── UnsupportedFormatError     unsupported_format   .detected
    │   ├── UnsupportedMediaTypeError  unsupported_media_type  (the request body's Content-Type)
    │   ├── NotAcceptableError     not_acceptable       .offered (no format the Accept header takes)
    │   ├── CorruptFileError           corrupt_file         .reason
    │   ├── UnreadableFileError        unreadable_file      .path (a local file cannot be read)
    │   ├── JSONTooDeepError           json_too_deep        .limit (nesting, before parsing)
    │   └── LimitExceededError         limit_exceeded       .limit_name .limit .value
    │       ├── FileTooLargeError      file_too_large       (bytes)
    │       ├── TooManyPixelsError     too_many_pixels      (pixels per page; decompression bombs)
    │       ├── SideTooLongError       side_too_long        (pixels on a page's longer side)
    │       ├── AspectRatioError       aspect_ratio_too_large  (a page's long side / short side)
    │       ├── PixelBudgetError       pixel_budget_exceeded   (pixels of a request's pages)
    │       ├── TooManyPagesError      too_many_pages       (pages, when truncation is refused)
    │       ├── TooManyFilesError      too_many_files       (files in one batch request)
    │       ├── JSONTooLargeError      json_too_large       (bytes of a JSON body)
    │       ├── JSONTooComplexError    json_too_complex     (tokens of a JSON body: values...)
    │       └── MetadataTooLargeError  metadata_too_large   (bytes of a task's metadata)
    ├── URLError                       url_error            .url (an image_url or callback_url)
    │   ├── InvalidURLError            invalid_url          (port, host, label, IDNA: unusable)
    │   ├── URLNotAllowedError         url_not_allowed      (scheme, or a non-public address)
    │   └── URLFetchError              url_fetch_failed     .status (timeout, refused, non-2xx)
    ├── OptionError                    invalid_option       .option .value .allowed
    │   └── LanguageNotInstalledError  language_not_installed  .installed
    ├── ModelError                     model_error          (unusable model, runtime failure)
    │   └── ModelNotFoundError         model_not_found      .path .searched .expected_sha256
    ├── EngineError                    engine_error         (an internal invariant broke: a bug)
    ├── StoreError                     store_error          .url (the task database is unusable)
    ├── ConfigError                    config_error         .setting (a setting's value is unusable)
    └── ServiceError                   (the service, not the input)
        ├── QueueFullError             queue_full           .retry_after
        │   └── ShuttingDownError      shutting_down        (draining after SIGTERM)
        ├── DeadlineExceededError      deadline_exceeded    .timeout
        ├── StorageUnavailableError    storage_unavailable  .retry_after (disk full, read-only)
        ├── RateLimitedError           rate_limited         .retry_after
        ├── AuthError                  unauthorized
        └── NotImplementedInProfileError  not_implemented  .profile (async routes, serverless)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class OCRServeError(Exception):
    """Base class of every error ocrserve raises on purpose."""

    code = "ocrserve_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(OCRServeError):
    """The input document cannot be processed as given."""

    code = "invalid_input"


class UnsupportedFormatError(InputError):
    """The bytes are not one of the formats we decode."""

    code = "unsupported_format"

    def __init__(self, message: str, *, detected: str | None = None) -> None:
        super().__init__(message)
        self.detected = detected


class UnsupportedMediaTypeError(InputError):
    """The request body is not of a type the route reads (JSON or multipart form data)."""

    code = "unsupported_media_type"


class NotAcceptableError(InputError):
    """The Accept header takes none of the formats the route can answer in."""

    code = "not_acceptable"

    def __init__(self, message: str, *, offered: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.offered = tuple(offered)


class CorruptFileError(InputError):
    """The format was recognised but the file cannot be decoded."""

    code = "corrupt_file"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class UnreadableFileError(InputError):
    """A local file is missing or cannot be read."""

    code = "unreadable_file"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class LimitExceededError(InputError):
    """A configured limit was exceeded; says which limit, its value and what came."""

    code = "limit_exceeded"
    limit_name = "limit"
    unit = ""

    def __init__(self, *, limit: int, value: int, page: int | None = None) -> None:
        where = f" on page {page}" if page is not None else ""
        super().__init__(
            f"{self.limit_name} limit exceeded{where}: got {value:,} {self.unit}, "
            f"the limit is {limit:,} {self.unit}".rstrip()
        )
        self.limit = limit
        self.value = value
        self.page = page


class FileTooLargeError(LimitExceededError):
    code = "file_too_large"
    limit_name = "file size"
    unit = "bytes"


class TooManyPixelsError(LimitExceededError):
    code = "too_many_pixels"
    limit_name = "pixel count"
    unit = "pixels"


class SideTooLongError(LimitExceededError):
    """A page longer on one side than the limit: a strip can pass the pixel limit."""

    code = "side_too_long"
    limit_name = "page side"
    unit = "pixels"


class AspectRatioError(LimitExceededError):
    """A page far longer than it is wide, or wider than long: ``value`` is its long side over
    its short side, rounded up. A 1-pixel strip passes every other page limit, and text on
    it would be scaled below what the detector can find."""

    code = "aspect_ratio_too_large"
    limit_name = "aspect ratio"

    def __init__(self, *, limit: int, width: int, height: int, page: int | None = None) -> None:
        ratio = -(-max(width, height) // max(min(width, height), 1))
        where = f"page {page}" if page is not None else "the image"
        InputError.__init__(
            self,
            f"aspect ratio limit exceeded: {where} is {width}x{height} pixels, its long side "
            f"{ratio:,} times its short side; the limit is {limit:,}",
        )
        self.limit, self.value, self.page = limit, ratio, page


class PixelBudgetError(LimitExceededError):
    """The pages one request would read hold more pixels than a request may decode: refused
    from the files' headers, before any page is decoded."""

    code = "pixel_budget_exceeded"
    limit_name = "pixels per request"
    unit = "pixels"

    def __init__(self, *, limit: int, value: int, pages: int) -> None:
        InputError.__init__(
            self,
            f"pixels per request limit exceeded: {pages:,} pages of {value:,} pixels in all, "
            f"the limit is {limit:,} pixels; send fewer pages (max_pages) or smaller ones",
        )
        self.limit, self.value, self.page = limit, value, None
        self.pages = pages


class TooManyFilesError(LimitExceededError):
    code = "too_many_files"
    limit_name = "files per request"
    unit = "files"


class TooManyPagesError(LimitExceededError):
    code = "too_many_pages"
    limit_name = "page count"
    unit = "pages"


class JSONTooDeepError(InputError):
    """JSON nested deeper than the limit: refused before parsing (parsers recurse)."""

    code = "json_too_deep"

    def __init__(self, *, limit: int, what: str = "the JSON body") -> None:
        super().__init__(f"{what} is nested more than {limit} levels deep (arrays and objects)")
        self.limit = limit


class JSONTooLargeError(LimitExceededError):
    code = "json_too_large"
    limit_name = "JSON body size"
    unit = "bytes"


class JSONTooComplexError(LimitExceededError):
    """More brackets, separators and strings than a JSON body may have; only a string may be
    long. Counting stops at the limit, so ``value`` is the limit plus one."""

    code = "json_too_complex"

    def __init__(self, *, limit: int, what: str = "the JSON body") -> None:
        InputError.__init__(
            self,
            f"{what} has more than {limit:,} values, keys and separators; only a string "
            "(image_base64) may be long",
        )
        self.limit, self.value, self.page = limit, limit + 1, None


class MetadataTooLargeError(LimitExceededError):
    code = "metadata_too_large"
    limit_name = "metadata size (compact JSON)"
    unit = "bytes"


class OptionError(OCRServeError):
    """An option has a value we do not accept."""

    code = "invalid_option"

    def __init__(
        self, message: str, *, option: str, value: object, allowed: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.option = option
        self.value = value
        self.allowed = tuple(allowed)


class LanguageNotInstalledError(OptionError):
    """No installed recognition model reads the requested language."""

    code = "language_not_installed"

    def __init__(self, lang: str, *, installed: Sequence[str]) -> None:
        super().__init__(
            f"no installed recognition model reads language {lang!r}; "
            f"installed: {', '.join(sorted(installed))}",
            option="lang",
            value=lang,
            allowed=sorted(installed),
        )
        self.installed = tuple(sorted(installed))


class ModelError(OCRServeError):
    """A model could not be loaded or the runtime failed while running it."""

    code = "model_error"


class ModelNotFoundError(ModelError):
    """A model file is missing or is not the file we expect (wrong SHA-256)."""

    code = "model_not_found"

    def __init__(
        self, message: str, *, path: Path, searched: Path, expected_sha256: str | None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.searched = searched
        self.expected_sha256 = expected_sha256


class EngineError(OCRServeError):
    """An internal invariant of the engine broke (a bug, never bad input)."""

    code = "engine_error"


class URLError(InputError):
    """An ``image_url`` or ``callback_url`` could not be used; ``.url`` as it may be shown
    (:func:`ocrserve.urls.redact_url`)."""

    code = "url_error"

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class InvalidURLError(URLError):
    """The URL cannot be used as written: a port out of range, a bad host name or label,
    unbalanced brackets, a name IDNA refuses."""

    code = "invalid_url"


class URLNotAllowedError(URLError):
    """The URL's scheme or address is refused (SSRF protection)."""

    code = "url_not_allowed"


class URLFetchError(URLError):
    """Fetching the URL failed: timeout, connection error or a non-2xx answer."""

    code = "url_fetch_failed"

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message, url=url)
        self.status = status


class StoreError(OCRServeError):
    """The task database cannot be used (unreachable, or made by another version)."""

    code = "store_error"

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class ConfigError(OCRServeError):
    """A setting's value cannot be used; ``.setting`` names it. Raised at start where the
    value is read (the environment's values are checked when Settings is built)."""

    code = "config_error"

    def __init__(self, message: str, *, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class ServiceError(OCRServeError):
    """The service cannot take or finish the work now; the input may be fine."""

    code = "service_error"


class QueueFullError(ServiceError):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDownError(QueueFullError):
    """The server is draining after SIGTERM: it takes no new work, and gave up on this."""

    code = "shutting_down"


class DeadlineExceededError(ServiceError):
    code = "deadline_exceeded"

    def __init__(self, message: str, *, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class StorageUnavailableError(ServiceError):
    """The task database cannot take a write now (disk full, read-only, unreachable); the
    request was not accepted, and may be sent again later."""

    code = "storage_unavailable"

    def __init__(self, message: str, *, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(ServiceError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(ServiceError):
    code = "unauthorized"


class NotImplementedInProfileError(ServiceError):
    """This deployment's profile does not serve the route: the async task routes under
    ``OCRSERVE_PROFILE=serverless``, which keeps no task store and runs no workers."""

    code = "not_implemented"

    def __init__(self, message: str, *, profile: str) -> None:
        super().__init__(message)
        self.profile = profile
