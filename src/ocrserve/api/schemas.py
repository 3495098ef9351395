"""Wire models: what the API accepts and returns (and what /docs shows)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LineOut(BaseModel):
    text: str
    confidence: float
    box: list[list[float]] = Field(description="Four (x, y) corners: TL, TR, BR, BL, in pixels.")


class PageOut(BaseModel):
    page: int
    width: int
    height: int
    text: str
    avg_confidence: float
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


class BatchItem(OCRResult):
    filename: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str


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
