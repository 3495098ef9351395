"""Bytes -> pages: images, multi-page TIFF and PDF, under size, pixel and page limits.

Knows nothing of HTTP, asyncio, storage or settings: it takes bytes (or a path) and a
:class:`DecodeLimits` and returns a :class:`~ocrserve.types.Document` whose pages are HxWx3
uint8 BGR arrays, EXIF orientation applied and transparency composited onto white.

>>> doc = decode_bytes(open("scan.tif", "rb").read(), DecodeLimits(max_pages=10))  # doctest: +SKIP
>>> doc.format, len(doc.pages), doc.truncated, doc.pages[0].image.shape           # doctest: +SKIP
('tiff', 10, True, (800, 1024, 3))

What a document costs is known before any pixel is: every limit (bytes, pixels and sides of
each page, its aspect ratio, the pixels of all its pages) is checked from the headers. The
pages come back deferred (:class:`~ocrserve.types.Page`): each is decoded, or rendered, when
its ``image`` is read, so a document of any length is read one page at a time, and a page's
pixel data that turns out corrupt raises :class:`CorruptFileError` then.

The format is told by magic bytes, never by file name. Every failure is one of the
:class:`~ocrserve.errors.InputError` subclasses; no Pillow or PDFium exception escapes.
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, Final

import cv2
import numpy as np
import numpy.typing as npt
import pypdfium2 as pdfium
from PIL import (
    BmpImagePlugin,
    ExifTags,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from ocrserve.errors import (
    AspectRatioError,
    CorruptFileError,
    FileTooLargeError,
    OCRServeError,
    PixelBudgetError,
    SideTooLongError,
    TooManyPagesError,
    TooManyPixelsError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from ocrserve.pdftext import TextLayer, read_text_layer
from ocrserve.types import Document, Page

__all__ = ["SUPPORTED_FORMATS", "DecodeLimits", "decode_bytes", "decode_path", "sniff_format"]

#: Format names :func:`sniff_format` returns and :func:`decode_bytes` accepts.
SUPPORTED_FORMATS: Final = ("jpeg", "png", "bmp", "webp", "gif", "tiff", "pdf")

_SUPPORTED_LIST: Final = "JPEG, PNG, BMP, WebP, GIF, TIFF, PDF"
_POINTS_PER_INCH: Final = 72
_WHITE: Final = (255, 255, 255)
_EXIF_FORMATS: Final = frozenset({"jpeg", "png", "webp", "tiff"})
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

# PDFium keeps global state (font caches, the allocator, error codes) and is documented as
# not thread-safe: two threads inside it at once can crash the process. The API layer decodes
# from a thread pool, so every call into pypdfium2 -- open, render, close -- holds this lock.
# PIL decoding needs no lock: each thread owns its own Image objects.
_PDFIUM_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeLimits:
    """What one decode may cost. A plain value object; the CLI builds it from the settings.

    >>> DecodeLimits(max_pages=10, pdf_dpi=150)  # doctest: +NORMALIZE_WHITESPACE
    DecodeLimits(max_bytes=52428800, max_pixels=40000000, max_side=16384, max_aspect=100,
                 max_total_pixels=500000000, max_pages=10, pdf_dpi=150, truncate=True)

    ``max_pixels``, ``max_side`` and ``max_aspect`` (long side over short side) are per page;
    ``max_total_pixels`` is for all the kept pages together. ``max_pixels`` is capped for
    raster images at Pillow's own ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 million), because
    Pillow checks that global again while it loads TIFF frames and warns above it; raise it once
    at start to go higher. Over ``max_pages``, TIFF and PDF keep the first ``max_pages`` pages
    and the Document says ``truncated=True``; with ``truncate=False`` they raise
    :class:`TooManyPagesError` instead. Pages past ``max_pages`` cost nothing: only the kept
    ones count towards ``max_total_pixels``.
    """

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384
    max_aspect: int = 100
    max_total_pixels: int = 500_000_000
    max_pages: int = 100
    pdf_dpi: int = 200
    truncate: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_bytes", "max_pixels", "max_side", "max_aspect", "max_total_pixels",
            "max_pages", "pdf_dpi",
        ):  # fmt: skip
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"DecodeLimits.{name} must be at least 1, got {value!r}")


_ImageOpener = Callable[[IO[bytes]], ImageFile.ImageFile]

# Opening through the plugin class rather than Image.open: we already know the format, and
# Image.open runs Pillow's decompression-bomb check on the header, which warns (a
# DecompressionBombWarning, an error under pytest) before we can refuse with our own error.
_OPENERS: Final[dict[str, _ImageOpener]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
}

# Formats we refuse, named so the error can say what came instead of only "unknown".
_OTHER_MAGIC: Final = (
    (b"\x00\x00\x01\x00", "ico"),
    (b"8BPS", "psd"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (b"\xff\x0a", "jpegxl"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jpegxl"),
    (b"AT&TFORM", "djvu"),
    (b"%!PS", "postscript"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2 (doc/xls/ppt)"),
    (b"{\\rtf", "rtf"),
)
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
# BMP's two-byte magic also starts ordinary text ("BMW ..."); the DIB header size behind it
# is one of a few known values in every BMP variant Pillow reads.
_BMP_DIB_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
# PDF readers accept the header anywhere in the first KiB (some generators prepend junk).
_PDF_HEADER_WINDOW: Final = 1024
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def check_format(data: bytes, where: str = "") -> str:
    """The format of ``data``, from its first bytes, or the error decoding it would end in:
    what a service can tell a client at once, before any pixel is decoded."""
    if not data:
        raise CorruptFileError(f"{where}the file is empty (0 bytes)", reason="empty file")
    fmt = sniff_format(data)
    if fmt is None:
        detected = _name_unsupported(data)
        came = f"this looks like {detected}" if detected else "the format was not recognised"
        raise UnsupportedFormatError(
            f"{where}unsupported file format: {came}; supported formats are {_SUPPORTED_LIST}",
            detected=detected,
        )
    if fmt == "webp" and not WebPImagePlugin.SUPPORTED:
        raise UnsupportedFormatError(
            f"{where}this Pillow build was compiled without WebP support", detected="webp"
        )
    return fmt


def sniff_format(data: bytes) -> str | None:
    """Name the format of ``data`` from its magic bytes, or ``None`` if it is not one we decode.

    >>> sniff_format(b"%PDF-1.7\\n...")
    'pdf'
    >>> sniff_format(b"hello") is None
    True
    """
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    if b"%PDF-" in data[:_PDF_HEADER_WINDOW]:
        return "pdf"
    return None


def decode_bytes(
    data: bytes, limits: DecodeLimits = DecodeLimits(), *, filename: str | None = None
) -> Document:
    """Decode one file's bytes into BGR pages.

    ``filename`` only makes error messages clearer; the format is told by magic bytes.

    >>> doc = decode_bytes(png_bytes)        # doctest: +SKIP
    >>> doc.format, doc.pages[0].image.shape  # doctest: +SKIP
    ('png', (480, 640, 3))

    Reads headers only; the pages are decoded as they are read (see the module's docstring).
    Raises :class:`FileTooLargeError`, :class:`TooManyPixelsError`, :class:`SideTooLongError`,
    :class:`AspectRatioError`, :class:`PixelBudgetError`, :class:`TooManyPagesError` (only
    with ``limits.truncate=False``), :class:`UnsupportedFormatError` and
    :class:`CorruptFileError`, all of them :class:`~ocrserve.errors.InputError`.
    """
    where = f"{filename}: " if filename else ""
    if len(data) > limits.max_bytes:
        raise FileTooLargeError(limit=limits.max_bytes, value=len(data))
    fmt = check_format(data, where)
    if fmt == "pdf":
        doc = _decode_pdf(data, limits, where)
    else:
        doc = _decode_raster(data, fmt, limits, where)
    if doc.pixels > limits.max_total_pixels:
        pages = len(doc.pages)
        raise PixelBudgetError(limit=limits.max_total_pixels, value=doc.pixels, pages=pages)
    return doc


def decode_path(path: str | os.PathLike[str], limits: DecodeLimits = DecodeLimits()) -> Document:
    """Read and decode a file, refusing one over ``limits.max_bytes`` before reading it.

    >>> doc = decode_path("tests/fixtures/phototest.tif")  # doctest: +SKIP
    >>> doc.format, doc.pages[0].image.shape                # doctest: +SKIP
    ('tiff', (480, 640, 3))

    Raises what :func:`decode_bytes` raises, and :class:`UnreadableFileError` if the file
    cannot be read.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limits.max_bytes:
                raise FileTooLargeError(limit=limits.max_bytes, value=size)
            # One byte past the limit: a file that grew since fstat, or a pipe or device whose
            # size fstat cannot tell, is caught by decode_bytes without reading all of it.
            data = f.read(limits.max_bytes + 1)
    except OSError as e:
        raise UnreadableFileError(f"cannot read {name}: {e.strerror or e}", path=name) from e
    return decode_bytes(data, limits, filename=os.path.basename(name))


def _name_unsupported(data: bytes) -> str | None:
    head = data[:64]
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "heic"
        if brand in _AVIF_BRANDS:
            return "avif"
        return "iso media (mp4/mov)"
    if head.startswith(b"RIFF"):
        return "riff (" + head[8:12].decode("latin-1").strip() + ")"
    stripped = head.lstrip()
    if stripped.startswith((b"<svg", b"<?xml", b"<!DOCTYPE", b"<html", b"<HTML")):
        return "svg/xml/html"
    try:
        text = data[:1024].decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the 1 KiB boundary is still text
        if e.start < 1020:
            return None
        text = data[: e.start].decode("utf-8")
    if text and all(c.isprintable() or c in "\r\n\t\f" for c in text):
        return "text"
    return None


# ---------------------------------------------------------------------------------- raster


def _pixel_limit(limits: DecodeLimits) -> int:
    # Pillow checks Image.MAX_IMAGE_PIXELS itself while loading TIFF frames (a warning above
    # it, an error above twice it). Staying under it keeps Pillow silent without mutating
    # that global, which every thread and every other Pillow user in the process shares.
    pil_limit = Image.MAX_IMAGE_PIXELS
    return limits.max_pixels if pil_limit is None else min(limits.max_pixels, pil_limit)


def _check_page(
    size: tuple[int, int], limits: DecodeLimits, pixel_limit: int, where: str, page: int | None
) -> None:
    """Everything one page may cost, from its size alone: refused before a pixel is decoded."""
    width, height = size
    if width < 1 or height < 1:
        what = f"page {page}" if page is not None else "the image"
        raise CorruptFileError(
            f"{where}{what} has an empty size ({width}x{height})", reason="empty page"
        )
    if width * height > pixel_limit:
        raise TooManyPixelsError(limit=pixel_limit, value=width * height, page=page)
    if max(width, height) > limits.max_aspect * min(width, height):
        raise AspectRatioError(limit=limits.max_aspect, width=width, height=height, page=page)
    if max(width, height) > limits.max_side:
        raise SideTooLongError(limit=limits.max_side, value=max(width, height), page=page)


def _decode_raster(data: bytes, fmt: str, limits: DecodeLimits, where: str) -> Document:
    limit = _pixel_limit(limits)
    try:
        # The plugin constructor parses the header only: no pixel data is read or allocated
        # until load(), so the size checks refuse a decompression bomb for free.
        with _OPENERS[fmt](io.BytesIO(data)) as img:
            if isinstance(img, TiffImagePlugin.TiffImageFile):
                # n_frames walks the IFD chain (tags only, no pixel data); Pillow stops at a
                # loop in it. Seeking a frame reads its tags, not its pixels.
                total = img.n_frames
                sizes = []
                for frame in range(_pages_to_keep(total, limits)):
                    img.seek(frame)
                    sizes.append(_oriented_size(img, fmt))
                    _check_page(sizes[-1], limits, limit, where, page=frame + 1)
            else:
                # GIF and WebP: the first frame only. An animation is not a document.
                total = 1
                sizes = [_oriented_size(img, fmt)]
                _check_page(sizes[0], limits, limit, where, page=None)
    except OCRServeError:
        raise
    except MemoryError:
        raise
    except Image.DecompressionBombError as e:
        # Only a GIF whose first frame reaches outside its logical screen gets here: Pillow
        # grows the canvas (and checks it) inside the constructor, before we see a size.
        found = _BOMB_PIXELS.search(str(e))
        raise TooManyPixelsError(limit=limit, value=int(found[1]) if found else 0) from e
    except Exception as e:
        raise _corrupt(fmt, where, e) from e
    pages = tuple(
        Page.deferred(
            partial(_load_frame, data, fmt, frame, where), width=w, height=h, index=frame + 1
        )
        for frame, (w, h) in enumerate(sizes)
    )
    return Document(pages=pages, format=fmt, pages_total=total, truncated=len(pages) < total)


# EXIF orientations that turn the image a quarter: its width and height swap once applied.
_QUARTER_TURNS: Final = frozenset({5, 6, 7, 8})


def _oriented_size(img: ImageFile.ImageFile, fmt: str) -> tuple[int, int]:
    """The size a frame will have once decoded and turned upright, from its header."""
    try:
        if isinstance(img, TiffImagePlugin.TiffImageFile):
            # From the tags: Pillow >= 13 reports TIFF sizes already turned, older ones not.
            tags = img.tag_v2
            width, height = int(tags[256]), int(tags[257])  # ImageWidth, ImageLength
            orientation = tags.get(ExifTags.Base.Orientation)
        elif fmt in ("jpeg", "webp") or (fmt == "png" and "exif" in img.info):
            # (A PNG's eXIf chunk behind its pixel data is found only by decoding them.)
            width, height = img.size
            orientation = img.getexif().get(ExifTags.Base.Orientation)
        else:
            return img.size
    except MemoryError:
        raise
    except Exception:
        # A broken EXIF block costs the orientation, as it does when the page is decoded.
        return img.size
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _load_frame(data: bytes, fmt: str, frame: int, where: str) -> npt.NDArray[np.uint8]:
    """Decode one frame of a raster file whose limits were checked from its header."""
    try:
        with _OPENERS[fmt](io.BytesIO(data)) as img:
            if frame:
                img.seek(frame)
            return _load_bgr(img, fmt)
    except OCRServeError:
        raise
    except MemoryError:
        raise
    except Exception as e:
        raise _corrupt(fmt, where, e) from e


def _pages_to_keep(total: int, limits: DecodeLimits) -> int:
    if total <= limits.max_pages:
        return total
    if not limits.truncate:
        raise TooManyPagesError(limit=limits.max_pages, value=total)
    return limits.max_pages


def _load_bgr(img: Image.Image, fmt: str) -> npt.NDArray[np.uint8]:
    # load() raises on a truncated file as long as ImageFile.LOAD_TRUNCATED_IMAGES stays
    # False (we never set it): otherwise Pillow pads the missing rows with grey and a cut-off
    # upload would be read as half a page without anyone knowing.
    img.load()
    if fmt in _EXIF_FORMATS:
        _apply_orientation(img)
    return _to_bgr(img)


def _apply_orientation(img: Image.Image) -> None:
    # Phones store portrait photos landscape plus an orientation tag; text read sideways is
    # lost. (Pillow >= 13 already does this itself for TIFF; a second call is a no-op.)
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except MemoryError:
        raise
    except Exception:
        # A broken EXIF block costs the orientation, not the page: the pixels decoded fine.
        return


def _to_bgr(img: Image.Image) -> npt.NDArray[np.uint8]:
    mode = img.mode
    if mode.startswith("I;16"):
        # 16-bit grey: keep the high byte, as libpng's strip-16 does
        return _gray_to_bgr((np.asarray(img) >> 8).astype(np.uint8))
    if mode in ("I", "F"):
        return _gray_to_bgr(_scale_to_uint8(np.asarray(img)))
    if mode == "1":
        return _gray_to_bgr(np.asarray(img.convert("L")))
    if mode in _ALPHA_MODES or img.has_transparency_data:
        # Transparent pixels are usually black underneath: dropping alpha would turn a
        # transparent background into a black one and hide black text. Paper is white.
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, _WHITE)
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return _rgb_to_bgr(rgb)
    if mode == "L":
        return _gray_to_bgr(np.asarray(img))
    if mode == "RGB":
        return _rgb_to_bgr(img)
    # P, CMYK, YCbCr, HSV...; Pillow raises ValueError for the few it cannot convert (LAB)
    return _rgb_to_bgr(img.convert("RGB"))


def _rgb_to_bgr(img: Image.Image) -> npt.NDArray[np.uint8]:
    # cv2's SIMD swap is about twice as fast as a numpy copy through reversed strides.
    return np.asarray(cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR), dtype=np.uint8)


def _gray_to_bgr(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def _scale_to_uint8(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    # 32-bit int and float grey have no fixed white point: keep 8-bit and 16-bit ranges as
    # they are and stretch anything else to the full range.
    lo, hi = float(values.min()), float(values.max())
    out: npt.NDArray[np.uint8]
    if lo >= 0 and hi <= 255:
        out = values.astype(np.uint8)
    elif lo >= 0 and hi <= 65535 and values.dtype.kind in "iu":
        out = (values >> 8).astype(np.uint8)
    elif hi <= lo:
        out = np.zeros(values.shape, np.uint8)
    else:
        scaled = (values.astype(np.float32) - lo) * (255.0 / (hi - lo))
        out = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
    return out


def _corrupt(fmt: str, where: str, error: BaseException) -> CorruptFileError:
    reason = str(error) or type(error).__name__
    return CorruptFileError(
        f"{where}cannot decode this {fmt.upper()} file: {reason}", reason=reason
    )


# ------------------------------------------------------------------------------------- PDF


def _decode_pdf(data: bytes, limits: DecodeLimits, where: str) -> Document:
    scale = limits.pdf_dpi / _POINTS_PER_INCH
    with _pdf(data, where) as pdf:
        total = len(pdf)
        if total < 1:
            raise CorruptFileError(f"{where}the PDF has no pages", reason="no pages")
        sizes = []
        for index in range(_pages_to_keep(total, limits)):
            # From the page tree, without loading the page; /Rotate applied, as render()
            # applies it, and the same rounding, so the checks see the bitmap's real size:
            # a poster-sized page is refused before PDFium allocates gigabytes for it.
            width_pt, height_pt = pdf.get_page_size(index)
            sizes.append((math.ceil(width_pt * scale), math.ceil(height_pt * scale)))
            _check_page(sizes[-1], limits, limits.max_pixels, where, page=index + 1)
    pages = tuple(
        Page.deferred(
            partial(_render_pdf_page, data, index, scale, where),
            width=width,
            height=height,
            index=index + 1,
            text=partial(_read_pdf_text, data, index, limits.pdf_dpi, where),
        )
        for index, (width, height) in enumerate(sizes)
    )
    return Document(pages=pages, format="pdf", pages_total=total, truncated=len(pages) < total)


def _read_pdf_text(data: bytes, index: int, dpi: int, where: str) -> TextLayer:
    """Read one page's own text layer (pdftext.py), the document opened for it alone."""
    with _pdf(data, where) as pdf:
        return read_text_layer(pdf, index, dpi)


def _render_pdf_page(data: bytes, index: int, scale: float, where: str) -> npt.NDArray[np.uint8]:
    """Render one page of a PDF whose limits were checked; the document is opened for it alone
    (well under a millisecond), so that nothing of PDFium is held between pages."""
    with _pdf(data, where) as pdf:
        # Without a form environment, filled-in AcroForm fields that carry no appearance
        # stream render blank. (Only AcroForm: on XFA pypdfium2 logs a warning per call.)
        if pdf.get_formtype() == pdfium.raw.FORMTYPE_ACRO_FORM:
            pdf.init_forms()
        return _render_page(pdf, index, scale, where)


@contextmanager
def _pdf(data: bytes, where: str) -> Iterator[pdfium.PdfDocument]:
    """A PDF open for the body's use, under PDFium's lock. What the body raises that is not
    ours (nor a MemoryError) reads as a corrupt PDF; the document is closed explicitly, inside
    the lock: left to the garbage collector, pypdfium2's finalizers would call into PDFium from
    whichever thread happens to collect."""
    with _PDFIUM_LOCK:
        pdf = _open_pdf(data, where)
        try:
            yield pdf
        except (OCRServeError, MemoryError):
            raise
        except Exception as e:
            raise _corrupt("pdf", where, e) from e
        finally:
            pdf.close()


def _open_pdf(data: bytes, where: str) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        if e.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise CorruptFileError(
                f"{where}the PDF is encrypted and needs a password to open; "
                "upload a decrypted copy",
                reason="encrypted",
            ) from e
        if e.err_code == pdfium.raw.FPDF_ERR_SECURITY:
            raise CorruptFileError(
                f"{where}the PDF uses an encryption scheme PDFium does not support",
                reason="unsupported encryption",
            ) from e
        raise _corrupt("pdf", where, e) from e


def _render_page(
    pdf: pdfium.PdfDocument, index: int, scale: float, where: str
) -> npt.NDArray[np.uint8]:
    page = pdf[index]
    try:
        # Default format: 3-byte BGR on an opaque white fill, which is exactly a Page. The
        # bitmap is drawn into a packed buffer Python allocates (new_native), which PDFium
        # never frees: the array is a view of it that outlives the bitmap, not a second copy
        # of the page (120 MB at the pixel limit).
        bitmap = page.render(scale=scale, bitmap_maker=pdfium.PdfBitmap.new_native)
        try:
            image: npt.NDArray[np.uint8] = np.asarray(bitmap.to_numpy(), dtype=np.uint8)
        finally:
            bitmap.close()
    finally:
        page.close()
    if image.ndim != 3 or image.shape[2] != 3:
        raise CorruptFileError(
            f"{where}PDFium rendered page {index + 1} as {image.shape}, not BGR",
            reason="unexpected bitmap format",
        )
    return image
