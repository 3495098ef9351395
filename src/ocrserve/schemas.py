"""Wire models: the OCR result, and the task event a callback carries, owned once.

``api/`` (the routes, the task view, the OpenAPI document) and ``jobs/`` (the callback body)
both serialise through these models, so a field is named, typed and written in one place.
The result of an async task is the ``/ocr`` result (:class:`OCRResult`) plus the pages that
could not be read (:class:`TaskResult`); a callback's body (:class:`TaskEvent`) is that
result's fields at the top level, next to the task's id, status, metadata and error::

    GET /task/{id}  ->  {"task_id", "status", ..., "result": TaskResult, "error", ...}
    callback body   ->  {"task_id", "status", "metadata", "error", ..., **TaskResult}
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class WordOut(BaseModel):
    text: str
    confidence: float
    box: list[list[float]] = Field(description="Four (x, y) corners: TL, TR, BR, BL, in pixels.")


class LineOut(BaseModel):
    text: str
    confidence: float
    box: list[list[float]] = Field(description="Four (x, y) corners: TL, TR, BR, BL, in pixels.")
    words: list[WordOut] = Field(
        default_factory=list,
        description="The line's words, split at spaces (a line of Chinese is one word).",
    )


class PageOut(BaseModel):
    page: int
    width: int
    height: int
    text: str
    avg_confidence: float
    angle: Literal[0, 90, 180, 270] = Field(
        0,
        description="How far the page's content was found turned, in degrees clockwise; it "
        "was read turned back, and the boxes are in the pixels of the page as sent.",
    )
    source: Literal["ocr", "pdf"] = Field(
        "ocr", description="'pdf': read from the PDF's own text layer, not recognised."
    )
    engine: str = Field(
        "ppocr",
        description="The engine that read the page: 'ppocr', 'tesseract' (a language PP-OCR has "
        "no model for, or the fallback when PP-OCR failed on the page), 'pdf' (its text layer).",
    )
    model: str = Field("", description="The version of the models that read the page.")
    lines: list[LineOut]


class OCRResult(BaseModel):
    text: str = Field(description="All pages' text in reading order, pages split by a blank line.")
    avg_confidence: float
    pages: list[PageOut]
    page_count: int
    pages_total: int
    truncated: bool = Field(description="True when the document had more pages than were read.")
    model: str
    timings: dict[str, float]


class ErrorDetail(BaseModel):
    code: str
    message: str


class FailedPage(BaseModel):
    page: int
    code: str
    message: str


class TaskResult(OCRResult):
    """A finished task's result: the ``/ocr`` result, and the pages that failed.

    >>> r = task_result({"text": "hi", "avg_confidence": 0.9, "pages": [], "page_count": 0,
    ...                  "pages_total": 0, "truncated": False, "model": "m", "timings": {}})
    >>> r.text, r.failed_pages
    ('hi', [])
    """

    failed_pages: list[FailedPage] = Field(
        default_factory=list,
        description="Pages that could not be read (a partial_success task); the others are in "
        "pages.",
    )


def task_result(stored: Mapping[str, Any] | None) -> TaskResult | None:
    """A task's stored result (as :func:`ocrserve.types.result_dict` wrote it) as the model."""
    return None if stored is None else TaskResult.model_validate(stored)


def iso_time(ts: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC time, the form every task time has on the wire."""
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


#: What a finished task can end as; a callback is sent for each of these.
FinishedStatus = Literal["succeeded", "partial_success", "failed"]


class _EventHead(BaseModel):
    task_id: str
    status: FinishedStatus
    metadata: dict[str, Any] | None = Field(description="As submitted.")
    error: ErrorDetail | None = Field(description="Why the task failed; null otherwise.")
    created_at: str | None = Field(description="ISO 8601, UTC.")
    finished_at: str | None = Field(description="ISO 8601, UTC.")


# The head is the second base so that its fields come first in the schema and the body.
class TaskEvent(TaskResult, _EventHead):
    """The body of the ``ocr-task-finished`` callback: the task, and its result's fields at the
    top level (the same values as ``GET /task``'s ``result``; empty when the task failed).

    >>> event = TaskEvent.of(task_id="t1", status="failed", metadata=None,
    ...                      error=ErrorDetail(code="corrupt_file", message="truncated JPEG"),
    ...                      created_at=0.0, finished_at=1.0, result=None)
    >>> event.text, event.pages, event.avg_confidence, event.error.code
    ('', [], 0.0, 'corrupt_file')
    """

    @classmethod
    def of(
        cls,
        *,
        task_id: str,
        status: str,
        metadata: Mapping[str, Any] | None,
        error: ErrorDetail | None,
        created_at: float | None,
        finished_at: float | None,
        result: TaskResult | None,
        pages_total: int | None = None,
    ) -> TaskEvent:
        if result is None:  # a failed task: the fields are there, empty, so readers need no check
            result = TaskResult(
                text="", avg_confidence=0.0, pages=[], page_count=0,
                pages_total=pages_total or 0, truncated=False, model="", timings={},
            )  # fmt: skip
        return cls.model_validate(
            {
                **dict(result),
                "task_id": task_id,
                "status": status,
                "metadata": metadata,
                "error": error,
                "created_at": iso_time(created_at),
                "finished_at": iso_time(finished_at),
            }
        )
