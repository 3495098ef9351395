"""One :class:`Settings` object, read from ``OCRSERVE_*`` environment variables once at start.

Nothing else in the package reads the environment: the CLI builds a Settings and passes the
parts each layer needs (plain option objects) down through constructors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ocrserve.errors import ConfigError
from ocrserve.types import Precision
from ocrserve.webhooks import generate_secret, parse_secret

if TYPE_CHECKING:
    from ocrserve.decode import DecodeLimits

log = logging.getLogger(__name__)

#: The one tenant when API keys are off, and the owner of tasks made before there were tenants.
#: The model tier of the built-in models (the rapidocr wheel ships PP-OCRv6 small).
DEFAULT_TIER = "small"
DEFAULT_TENANT = "default"
#: A key's name is its tenant id: it goes into logs, the task table and cache keys.
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _named_keys(value: object) -> object:
    """``OCRSERVE_API_KEYS`` as ``{name: key}``: a JSON object as it is, a list named ``key-1``,
    ``key-2``... in order. Messages name keys by their name, never print one."""
    if isinstance(value, str | bytes):
        try:
            # object_pairs_hook: a name given twice would otherwise silently keep the last key.
            value = json.loads(value, object_pairs_hook=_unique_names)
        except json.JSONDecodeError as e:
            raise ValueError(
                'must be JSON: a list of keys, or an object {"name": "key", ...}'
            ) from e
    if isinstance(value, list | tuple):
        value = {f"key-{n}": key for n, key in enumerate(value, 1)}
    if not isinstance(value, dict):
        raise ValueError('must be a list of keys, or an object {"name": "key", ...}')
    seen: dict[object, str] = {}
    for name, key in value.items():
        if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
            raise ValueError(
                f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                "(it is the tenant id in logs and the task table)"
            )
        if not isinstance(key, str) or not key or key != key.strip():
            raise ValueError(
                f"the key named {name!r} must be a non-empty string, no spaces around it"
            )
        if key in seen:  # which tenant would it be?
            raise ValueError(f"the keys named {seen[key]!r} and {name!r} are the same key")
        seen[key] = name
    return value


def _unique_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    names = [name for name, _ in pairs]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"key names must be unique: {', '.join(map(repr, dupes))} given twice")
    return dict(pairs)


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "ocrserve"


#: ``OCRSERVE_PROFILE=serverless``: what changes when nothing is set otherwise. A function
#: instance (AWS Lambda, Alibaba Function Compute) is frozen between requests and may be gone
#: at any time, so it runs no task store and no background workers (the async routes answer
#: 501); only /tmp is writable there; and each request must finish inside the function's
#: timeout (30 s): at ~1 page/s on 1 vCPU at 200 dpi, 5 pages and a 25 s deadline fit.
SERVERLESS_DEFAULTS: dict[str, object] = {
    "data_dir": Path("/tmp/ocrserve"),  # the one writable place in a function
    "max_pages": 5,
    "request_timeout_s": 25.0,
}


def _create_secret_file(path: Path) -> None:
    """Write a new secret to ``path`` unless it exists, in one step: a process starting at the
    same time (a server and a worker) never reads a half-written, empty file."""
    private_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(generate_secret())
        os.link(tmp, path)  # fails if it exists: then the other process's secret is the one
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def private_folder(path: Path) -> None:
    """Make ``path`` (and its parents) and keep it its owner's alone, 0700 whatever the umask:
    the data folder holds the task database (results, metadata, callback URLs) and the
    webhook secret. One left open to others (an earlier version made it 0755) is tightened."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode == 0o700:
        return
    try:
        os.chmod(path, 0o700)
    except OSError as e:  # not its owner: say so, and go on (the files in it are 0600)
        log.warning("cannot make the data folder %s private (mode %o): %s", path, mode, e)
        return
    if mode & 0o077:
        log.warning("the data folder %s was open to others (mode %o); it is now 0700", path, mode)


def _private_database(path: Path) -> Path:
    """The SQLite task database, made (empty: SQLite takes that as a new database) or tightened
    to 0600 before SQLite opens it. SQLite gives the -wal and -shm files it makes the database
    file's mode, so those are 0600 too; ones an earlier version left are tightened here."""
    private_folder(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        file = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                os.chmod(file, 0o600)
    return path


def _address_list(value: object) -> object:
    """``OCRSERVE_TRUSTED_PROXIES`` as a JSON list, or as plain comma-separated text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of ocrserve. ``Settings()`` reads the environment; keywords override it.

    >>> s = Settings(precision="int8", intra_op_threads=1)
    >>> s.precision
    'int8'
    """

    # hide_input_in_errors: values include secrets (API keys, the webhook secret, database
    # passwords), and a validation error is printed; it names the setting and what it expects.
    model_config = SettingsConfigDict(
        env_prefix="OCRSERVE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    #: ``server`` (a long-running process: async tasks, workers, a task store) or
    #: ``serverless`` (one function instance per request stream: ``/ocr`` and ``/ocr/batch``
    #: only, a data folder under /tmp, a page cap and deadline that fit a 30 s function
    #: timeout: :data:`SERVERLESS_DEFAULTS`, each still settable).
    profile: Literal["server", "serverless"] = "server"

    # Models and runtime
    model_dir: Path | None = Field(
        default=None, description="Folder of ONNX models; default: the rapidocr wheel's models."
    )
    model_tier: str = Field(
        default=DEFAULT_TIER,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="Which model set of OCRSERVE_MODEL_DIR: its manifest.<tier>.json (small: "
        "also manifest.json, or the rapidocr wheel's built-in PP-OCRv6 small models).",
    )
    #: Models beyond the default language's (other languages' recognisers and detectors) stay
    #: loaded while their files fit in this many MB; past it the least recently used goes.
    model_memory_mb: int = Field(default=512, ge=0)
    #: Model rollout: a second model set (a folder like OCRSERVE_MODEL_DIR) that reads this
    #: share of requests, chosen by a stable hash of the request, or forced by a header.
    candidate_model_dir: Path | None = None
    candidate_model_tier: str = Field(default=DEFAULT_TIER, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    candidate_share: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Tesseract, the second engine: the languages PP-OCR has no model for, and the fallback
    #: when PP-OCR fails on a page. ``off``: PP-OCR alone.
    second_engine: Literal["tesseract", "off"] = "tesseract"
    #: After this many consecutive PP-OCR failures, pages go straight to the fallback engine
    #: for ``breaker_reset_s``, then one call tries PP-OCR again.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0.0)
    data_dir: Path = Field(default_factory=_default_data_dir)
    precision: Precision = "fp32"
    lang: str = "ch"
    use_cls: bool = True
    intra_op_threads: int = Field(
        default=0, ge=0, description="Threads per onnxruntime session; 0 = all cores."
    )
    providers: tuple[str, ...] = Field(
        default=(),
        description="onnxruntime execution providers in order of preference; empty = CUDA "
        "when onnxruntime has it, else CPU.",
    )

    # Detection
    det_limit_side: int = Field(default=736, ge=32)
    det_max_side: int = Field(default=2400, ge=64)
    det_max_upscale: float = Field(default=2.0, ge=1.0)
    det_thresh: float = Field(default=0.3, gt=0.0, lt=1.0)
    det_box_thresh: float = Field(default=0.5, gt=0.0, lt=1.0)
    det_unclip_ratio: float = Field(default=1.6, gt=0.0)
    #: The detector's first, cheap pass on large pages (long side, px; 0: off) and the height
    #: of the smallest lines it must see to be the answer (DetOptions.probe_side, text_height).
    det_probe_side: int = Field(default=1024, ge=0)
    det_text_height: float = Field(default=12.0, gt=0.0)

    # Classification and recognition
    cls_batch_size: int = Field(default=32, ge=1)
    rec_batch_size: int = Field(default=16, ge=1)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)

    # Decoding limits
    max_file_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1, description="Per page.")
    #: Either side of a page. The detector scales the long side to det_max_side (2400): past
    #: 16384 text must be over ~70 px tall to survive (the eval's tallest page is 9300 px).
    max_side: int = Field(default=16_384, ge=1, description="Pixels on either side of a page.")
    #: A page's long side over its short side. Past 100:1 the short side of a page scaled to
    #: 2400 px falls under 24 px: no text to find; a 1-pixel strip is refused from its header.
    max_aspect: int = Field(default=100, ge=1)
    #: Pixels of all the pages one request reads (every file of a batch): 100 pages (the page
    #: limit) of A4 at 200 dpi are 387 M, of US Legal 476 M; 12 pages at the per-page limit.
    max_request_pixels: int = Field(default=500_000_000, ge=1)
    #: Pixels of the pages held at once in this process, across requests (each inference lane
    #: holds one page at a time): one page at the per-page limit, or 4 lanes of 12 MP photos;
    #: two pages at the limit at once measured +1.2 GB against +0.6 GB for one. A page larger
    #: than the whole budget still runs, alone.
    max_pixels_in_flight: int = Field(default=60_000_000, ge=1)
    max_pages: int = Field(default=100, ge=1)
    pdf_dpi: int = Field(default=200, ge=36, le=600)

    # HTTP service
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: Inference lanes: threads that each hand batches to the engine. 0 = one single-thread
    #: lane per core up to 4 on CPU (two single-thread lanes measured 2.1 images/s against
    #: 1.5 for one two-thread lane on 2 cores; more lanes cost memory), one lane on a GPU.
    lanes: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=8, ge=1, description="Pages per engine call.")
    max_wait_ms: float = Field(default=5.0, ge=0.0)
    queue_max_pages: int = Field(default=256, ge=1)
    request_timeout_s: float = Field(default=120.0, gt=0.0)
    batching: bool = True
    max_batch_files: int = Field(default=64, ge=1)
    #: A whole request body (a batch of files, or base64 in JSON); each file also has
    #: max_file_bytes.
    max_request_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    #: Client API keys by name (a JSON object; a JSON list is named key-1, key-2...). The name
    #: is the key's tenant: its tasks, idempotency keys and cached results are its own.
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: The key of /admin/* (every tenant's dead letters); none: those routes are off (404).
    admin_key: str | None = None
    rate_limit_rps: float = Field(default=0.0, ge=0.0, description="Per key; 0 = no limit.")
    rate_limit_burst: int = Field(default=20, ge=1)
    cache_max_entries: int = Field(default=1024, ge=0, description="0 = no cache.")
    cache_ttl_s: int = Field(default=24 * 3600, ge=1)
    redis_url: str | None = None
    allow_private_urls: bool = False
    url_timeout_s: float = Field(default=15.0, gt=0.0)
    #: Proxies (addresses or CIDRs; a JSON list or comma-separated) whose X-Forwarded-For or
    #: Forwarded headers name the client, for the rate limit and the logs. None by default:
    #: from anyone not listed, those headers are ignored (anyone can send them).
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    #: From SIGTERM to exit: running requests get this less 5 s, then a JSON 503; running
    #: tasks are released for another node. Below Kubernetes' default grace period (30 s).
    shutdown_timeout_s: float = Field(default=25.0, ge=1.0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    # Async tasks and callbacks
    database_url: str | None = Field(
        default=None, description="Task store; default SQLite under data_dir. postgresql://..."
    )
    broker_url: str | None = Field(
        default=None, description="amqp://... or redis://...: run tasks on Celery workers."
    )
    webhook_secret: str | None = Field(
        default=None, description="whsec_...; default: made once and kept in data_dir."
    )
    callback_retry_delays: tuple[float, ...] = (1.0, 5.0, 15.0)
    callback_timeout_s: float = Field(default=10.0, gt=0.0)
    task_retention_s: float = Field(default=24 * 3600, gt=0.0)
    task_workers: int = Field(default=2, ge=1, description="Embedded task workers.")
    task_lease_s: float = Field(default=30.0, gt=0.0)
    #: Runs a task may start (first run included) before it ends ``failed``: a run that raised,
    #: or whose worker died (its lease ran out), counts. A poison input stops here.
    task_max_runs: int = Field(default=3, ge=1)
    #: Waits before the 2nd, 3rd... run of a task whose run raised (the last one repeats).
    task_retry_delays: tuple[float, ...] = (5.0, 30.0)
    task_queue: str = Field(default="ocrserve", description="The Celery queue's name.")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: object) -> object:
        # Before validation: a value given by keyword or environment wins over the profile's.
        if isinstance(data, dict) and data.get("profile") == "serverless":
            return {**SERVERLESS_DEFAULTS, **data}
        return data

    @property
    def serverless(self) -> bool:
        return self.profile == "serverless"

    def decode_limits(self, max_pages: int | None = None) -> DecodeLimits:
        """What one request's decoding may cost, from these settings (``max_pages`` lower than
        the setting when a request asks for fewer)."""
        from ocrserve.decode import DecodeLimits  # decoding's libraries only when decoding

        return DecodeLimits(
            max_bytes=self.max_file_bytes,
            max_pixels=self.max_pixels,
            max_side=self.max_side,
            max_aspect=self.max_aspect,
            max_total_pixels=self.max_request_pixels,
            max_pages=self.max_pages if max_pages is None else max_pages,
            pdf_dpi=self.pdf_dpi,
        )

    def task_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{_private_database(self.data_dir / 'tasks.db')}"

    def check_extras(self) -> None:
        """Raise :class:`ConfigError` at start when a setting needs a package of the
        ``distributed`` extra that is not installed, rather than failing at first use."""
        needs = [
            ("broker_url", "celery", self.broker_url),
            ("redis_url", "redis", self.redis_url),
            ("database_url", "psycopg", (self.database_url or "").startswith("postgresql")),
        ]
        for setting, module, wanted in needs:
            if wanted and importlib.util.find_spec(module) is None:
                raise ConfigError(
                    f"OCRSERVE_{setting.upper()} needs the {module} package, which this install "
                    "lacks: pip install 'ocrserve[distributed]'",
                    setting=setting,
                )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_by_name(cls, value: object) -> object:
        return _named_keys(value)

    @field_validator("admin_key")
    @classmethod
    def _usable_admin_key(cls, value: str | None) -> str | None:
        if value is not None and (not value or value != value.strip()):
            raise ValueError(
                "must be a non-empty string, no spaces around it; unset it to turn /admin off"
            )
        return value

    @model_validator(mode="after")
    def _admin_key_is_no_client_key(self) -> Settings:
        # A client holding it would be the admin: the roles would not be separate.
        if self.admin_key is not None and self.admin_key in self.api_keys.values():
            raise ValueError("admin_key must not be one of api_keys")
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: object) -> object:
        return _address_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or a CIDR network (e.g. 10.0.0.0/8)"
                ) from None
        return tuple(entry.strip() for entry in value)

    @field_validator("webhook_secret")
    @classmethod
    def _usable_secret(cls, value: str | None) -> str | None:
        if value is not None:
            parse_secret(value)  # its ValueError says what is wrong, never the secret
        return value

    def resolved_webhook_secret(self) -> str:
        """The configured secret, or one made on first use and kept in the data folder.

        Raises :class:`ConfigError` when the kept one is unusable (empty, truncated, edited):
        signing with it would let anyone forge callbacks, or fail every one of them.
        """
        if self.webhook_secret is not None:
            return self.webhook_secret
        path = self.data_dir / "webhook_secret"
        try:
            if not path.exists():
                _create_secret_file(path)
            secret = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"cannot read the webhook secret in {path}: {e}", setting="webhook_secret"
            ) from e
        try:
            parse_secret(secret)
        except ValueError as e:
            raise ConfigError(
                f"{path}: {e}; replace the file's content, or delete the file to have a new "
                "secret made (receivers then need the new one), or set OCRSERVE_WEBHOOK_SECRET",
                setting="webhook_secret",
            ) from e
        return secret

    def lane_count(self, on_gpu: bool) -> int:
        if self.lanes:
            return self.lanes
        return 1 if on_gpu else min(os.cpu_count() or 1, 4)

    def threads_per_lane(self, on_gpu: bool) -> int:
        """Threads for each onnxruntime session so that lanes x threads fills the cores."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return 0 if on_gpu else max(1, (os.cpu_count() or 1) // self.lane_count(on_gpu))
