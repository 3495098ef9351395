"""Wire models: what the API accepts and returns (and what /docs shows).

The result and task-event models live in :mod:`ocrserve.schemas`, shared with the jobs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ocrserve.schemas import ErrorDetail, OCRResult, TaskResult

__all__ = [
    "BatchError",
    "BatchItem",
    "DeadLetter",
    "ErrorDetail",
    "ErrorOut",
    "Health",
    "OCRJSONRequest",
    "OCRResult",
    "Ready",
    "Replayed",
    "TaskJSONRequest",
    "TaskSubmitted",
    "TaskView",
]


class BatchItem(OCRResult):
    filename: str | None


class BatchError(BaseModel):
    filename: str | None
    error: ErrorDetail


class ErrorOut(BaseModel):
    error: ErrorDetail


class OCRJSONRequest(BaseModel):
    """``POST /ocr`` with a JSON body: one of ``image_base64`` or ``image_url``. Strict: an
    unknown field (a typo) is refused, not ignored; ``cls`` is a boolean, ``max_pages`` an
    integer (``true`` is not a page count)."""

    model_config = ConfigDict(extra="forbid")

    image_base64: str | None = None
    image_url: str | None = None
    lang: str | None = None
    precision: str | None = Field(default=None, description="fp32 or int8")
    cls: StrictBool | None = None
    max_pages: StrictInt | None = Field(default=None, ge=1)
    pdf_text: Literal["auto", "ocr", "pdf"] | None = Field(
        default=None,
        description="PDF pages: 'auto' reads a usable text layer and recognises the rest; "
        "'ocr' recognises every page; 'pdf' only reads text layers.",
    )
    orientation: Literal["auto", "off"] | None = Field(
        default=None, description="'auto' finds pages turned by 90, 180 or 270 degrees."
    )
    format: Literal["json", "text", "hocr", "alto", "pdf"] | None = Field(
        default=None,
        description="The answer's format (instead of the Accept header): JSON (default), plain "
        "text, hOCR 1.2, ALTO v4 XML or a searchable PDF.",
    )


class TaskJSONRequest(OCRJSONRequest):
    """``POST /ocr/async`` with a JSON body: the ``/ocr`` fields, and what a task keeps."""

    metadata: dict[str, Any] | None = Field(
        default=None, description="Returned with the task and its callback; at most 16 KiB."
    )
    callback_url: str | None = Field(
        default=None, description="HTTPS; receives the signed ocr-task-finished event."
    )


class Health(BaseModel):
    status: str
    version: str
    model: str
    providers: list[str]


class Languages(BaseModel):
    """``GET /languages``: what the ``lang`` option takes on this server."""

    langs: list[str] = Field(description="Every language code the server reads.")
    default: str = Field(description="The language read when a request names none.")
    engines: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The languages each engine reads: 'ppocr', and 'tesseract' for those PP-OCR "
        "has no model for (it is also PP-OCR's fallback).",
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="The model versions: 'stable', and 'candidate' with its share when a rollout "
        "is on.",
    )
    candidate_share: float = Field(0.0, description="The share of requests the candidate reads.")


class Ready(BaseModel):
    """``GET /ready``: 200 when it can serve, else 503 with the same body."""

    ready: bool
    checks: dict[str, bool]
    optional: dict[str, bool] = Field(description="Optional dependencies (the Redis cache).")
    queued_pages: int
    tasks: Literal["starting", "up", "down"] | None = Field(
        description="The async-task backend, started once the server is ready for /ocr: "
        "starting, up, or down (its last start failed; it is tried again). Null where the "
        "server runs none (OCRSERVE_PROFILE=serverless)."
    )


class TaskSubmitted(BaseModel):
    """``POST /ocr/async``'s 202: poll ``status_url`` (also in ``Location``)."""

    task_id: str
    status: str
    status_url: str


class TaskProgress(BaseModel):
    pages_done: int | None
    pages_total: int | None


class TaskCallback(BaseModel):
    url: str
    state: str
    attempts: list[dict[str, Any]]
    last_error: str | None


class TaskView(BaseModel):
    """``GET /task/{task_id}``: a task's state, and its result or error once finished."""

    task_id: str
    status: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    progress: TaskProgress
    result: TaskResult | None
    error: ErrorDetail | None
    metadata: dict[str, Any] | None
    callback: TaskCallback | None
    status_url: str


class DeadLetter(BaseModel):
    task_id: str
    tenant: str | None
    status: str
    callback_url: str | None
    attempts: int | None
    last_error: str | None
    log: list[dict[str, Any]]


class Replayed(BaseModel):
    task_id: str
    callback: str
