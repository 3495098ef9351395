"""Typed results: frozen dataclasses that mirror the server's JSON, built in one place.

Each keeps the JSON it was read from in ``raw`` (for printing it back, or for fields a newer
server adds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    """The states of an async task; compares equal to the plain strings the server sends."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    partial_success = "partial_success"
    cancelled = "cancelled"


#: A task in one of these states will not change again.
FINISHED = frozenset(
    {TaskStatus.succeeded, TaskStatus.failed, TaskStatus.partial_success, TaskStatus.cancelled}
)
#: ``wait`` returns the task in these final states and raises TaskFailedError in the others.
SUCCEEDED = frozenset({TaskStatus.succeeded, TaskStatus.partial_success})


@dataclass(frozen=True)
class OCRWord:
    text: str
    confidence: float
    #: Four (x, y) corners: top-left, top-right, bottom-right, bottom-left, in page pixels.
    box: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class OCRLine:
    text: str
    confidence: float
    #: Four (x, y) corners: top-left, top-right, bottom-right, bottom-left, in page pixels.
    box: tuple[tuple[float, float], ...]
    #: The line's words, split at spaces (a line of Chinese is one word).
    words: tuple[OCRWord, ...] = ()


@dataclass(frozen=True)
class OCRPage:
    page: int
    width: int
    height: int
    text: str
    avg_confidence: float
    lines: tuple[OCRLine, ...]
    #: How far the page was found turned, degrees clockwise; boxes are in the page as sent.
    angle: int = 0
    #: "pdf" when read from the PDF's own text layer, "ocr" when recognised.
    source: str = "ocr"
    #: The engine that read the page ("ppocr", "tesseract", "pdf") and its model version.
    engine: str = "ppocr"
    model: str = ""


@dataclass(frozen=True)
class OCRResult:
    """What ``POST /ocr`` returns (also one item of a batch, and a finished task's result).

    >>> result = client.ocr("invoice.pdf")                        # doctest: +SKIP
    >>> result.text, result.page_count, result.pages[0].lines[0].box  # doctest: +SKIP
    """

    text: str
    avg_confidence: float
    pages: tuple[OCRPage, ...]
    page_count: int
    pages_total: int
    truncated: bool
    model: str
    timings: Mapping[str, float]
    #: The uploaded file's name, in batch results.
    filename: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OCRResult:
        pages = tuple(
            OCRPage(
                page=int(p["page"]),
                width=int(p["width"]),
                height=int(p["height"]),
                text=str(p["text"]),
                avg_confidence=float(p["avg_confidence"]),
                lines=tuple(
                    OCRLine(
                        text=str(line["text"]),
                        confidence=float(line["confidence"]),
                        box=_box(line["box"]),
                        words=tuple(
                            OCRWord(str(w["text"]), float(w["confidence"]), _box(w["box"]))
                            for w in line.get("words", ())
                        ),
                    )
                    for line in p["lines"]
                ),
                angle=int(p.get("angle", 0)),
                source=str(p.get("source", "ocr")),
                engine=str(p.get("engine", "ppocr")),
                model=str(p.get("model", "")),
            )
            for p in data["pages"]
        )
        return cls(
            text=str(data["text"]),
            avg_confidence=float(data["avg_confidence"]),
            pages=pages,
            page_count=int(data["page_count"]),
            pages_total=int(data["pages_total"]),
            truncated=bool(data["truncated"]),
            model=str(data["model"]),
            timings={str(k): float(v) for k, v in data.get("timings", {}).items()},
            filename=data.get("filename"),
            raw=data,
        )


def _box(points: Any) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in points)


@dataclass(frozen=True)
class FileError:
    """One file of a batch that failed; the other files' results are unaffected."""

    filename: str | None
    code: str
    message: str


@dataclass(frozen=True)
class ErrorInfo:
    """The server's ``{"code", "message"}`` for a failed task."""

    code: str
    message: str


@dataclass(frozen=True)
class TaskProgress:
    pages_done: int
    pages_total: int | None


@dataclass(frozen=True)
class Task:
    """One async task as last seen: what ``submit`` answered, or a ``GET /task/{id}``.

    >>> task = client.submit(image_url="https://example.com/scan.pdf")  # doctest: +SKIP
    >>> client.wait(task.task_id, timeout=60).result.text               # doctest: +SKIP
    """

    task_id: str
    status: str
    status_url: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: TaskProgress | None = None
    result: OCRResult | None = None
    error: ErrorInfo | None = None
    metadata: Mapping[str, Any] | None = None
    callback: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        progress = data.get("progress")
        result = data.get("result")
        error = data.get("error")
        return cls(
            task_id=str(data["task_id"]),
            status=str(data["status"]),
            status_url=data.get("status_url"),
            created_at=_timestamp(data.get("created_at")),
            started_at=_timestamp(data.get("started_at")),
            finished_at=_timestamp(data.get("finished_at")),
            progress=(
                TaskProgress(int(progress.get("pages_done", 0)), progress.get("pages_total"))
                if isinstance(progress, Mapping)
                else None
            ),
            result=OCRResult.from_json(result) if isinstance(result, Mapping) else None,
            error=(
                ErrorInfo(str(error.get("code", "error")), str(error.get("message", "")))
                if isinstance(error, Mapping)
                else None
            ),
            metadata=data.get("metadata"),
            callback=data.get("callback"),
            raw=data,
        )


def batch_item(data: Mapping[str, Any]) -> OCRResult | FileError:
    """One item of ``POST /ocr/batch``: the result, or ``{"filename", "error"}``."""
    error = data.get("error")
    if isinstance(error, Mapping):
        return FileError(data.get("filename"), str(error["code"]), str(error["message"]))
    return OCRResult.from_json(data)


def _timestamp(value: object) -> datetime | None:
    """ISO 8601 or Unix seconds, as a timezone-aware datetime."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
