"""The formats an OCR result is answered in: JSON (the default), plain text, hOCR, ALTO and a
searchable PDF, chosen by the ``format`` option or else the ``Accept`` header.

The JSON result (:class:`~ocrserve.schemas.OCRResult`) is what is computed, cached and stored;
every other format is written from it when it is answered, so a cache hit or a finished task
can be had in any of them. Only the searchable PDF needs the document itself as well.

>>> choose("hocr", None)
'hocr'
>>> choose(None, "application/alto+xml, application/json;q=0.5")
'alto'
>>> choose(None, None)
'json'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from fastapi.responses import JSONResponse, Response

from ocrserve.errors import NotAcceptableError, OptionError
from ocrserve.schemas import OCRResult
from ocrserve.types import Line, PageResult, Word

JSON: Final = "json"
TEXT: Final = "text"
#: Every format a result can be answered in, and its media type.
MEDIA_TYPES: Final[Mapping[str, str]] = {
    JSON: "application/json",
    TEXT: "text/plain; charset=utf-8",
    "hocr": "text/vnd.hocr+html; charset=utf-8",
    "alto": "application/alto+xml; charset=utf-8",
    "pdf": "application/pdf",
}
#: What a finished task's result can be had in: it no longer keeps the document a PDF needs.
TASK_FORMATS: Final = (JSON, TEXT, "hocr", "alto")
#: Media types an Accept header may name for a format besides its own.
_ALIASES: Final[Mapping[str, str]] = {
    "application/xml": "alto",
    "text/xml": "alto",
    "text/html": "hocr",
    "application/xhtml+xml": "hocr",
}


def choose(
    option: str | None, accept: str | None, offered: Sequence[str] = tuple(MEDIA_TYPES)
) -> str:
    """The format to answer in: the ``format`` option where one was sent, else the first of
    ``offered`` the Accept header takes at the highest quality; JSON where no header was sent
    or it takes anything. Raises :class:`OptionError` for an unknown or unoffered ``format``
    and :class:`NotAcceptableError` (406) when the header takes none of ``offered``."""
    if option is not None:
        name = option.strip().lower()
        if name not in offered:
            raise OptionError(
                f"format must be one of {', '.join(offered)} here, not {option!r}",
                option="format",
                value=option,
                allowed=offered,
            )
        return name
    if not accept or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip().lower() for p in part.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        for name in _formats_for(media, offered):
            # Highest quality first; among equals, the order the client wrote them in.
            rank = (-quality, position, name)
            if best is None or rank < best:
                best = rank
            break
    if best is None:
        wanted = ", ".join(MEDIA_TYPES[name].split(";")[0] for name in offered)
        raise NotAcceptableError(
            f"this route answers in {wanted}; the Accept header ({accept!r}) takes none of them",
            offered=[MEDIA_TYPES[name] for name in offered],
        )
    return best[2]


def _formats_for(media: str, offered: Sequence[str]) -> list[str]:
    if media in ("*/*", "application/*") and JSON in offered:
        return [JSON]
    if media == "text/*" and TEXT in offered:
        return [TEXT]
    names = [n for n in offered if MEDIA_TYPES[n].split(";")[0] == media]
    alias = _ALIASES.get(media)
    if alias is not None and alias in offered:
        names.append(alias)
    return names


def respond(
    fmt: str,
    result: Mapping[str, Any],
    *,
    document: bytes | None = None,
    filename: str | None = None,
    dpi: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``result`` (the JSON result, as :func:`ocrserve.types.result_dict` wrote it) answered
    as ``fmt``. The searchable PDF also needs the ``document`` it was read from."""
    if fmt == JSON:
        return JSONResponse(dict(result), headers=dict(headers or {}))
    parsed = OCRResult.model_validate(result)
    if fmt == TEXT:
        body = parsed.text.encode()
    else:
        # The writers import pikepdf and fontTools: loaded by the first request that asks.
        from ocrserve.decode import sniff_format
        from ocrserve.formats import FORMATS, Source

        if fmt == "pdf" and document is None:
            raise OptionError(
                "format pdf needs the document: ask /ocr for it", option="format", value=fmt
            )
        data = document or b""
        source = Source(
            data=data, format=sniff_format(data) or "", filename=filename or "", dpi=dpi
        )
        body = FORMATS[fmt].write(page_results(parsed), source, system=f"ocrserve ({parsed.model})")
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=dict(headers or {}))


def page_results(result: OCRResult) -> list[PageResult]:
    """The value objects behind a JSON result, for the document writers."""

    def box(points: list[list[float]]) -> Any:
        return tuple((float(x), float(y)) for x, y in points)

    return [
        PageResult(
            index=page.page,
            width=page.width,
            height=page.height,
            lines=tuple(
                Line(
                    line.text,
                    line.confidence,
                    box(line.box),
                    tuple(Word(w.text, w.confidence, box(w.box)) for w in line.words),
                )
                for line in page.lines
            ),
            text=page.text,
            angle=page.angle,
            source=page.source,
            engine=page.engine,
            model=page.model,
        )
        for page in result.pages
    ]
