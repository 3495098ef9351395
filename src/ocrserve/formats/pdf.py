"""Searchable PDF: the pages as they came, with an invisible text layer over each word.

A PDF input keeps its page objects, content and all (nothing is re-rendered): each page that
was read gets one more content stream, wrapped so the page's own graphics state cannot leak
into it. An image input becomes one page per image page, the image drawn at its own
resolution (a JPEG embedded as it is, anything else losslessly) with the text over it.

The text layer is Tesseract's design, written anew: text render mode 3 (invisible), one text
object per word set on the word box's bottom edge, the font size its height, the horizontal
scale (``Tz``) stretching it to the box's width; a Type0 font (Identity-H) whose CIDs are
assigned to the document's distinct characters, with a ToUnicode CMap that maps each back to
its character (CJK and characters beyond the BMP extract as they are), over an embedded
TrueType font of one glyph, a plain box never painted, built here with fontTools. A space
follows each word but the last of a line, so a viewer's search and copy find "word word".

pikepdf (qpdf) writes the file: it is maintained, keeps a PDF's objects as they are, and edits
pages without rewriting what it does not touch.
"""

from __future__ import annotations

import functools
import io
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import pikepdf
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from PIL import Image, ImageOps

from ocrserve.formats.boxes import lines_with_words
from ocrserve.types import Box, PageResult

MEDIA_TYPE: Final = "application/pdf"

_POINTS_PER_INCH: Final = 72.0
#: The resolution an image that states none is taken to have: a scan's usual one.
DEFAULT_IMAGE_DPI: Final = 300
_FONT_NAME: Final = "GlyphLessFont"
#: 1000, as PDF's glyph space: the font's units and the PDF's widths and metrics are one.
_UNITS_PER_EM: Final = 1000
#: Every glyph advances half an em: Tz stretches each word to its box whatever the advance.
_ADVANCE: Final = 500
_EXIF_FORMATS: Final = frozenset({"jpeg", "png", "webp", "tiff"})
_MAX_CID: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class _Affine:
    """``(x, y) -> (a x + c y + e, b x + d y + f)``: PDF's matrix order."""

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        return (self.a * x + self.c * y + self.e, self.b * x + self.d * y + self.f)

    @classmethod
    def through(
        cls, origin: tuple[float, float], x_to: tuple[float, float], y_to: tuple[float, float]
    ) -> _Affine:
        """The map taking (0, 0), (1, 0) and (0, 1) to these points."""
        return cls(
            x_to[0] - origin[0],
            x_to[1] - origin[1],
            y_to[0] - origin[0],
            y_to[1] - origin[1],
            origin[0],
            origin[1],
        )


def searchable_pdf(
    pages: Sequence[PageResult], source: bytes, source_format: str, dpi: int = 200
) -> bytes:
    """The source document as a PDF whose pages carry the OCR result as invisible text.

    >>> doc = decode_bytes(data)                                  # doctest: +SKIP
    >>> results = engine.run(doc.pages)                           # doctest: +SKIP
    >>> pdf = searchable_pdf(results, data, doc.format, dpi=200)  # doctest: +SKIP

    ``source_format`` is :func:`~ocrserve.decode.decode_bytes`'s name for the file (``pdf``,
    ``jpeg``, ``png``, ``tiff``...); ``dpi`` is the resolution PDF pages were rendered at for
    the engine (``DecodeLimits.pdf_dpi``), unused for images. Each result goes on the page its
    ``index`` names; pages without a result (past a page limit) are kept without text. Raises
    ``ValueError`` when a result does not fit the source (no such page, another size).
    """
    font = _Font(_characters(pages))
    if source_format == "pdf":
        pdf = pikepdf.open(io.BytesIO(source))
        placed = _pdf_pages(pdf, pages, dpi)
    else:
        pdf = pikepdf.new()
        placed = _image_pages(pdf, pages, source, source_format)
    with pdf:
        if placed:
            font_ref = font.add_to(pdf)
            for page, result, to_user in placed:
                name = _add_font(page, font_ref)
                stream = _text_layer(result, to_user, name, font)
                # q/Q around the page's own content: whatever state it leaves (a cm, a clip,
                # a colour) stays inside and the words land where the page's pixels were.
                page.contents_add(b"q\n", prepend=True)
                page.contents_add(pdf.make_stream(b"Q\n" + stream))
        out = io.BytesIO()
        pdf.save(out)
    return out.getvalue()


_Placed = tuple[pikepdf.Page, PageResult, _Affine]


# ------------------------------------------------------------------------------- PDF input


def _pdf_pages(pdf: pikepdf.Pdf, results: Sequence[PageResult], dpi: int) -> list[_Placed]:
    scale = dpi / _POINTS_PER_INCH
    placed = []
    for result in results:
        if not 1 <= result.index <= len(pdf.pages):
            raise ValueError(f"page {result.index}: the PDF has {len(pdf.pages)} pages")
        page = pdf.pages[result.index - 1]
        to_user, (width_pt, height_pt) = _pixels_to_user(page, scale)
        expected = (math.ceil(width_pt * scale), math.ceil(height_pt * scale))
        if abs(expected[0] - result.width) > 1 or abs(expected[1] - result.height) > 1:
            raise ValueError(
                f"page {result.index}: the result is {result.width}x{result.height} px, the "
                f"page rendered at {dpi} dpi is {expected[0]}x{expected[1]} px"
            )
        placed.append((page, result, to_user))
    return placed


def _pixels_to_user(page: pikepdf.Page, scale: float) -> tuple[_Affine, tuple[float, float]]:
    """From the pixels of the page as PDFium renders it to the page's user space, and the
    rendered page's size in points.

    PDFium draws the crop box (clipped to the media box; the media box where there is no crop
    box, US Letter where there is neither) turned clockwise by /Rotate, whole quarter turns
    counted as it counts them.
    """
    media = _rect(_inherited(page.obj, "/MediaBox")) or (0.0, 0.0, 612.0, 792.0)
    crop = _rect(_inherited(page.obj, "/CropBox"))
    box = media
    if crop is not None:
        clipped = (
            max(crop[0], media[0]),
            max(crop[1], media[1]),
            min(crop[2], media[2]),
            min(crop[3], media[3]),
        )
        if clipped[0] < clipped[2] and clipped[1] < clipped[3]:
            box = clipped
    rotate = _inherited(page.obj, "/Rotate")
    try:
        # C's division, as PDFium's: towards zero, so -90 is -1 quarter, 100 is one.
        quarters = math.trunc(int(rotate) / 90) % 4 if rotate is not None else 0
    except (TypeError, ValueError):
        quarters = 0
    x0, y0, x1, y1 = box
    p = 1 / scale
    # Where the rendered page's top-left corner lies, and where one pixel right and one
    # pixel down go, for each quarter turn.
    origin, right, down = {
        0: ((x0, y1), (p, 0.0), (0.0, -p)),
        1: ((x0, y0), (0.0, p), (p, 0.0)),
        2: ((x1, y0), (-p, 0.0), (0.0, p)),
        3: ((x1, y1), (0.0, -p), (-p, 0.0)),
    }[quarters]
    to_user = _Affine(right[0], right[1], down[0], down[1], origin[0], origin[1])
    size = (x1 - x0, y1 - y0) if quarters % 2 == 0 else (y1 - y0, x1 - x0)
    return to_user, size


def _inherited(page: pikepdf.Object, key: str) -> pikepdf.Object | None:
    """A page attribute, from the page or the nearest /Pages node above it that has it."""
    node: pikepdf.Object | None = page
    for _ in range(64):  # a /Parent loop in a broken file ends here
        if node is None or not isinstance(node, pikepdf.Dictionary):
            return None
        if key in node:
            value: pikepdf.Object = node[key]
            return value
        node = node.get("/Parent")
    return None


def _rect(value: pikepdf.Object | None) -> tuple[float, float, float, float] | None:
    if not isinstance(value, pikepdf.Array) or len(value) != 4:
        return None
    try:
        a, b, c, d = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    rect = (min(a, c), min(b, d), max(a, c), max(b, d))
    return rect if rect[0] < rect[2] and rect[1] < rect[3] else None


# ----------------------------------------------------------------------------- image input


def _image_pages(
    pdf: pikepdf.Pdf, results: Sequence[PageResult], source: bytes, fmt: str
) -> list[_Placed]:
    placed = []
    with Image.open(io.BytesIO(source)) as img:
        for result in results:
            try:
                img.seek(result.index - 1)
            except EOFError:
                raise ValueError(f"page {result.index}: the image has no such page") from None
            placed.append(_image_page(pdf, img, result, source, fmt))
    return placed


def _image_page(
    pdf: pikepdf.Pdf, img: Image.Image, result: PageResult, source: bytes, fmt: str
) -> _Placed:
    # Decoding turned the page upright by its EXIF orientation: the boxes are in that frame.
    orientation = _orientation(img) if fmt in _EXIF_FORMATS else 1
    stored = img.size
    upright = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    if upright != (result.width, result.height):
        raise ValueError(
            f"page {result.index}: the result is {result.width}x{result.height} px, "
            f"the image {upright[0]}x{upright[1]} px"
        )
    xdpi, ydpi = _resolution(img)
    if orientation in (5, 6, 7, 8):
        xdpi, ydpi = ydpi, xdpi
    sx, sy = _POINTS_PER_INCH / xdpi, _POINTS_PER_INCH / ydpi
    width_pt, height_pt = result.width * sx, result.height * sy
    page = pdf.add_blank_page(page_size=(width_pt, height_pt))
    to_user = _Affine(sx, 0.0, 0.0, -sy, 0.0, height_pt)
    if fmt == "jpeg" and img.mode in ("L", "RGB"):
        # The file's own bytes: no second lossy pass. The EXIF turn is drawn, not applied.
        image = _jpeg_xobject(pdf, source, img)
        draw = _image_matrix(stored, orientation, to_user)
    else:
        image = _flate_xobject(pdf, img, orientation if fmt in _EXIF_FORMATS else 1)
        draw = _image_matrix(upright, 1, to_user)
    page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
    page.obj.Contents = pdf.make_stream(b"q " + _numbers(_matrix(draw)) + b" cm /Im0 Do Q\n")
    return page, result, to_user


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        return value if isinstance(value, int) and 1 <= value <= 8 else 1
    except Exception:
        # As decoding does: a broken EXIF block costs the orientation, not the page.
        return 1


def _resolution(img: Image.Image) -> tuple[float, float]:
    dpi = img.info.get("dpi")
    if dpi is None:
        return (DEFAULT_IMAGE_DPI, DEFAULT_IMAGE_DPI)
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return (DEFAULT_IMAGE_DPI, DEFAULT_IMAGE_DPI)
    # A 0 or a 1 is a placeholder, not a resolution (a page a metre wide is no scan), and
    # neither is one no scanner reaches.
    if not (10 <= x <= 10000 and 10 <= y <= 10000):
        return (DEFAULT_IMAGE_DPI, DEFAULT_IMAGE_DPI)
    return (x, y)


def _image_matrix(stored: tuple[int, int], orientation: int, to_user: _Affine) -> _Affine:
    """The ``cm`` that draws an image of ``stored`` pixels, stored turned as EXIF
    ``orientation`` says, upright on the page whose pixels ``to_user`` maps."""
    w, h = stored

    def upright(sx: float, sy: float) -> tuple[float, float]:
        # Where a stored pixel lands once turned, as Pillow's exif_transpose turns it.
        return {
            1: (sx, sy),
            2: (w - sx, sy),
            3: (w - sx, h - sy),
            4: (sx, h - sy),
            5: (sy, sx),
            6: (h - sy, sx),
            7: (h - sy, w - sx),
            8: (sy, w - sx),
        }[orientation]

    def unit(u: float, v: float) -> tuple[float, float]:
        # An image's unit square has its first row at the top (v = 1).
        return to_user(*upright(u * w, (1 - v) * h))

    return _Affine.through(unit(0, 0), unit(1, 0), unit(0, 1))


def _jpeg_xobject(pdf: pikepdf.Pdf, source: bytes, img: Image.Image) -> pikepdf.Stream:
    stream = pikepdf.Stream(pdf, source)
    stream.Type = pikepdf.Name.XObject
    stream.Subtype = pikepdf.Name.Image
    stream.Width, stream.Height = img.size
    stream.ColorSpace = pikepdf.Name.DeviceGray if img.mode == "L" else pikepdf.Name.DeviceRGB
    stream.BitsPerComponent = 8
    stream.Filter = pikepdf.Name.DCTDecode
    return stream


def _flate_xobject(pdf: pikepdf.Pdf, img: Image.Image, orientation: int) -> pikepdf.Stream:
    frame = img.copy()
    if orientation != 1:
        frame = ImageOps.exif_transpose(frame)
    if frame.mode == "1":
        # Bilevel scans stay one bit a pixel (Pillow packs rows MSB first, 1 white, as PDF).
        data, space, bits = frame.tobytes(), pikepdf.Name.DeviceGray, 1
    else:
        frame = _flatten(frame)
        space = pikepdf.Name.DeviceGray if frame.mode == "L" else pikepdf.Name.DeviceRGB
        data, bits = frame.tobytes(), 8
    stream = pikepdf.Stream(pdf, zlib.compress(data, 6))
    stream.Type = pikepdf.Name.XObject
    stream.Subtype = pikepdf.Name.Image
    stream.Width, stream.Height = frame.size
    stream.ColorSpace = space
    stream.BitsPerComponent = bits
    stream.Filter = pikepdf.Name.FlateDecode
    return stream


def _flatten(img: Image.Image) -> Image.Image:
    """8-bit grey or RGB as decoding sees the page: transparency over white paper."""
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or img.has_transparency_data:
        rgba = img.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return rgb
    if img.mode.startswith("I;16"):
        return img.point(lambda v: v / 256).convert("L")  # the high byte, as decoding keeps
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")


# ------------------------------------------------------------------------------ text layer


def _characters(pages: Sequence[PageResult]) -> list[str]:
    seen: dict[str, None] = {" ": None}
    for page in pages:
        for _, words in lines_with_words(page):
            for word in words:
                seen.update(dict.fromkeys(word.text))
    return list(seen)


class _Font:
    """The glyphless Type0 font: CID ``n`` (from 1) is the ``n``-th distinct character."""

    def __init__(self, characters: list[str]) -> None:
        if len(characters) >= _MAX_CID:
            raise ValueError(f"{len(characters)} distinct characters: at most {_MAX_CID - 1}")
        self.cids = {char: cid for cid, char in enumerate(characters, start=1)}

    def encode(self, text: str) -> bytes:
        return b"".join(self.cids[char].to_bytes(2, "big") for char in text)

    def add_to(self, pdf: pikepdf.Pdf) -> pikepdf.Object:
        program = pdf.make_stream(_glyphless_truetype())
        descriptor = pdf.make_indirect(
            pikepdf.Dictionary(
                Type=pikepdf.Name.FontDescriptor,
                FontName=pikepdf.Name("/" + _FONT_NAME),
                Flags=5,  # fixed pitch, symbolic: no standard encoding to look glyphs up in
                FontBBox=[0, 0, _ADVANCE, _UNITS_PER_EM],
                ItalicAngle=0,
                # The whole em above the baseline: a word's box is exactly its font size high.
                Ascent=_UNITS_PER_EM,
                Descent=0,
                CapHeight=_UNITS_PER_EM,
                StemV=80,
                FontFile2=program,
            )
        )
        # Every CID shows glyph 1, the box.
        cid_to_gid = pdf.make_stream(b"\x00\x00" + b"\x00\x01" * len(self.cids))
        cid_font = pdf.make_indirect(
            pikepdf.Dictionary(
                Type=pikepdf.Name.Font,
                Subtype=pikepdf.Name.CIDFontType2,
                BaseFont=pikepdf.Name("/" + _FONT_NAME),
                CIDSystemInfo=pikepdf.Dictionary(
                    Registry=pikepdf.String("Adobe"),
                    Ordering=pikepdf.String("Identity"),
                    Supplement=0,
                ),
                FontDescriptor=descriptor,
                DW=_ADVANCE,
                CIDToGIDMap=cid_to_gid,
            )
        )
        return pdf.make_indirect(
            pikepdf.Dictionary(
                Type=pikepdf.Name.Font,
                Subtype=pikepdf.Name.Type0,
                BaseFont=pikepdf.Name("/" + _FONT_NAME),
                Encoding=pikepdf.Name("/Identity-H"),
                DescendantFonts=[cid_font],
                ToUnicode=pdf.make_stream(self._to_unicode()),
            )
        )

    def _to_unicode(self) -> bytes:
        entries = [
            f"<{cid:04X}> <{char.encode('utf-16-be').hex().upper()}>"
            for char, cid in self.cids.items()
        ]
        blocks = []
        for start in range(0, len(entries), 100):  # a bfchar block holds at most 100
            chunk = entries[start : start + 100]
            blocks.append(f"{len(chunk)} beginbfchar\n" + "\n".join(chunk) + "\nendbfchar")
        return (
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
            "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
            + "\n".join(blocks)
            + "\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
        ).encode("ascii")


@functools.cache
def _glyphless_truetype() -> bytes:
    """A TrueType font whose glyph 1 is a box filling its advance (half an em) and the em
    above the baseline, nothing below. Built once per process; about 600 bytes.

    Never painted (render mode 3), the outline is there for its extent: PDFium, for one,
    drops a text object whose glyphs have no area, and a word running up or down the page
    (a turned page's) has none across.
    """
    builder = FontBuilder(_UNITS_PER_EM, isTTF=True)
    names = [".notdef", "glyph1"]
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({0x20: "glyph1"})
    pen = TTGlyphPen(None)
    pen.moveTo((0, 0))
    pen.lineTo((0, _UNITS_PER_EM))
    pen.lineTo((_ADVANCE, _UNITS_PER_EM))
    pen.lineTo((_ADVANCE, 0))
    pen.closePath()
    box = pen.glyph()
    builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "glyph1": box})
    builder.setupHorizontalMetrics({name: (_ADVANCE, 0) for name in names})
    builder.setupHorizontalHeader(ascent=_UNITS_PER_EM, descent=0)
    builder.setupNameTable({"familyName": _FONT_NAME, "styleName": "Regular"})
    builder.setupOS2(
        sTypoAscender=_UNITS_PER_EM,
        sTypoDescender=0,
        usWinAscent=_UNITS_PER_EM,
        usWinDescent=0,
    )
    builder.setupPost()
    out = io.BytesIO()
    builder.save(out)
    return out.getvalue()


def _add_font(page: pikepdf.Page, font: pikepdf.Object) -> pikepdf.Name:
    """Put ``font`` in the page's resources under a name the page does not use yet.

    The page gets resource and font dictionaries of its own (copies holding the same entries):
    one the page inherits or shares with other pages is left as it was.
    """
    resources = _inherited(page.obj, "/Resources")
    entries = dict(resources.items()) if isinstance(resources, pikepdf.Dictionary) else {}
    fonts = entries.get("/Font")
    font_entries = dict(fonts.items()) if isinstance(fonts, pikepdf.Dictionary) else {}
    n = 0
    while f"/OCRText{n}" in font_entries:
        n += 1
    name = pikepdf.Name(f"/OCRText{n}")
    font_entries[str(name)] = font
    entries["/Font"] = pikepdf.Dictionary(font_entries)
    page.obj.Resources = pikepdf.Dictionary(entries)
    return name


def _text_layer(
    result: PageResult, to_user: _Affine, font_name: pikepdf.Name, font: _Font
) -> bytes:
    ops = [b"BT", b"3 Tr"]
    for _, words in lines_with_words(result):
        for n, word in enumerate(words, start=1):
            placed = _word_matrix(word.box, to_user)
            if placed is None:
                continue
            matrix, width, height = placed
            text = word.text if n == len(words) else word.text + " "
            # Tz stretches the word's own characters to the box; the space is extra.
            scale = 100 * width / (len(word.text) * height * _ADVANCE / _UNITS_PER_EM)
            ops.append(
                b"%s %s Tf %s Tm %s Tz <%s> Tj"
                % (
                    font_name.unparse(),
                    _numbers([height]),
                    _numbers(_matrix(matrix)),
                    _numbers([scale]),
                    font.encode(text).hex().encode("ascii"),
                )
            )
    ops.append(b"ET")
    return b"\n".join(ops) + b"\n"


def _word_matrix(box: Box, to_user: _Affine) -> tuple[_Affine, float, float] | None:
    """The text matrix that sets a word on its box's bottom edge and runs it along the box,
    and the box's width and height, in points; None for a box with no area."""
    tl, tr, br, bl = (to_user(x, y) for x, y in box)
    # Along the text: the mean of the top and bottom edges; up: of the left and right ones.
    ux = ((tr[0] - tl[0]) + (br[0] - bl[0])) / 2
    uy = ((tr[1] - tl[1]) + (br[1] - bl[1])) / 2
    vx = ((tl[0] - bl[0]) + (tr[0] - br[0])) / 2
    vy = ((tl[1] - bl[1]) + (tr[1] - br[1])) / 2
    width = math.hypot(ux, uy)
    if width < 1e-3:
        return None
    ax, ay = ux / width, uy / width
    # The box's height is how far its top lies from its baseline, square to the text.
    height = ax * vy - ay * vx
    origin = bl
    if height < 0:
        # Corners that come mirrored (top below bottom): the word still reads left to right,
        # upright, on the edge that is lower on the page.
        origin, height = tl, -height
    if height < 1e-3:
        return None
    return _Affine(ax, ay, -ay, ax, origin[0], origin[1]), width, height


def _matrix(m: _Affine) -> list[float]:
    return [m.a, m.b, m.c, m.d, m.e, m.f]


def _numbers(values: Iterable[float]) -> bytes:
    out = []
    for value in values:
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        out.append("0" if text in ("", "-0") else text)
    return " ".join(out).encode("ascii")
