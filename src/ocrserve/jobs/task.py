"""What a task is, without its storage: states, the submitted request, the stored options.

The HTTP routes import this module, not :mod:`ocrserve.jobs.store`: the store brings SQLAlchemy
(and Alembic), which a server imports only once it starts its task backend, after it is ready
for ``/ocr`` (see :mod:`ocrserve.api.backend`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from ocrserve.schemas import ErrorDetail
from ocrserve.types import OCROptions

if TYPE_CHECKING:
    from ocrserve.jobs.store import TaskRow

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, PARTIAL, FAILED, CANCELLED = "succeeded", "partial_success", "failed", "cancelled"
FINISHED = (SUCCEEDED, PARTIAL, FAILED, CANCELLED)
#: A callback's states: waiting for its next attempt, delivered, or dead (a dead letter).
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
#: The error code of a task whose worker died on every run of its budget.
WORKER_CRASHED = "worker_crashed"


@dataclass(frozen=True)
class NewTask:
    """What a submit asks for; ``request_hash`` identifies it for Idempotency-Key checks."""

    options: dict[str, Any]
    source_url: str | None = None
    input_bytes: bytes | None = None
    filename: str | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None

    @property
    def request_hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(
            [self.options, self.source_url, self.filename, self.metadata, self.callback_url],
            sort_keys=True, default=str,
        ).encode())  # fmt: skip
        h.update(hashlib.sha256(self.input_bytes or b"").digest())
        return h.hexdigest()


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


def encode_options(options: OCROptions, max_pages: int) -> dict[str, Any]:
    """The options a task is stored with: every field of :class:`OCROptions`, resolved
    against the server's defaults at submit, so a task reads as ``/ocr`` would have."""
    return {**asdict(options), "max_pages": max_pages}


def decode_options(stored: dict[str, Any], defaults: OCROptions) -> tuple[OCROptions, int | None]:
    """Inverse of :func:`encode_options`; fields a row lacks come from ``defaults``.

    >>> decode_options({"lang": "en", "cls": False, "max_pages": 3}, OCROptions())
    ... # doctest: +NORMALIZE_WHITESPACE
    (OCROptions(lang='en', use_cls=False, precision=None, min_confidence=0.5, pdf_text='auto',
                orientation='auto', models='stable'), 3)
    """
    known = {f.name for f in fields(OCROptions)}
    values = {k: v for k, v in stored.items() if k in known}
    if "use_cls" not in values and "cls" in stored:  # rows written before the full options
        values["use_cls"] = bool(stored["cls"])
    max_pages = stored.get("max_pages")
    return replace(defaults, **values), int(max_pages) if max_pages else None


def error_detail(row: TaskRow) -> ErrorDetail | None:
    """Why the task failed, as the task view and the callback both show it."""
    if not row.error_code:
        return None
    return ErrorDetail(code=row.error_code, message=row.error_message or "")
