"""Wire models: what the API accepts and returns (and what /docs shows).

The result and task-event models live in :mod:`ocrserve.schemas`, shared with the jobs.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ocrserve.schemas import ErrorDetail, OCRResult

__all__ = [
    "BatchError",
    "BatchItem",
    "ErrorDetail",
    "ErrorOut",
    "Health",
    "OCRJSONRequest",
    "OCRResult",
]


class BatchItem(OCRResult):
    filename: str | None


class BatchError(BaseModel):
    filename: str | None
    error: ErrorDetail


class ErrorOut(BaseModel):
    error: ErrorDetail


class OCRJSONRequest(BaseModel):
    """``POST /ocr`` with a JSON body: one of ``image_base64`` or ``image_url``."""

    image_base64: str | None = None
    image_url: str | None = None
    lang: str | None = None
    precision: str | None = None
    cls: bool | None = None
    max_pages: int | None = Field(default=None, ge=1)


class Health(BaseModel):
    status: str
    version: str
    model: str
    providers: list[str]
