"""Wire models of the compatibility dialects (:mod:`ocrserve.api.compat`): one model per shape
another OCR server puts on the wire, field names and nesting as that server writes them.

- PaddleX serving, the OCR pipeline (``POST /ocr``): read from PaddlePaddle/PaddleX,
  ``paddlex/inference/serving/schemas/ocr.py`` (InferRequest, OCRResult, InferResult),
  ``schemas/shared/ocr.py`` (file, fileType), ``infra/models.py`` (the envelope, DataInfo),
  and the pipeline's result keys as PaddleOCR 3's OCR pipeline guide prints them.
- RapidOCR API (``rapidocr_api``, ``POST /ocr``): read from RapidAI/RapidOCRAPI,
  ``rapidocr_api/main.py`` (the form fields and the answer, a dict keyed by line number).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

__all__ = [
    "PaddleXDocPreprocessorResult",
    "PaddleXError",
    "PaddleXImageInfo",
    "PaddleXInferResult",
    "PaddleXModelSettings",
    "PaddleXOCRResult",
    "PaddleXPDFInfo",
    "PaddleXPDFPageInfo",
    "PaddleXPreprocessorSettings",
    "PaddleXPrunedResult",
    "PaddleXRequest",
    "PaddleXResponse",
    "PaddleXTextDetParams",
    "RapidOCRLine",
    "RapidOCRResponse",
]


# --- PaddleX serving: the OCR pipeline ----------------------------------------------------------


class PaddleXRequest(BaseModel):
    """The body of PaddleX's ``POST /ocr``. Fields PaddleX does not know are ignored, as its
    own server ignores them (pydantic's default)."""

    model_config = ConfigDict(extra="ignore")

    file: str = Field(description="A URL (http or https) of an image or PDF, or its Base64.")
    fileType: Literal[0, 1] | None = Field(
        default=None,
        description="0: a PDF, 1: an image; null: told from the file's first bytes.",
    )
    useDocOrientationClassify: bool | None = Field(
        default=None, description="Find pages turned by 90, 180 or 270 degrees (`orientation`)."
    )
    useDocUnwarping: bool | None = Field(default=None, description="Ignored: no unwarping.")
    useTextlineOrientation: bool | None = Field(
        default=None, description="Turn upside-down lines (`cls`)."
    )
    textDetLimitSideLen: int | None = Field(
        default=None, description="Ignored: the detector's settings are the server's."
    )
    textDetLimitType: str | None = Field(default=None, description="Ignored, as above.")
    textDetThresh: float | None = Field(default=None, description="Ignored, as above.")
    textDetBoxThresh: float | None = Field(default=None, description="Ignored, as above.")
    textDetUnclipRatio: float | None = Field(default=None, description="Ignored, as above.")
    textRecScoreThresh: float | None = Field(
        default=None,
        description="Lines recognised below this confidence are dropped (0 to 1); null: the "
        "server's default.",
    )
    visualize: bool | None = Field(
        default=None, description="Ignored: no images are drawn (ocrImage is null)."
    )


class PaddleXModelSettings(BaseModel):
    use_doc_preprocessor: bool
    use_textline_orientation: bool


class PaddleXPreprocessorSettings(BaseModel):
    use_doc_orientation_classify: bool
    use_doc_unwarping: bool


class PaddleXDocPreprocessorResult(BaseModel):
    model_settings: PaddleXPreprocessorSettings
    angle: int = Field(
        description="How far the page was found turned, in degrees clockwise (0, 90, 180, "
        "270); -1 when orientation was not looked for."
    )


class PaddleXTextDetParams(BaseModel):
    """The server's detector settings (``OCRSERVE_DET_*``), the same for every request."""

    limit_side_len: int
    limit_type: str
    thresh: float
    max_side_limit: int
    box_thresh: float
    unclip_ratio: float


class PaddleXPrunedResult(BaseModel):
    """One page's result, the keys of PaddleX's OCR pipeline that ocrserve can fill truly.

    Left out: ``dt_polys`` and ``dt_scores`` (the boxes of lines later dropped are not kept)
    and ``textline_orientation_angles`` (the line classifier's verdicts are not kept).
    """

    model_settings: PaddleXModelSettings
    doc_preprocessor_res: PaddleXDocPreprocessorResult | None = Field(
        default=None,
        # Left out, as PaddleX leaves it out, rather than null.
        exclude_if=lambda value: value is None,
        description="Present when the page's orientation was looked for.",
    )
    text_det_params: PaddleXTextDetParams
    text_type: Literal["general"] = "general"
    text_rec_score_thresh: float
    rec_texts: list[str]
    rec_scores: list[float]
    rec_polys: list[list[list[int]]] = Field(
        description="Each line's four corners (TL, TR, BR, BL) as [x, y] integer pixels of the "
        "page as sent."
    )
    rec_boxes: list[list[int]] = Field(description="Each line's [x_min, y_min, x_max, y_max].")


class PaddleXOCRResult(BaseModel):
    prunedResult: PaddleXPrunedResult
    ocrImage: str | None = None
    docPreprocessingImage: str | None = None
    inputImage: str | None = None


class PaddleXImageInfo(BaseModel):
    width: int
    height: int
    type: Literal["image"] = "image"


class PaddleXPDFPageInfo(BaseModel):
    width: int
    height: int


class PaddleXPDFInfo(BaseModel):
    numPages: int
    pages: list[PaddleXPDFPageInfo]
    type: Literal["pdf"] = "pdf"


class PaddleXInferResult(BaseModel):
    ocrResults: list[PaddleXOCRResult] = Field(description="One per page read.")
    dataInfo: PaddleXImageInfo | PaddleXPDFInfo = Field(discriminator="type")


class PaddleXResponse(BaseModel):
    """PaddleX's envelope of a success."""

    logId: str
    errorCode: Literal[0] = 0
    errorMsg: Literal["Success"] = "Success"
    result: PaddleXInferResult


class PaddleXError(BaseModel):
    """PaddleX's envelope of a failure: ``errorCode`` is the HTTP status."""

    logId: str
    errorCode: int
    errorMsg: str


# --- RapidOCR API ------------------------------------------------------------------------------


class RapidOCRLine(BaseModel):
    rec_txt: str
    dt_boxes: list[list[float]] = Field(
        description="Four (x, y) corners: TL, TR, BR, BL, in pixels of the image as sent."
    )
    score: float


class RapidOCRResponse(RootModel[dict[str, RapidOCRLine]]):
    """The lines by their number as a string, ``"0"``, ``"1"``, ...; ``{}`` when none."""
