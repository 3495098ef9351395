"""Document formats for an OCR result: hOCR, ALTO and the searchable PDF.

Each format is registered once, by name, with its media type, file extension and writer; the
CLI (``--format``) and the HTTP API (``Accept``, the ``format`` option) look formats up here
and call :attr:`OutputFormat.write`. Plain text and JSON are the wire schema's, not these.

>>> fmt = FORMATS["alto"]
>>> fmt.media_type, fmt.extension
('application/alto+xml', '.xml')
>>> by_media_type("text/vnd.hocr+html; charset=utf-8").name
'hocr'
>>> data = fmt.write(results, Source(data=raw, format="png", filename="scan.png"))
... # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from ocrserve.formats import alto, hocr, pdf
from ocrserve.formats.alto import write_alto
from ocrserve.formats.hocr import write_hocr
from ocrserve.formats.pdf import searchable_pdf
from ocrserve.types import PageResult

__all__ = [
    "DEFAULT_SYSTEM",
    "FORMATS",
    "OutputFormat",
    "Source",
    "Writer",
    "by_media_type",
    "searchable_pdf",
    "write_alto",
    "write_hocr",
]

DEFAULT_SYSTEM: Final = hocr.DEFAULT_SYSTEM


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """The file the pages were read from, as the writers need it.

    ``format`` is :func:`~ocrserve.decode.decode_bytes`'s name for it (``Document.format``);
    ``dpi`` the resolution its PDF pages were rendered at (``DecodeLimits.pdf_dpi``).

    >>> Source(data=b"%PDF-1.7 ...", format="pdf", filename="form.pdf", dpi=200).dpi
    200
    """

    data: bytes
    format: str
    filename: str = ""
    dpi: int = 200


class Writer(Protocol):
    def __call__(
        self, pages: Sequence[PageResult], source: Source, *, system: str = DEFAULT_SYSTEM
    ) -> bytes: ...


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """One format: what it is called, what it is served as, and what writes it.

    >>> FORMATS["pdf"].media_type
    'application/pdf'
    """

    name: str
    media_type: str
    extension: str
    write: Writer


def _hocr(pages: Sequence[PageResult], source: Source, *, system: str = DEFAULT_SYSTEM) -> bytes:
    return write_hocr(pages, filename=source.filename, system=system).encode()


def _alto(pages: Sequence[PageResult], source: Source, *, system: str = DEFAULT_SYSTEM) -> bytes:
    return write_alto(pages, filename=source.filename, system=system).encode()


def _pdf(pages: Sequence[PageResult], source: Source, *, system: str = DEFAULT_SYSTEM) -> bytes:
    return searchable_pdf(pages, source.data, source.format, source.dpi)


#: Every document format, by name.
FORMATS: Final[Mapping[str, OutputFormat]] = MappingProxyType(
    {
        f.name: f
        for f in (
            OutputFormat("hocr", hocr.MEDIA_TYPE, ".hocr", _hocr),
            OutputFormat("alto", alto.MEDIA_TYPE, ".xml", _alto),
            OutputFormat("pdf", pdf.MEDIA_TYPE, ".pdf", _pdf),
        )
    }
)


def by_media_type(media_type: str) -> OutputFormat | None:
    """The format served as ``media_type`` (parameters and case ignored), or None.

    >>> by_media_type("Application/PDF").name
    'pdf'
    """
    bare = media_type.split(";", 1)[0].strip().lower()
    return next((f for f in FORMATS.values() if f.media_type == bare), None)
