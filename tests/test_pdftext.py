"""The PDF text layer: its words and boxes against the rendered page, and the verdict on it.

Real pages come from the committed IRS form; the broken layers (a scan with a stamped
header, a font without a Unicode map) are built here, from that form or by hand.
"""

from __future__ import annotations

import ctypes
import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image

from ocrserve.decode import DecodeLimits, decode_bytes
from ocrserve.pdftext import LayerRule, TextLayer, judge, read_text_layer
from ocrserve.types import Box, Line

FIXTURES = Path(__file__).parent / "fixtures"
IRS = (FIXTURES / "irs_f1040nr.pdf").read_bytes()
DPI = 200
SCALE = DPI / 72


def layer_of(data: bytes, index: int = 0, dpi: int = DPI) -> TextLayer:
    pdf = pdfium.PdfDocument(data)
    try:
        return read_text_layer(pdf, index, dpi)
    finally:
        pdf.close()


def render(data: bytes, index: int = 0) -> npt.NDArray[np.uint8]:
    page = decode_bytes(data, DecodeLimits(pdf_dpi=DPI)).pages[index].image
    gray: npt.NDArray[np.uint8] = page.min(axis=2)
    return gray


def line(layer: TextLayer, text: str) -> Line:
    found = [ln for ln in layer.lines if ln.text == text]
    assert found, f"no line {text!r} in {[ln.text for ln in layer.lines][:20]}"
    return found[0]


def bounds(box: Box) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return min(xs), min(ys), max(xs), max(ys)


def dark_share(gray: npt.NDArray[np.uint8], box: Box) -> float:
    x0, y0, x1, y1 = (round(v) for v in bounds(box))
    return float((gray[y0:y1, x0:x1] < 128).mean())


def tiny_pdf(font: str, content: bytes, rotate: int = 0) -> bytes:
    """A one-page Letter PDF with one font (/F1) and one content stream."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Rotate %d"
        b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>" % rotate,
        font.encode(),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


HELVETICA = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def scanned(page_text: list[tuple[str, Box]], invisible: bool) -> bytes:
    """IRS page 1 as a 100-dpi scan in a PDF, with ``page_text`` set over it."""
    image = Image.fromarray(render(IRS)[::2, ::2])
    buf = io.BytesIO()
    image.save(buf, "PDF", resolution=DPI / 2)
    pdf = pdfium.PdfDocument(buf.getvalue())
    page = pdf[0]
    height_pt = page.get_height()
    for text, box in page_text:
        x0, _, x1, y1 = bounds(box)
        size = (y1 - bounds(box)[1]) / SCALE * 0.8
        obj = pdfium_c.FPDFPageObj_NewTextObj(pdf, b"Helvetica", ctypes.c_float(size))
        units = np.frombuffer(text.encode("utf-16-le") + b"\0\0", dtype=np.uint16)
        pdfium_c.FPDFText_SetText(obj, (ctypes.c_ushort * len(units))(*units.tolist()))
        if invisible:
            pdfium_c.FPDFTextObj_SetTextRenderMode(obj, pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE)
        # stretched along the line, as an OCR layer sets a line over the scanned glyphs
        left, bottom, right, top = (ctypes.c_float() for _ in range(4))
        pdfium_c.FPDFPageObj_GetBounds(obj, left, bottom, right, top)
        stretch = (x1 - x0) / SCALE / max(right.value - left.value, 1e-3)
        pdfium_c.FPDFPageObj_Transform(obj, stretch, 0, 0, 1, x0 / SCALE, height_pt - y1 / SCALE)
        pdfium_c.FPDFPage_InsertObject(page, obj)
    assert pdfium_c.FPDFPage_GenerateContent(page)
    out = io.BytesIO()
    pdf.save(out)
    page.close()
    pdf.close()
    return out.getvalue()


@pytest.fixture(scope="module")
def irs1() -> TextLayer:
    return layer_of(IRS)


# --------------------------------------------------------------------------- real pages


def test_irs_page_reads_known_lines_where_they_are_rendered(irs1: TextLayer) -> None:
    assert irs1.usable, irs1.reason
    assert (irs1.width, irs1.height) == (1700, 2200)
    gray = render(IRS)
    assert gray.shape == (irs1.height, irs1.width)
    for text in (
        "U.S. Nonresident Alien Income Tax Return",
        "OMB No. 1545-0074",
        "Department of the Treasury",
        "Internal Revenue Service",
    ):
        box = line(irs1, text).box
        assert dark_share(gray, box) > 0.08, text
        # tight along the line: ink at both ends of the box, none in the strips beside it
        x0, y0, x1, y1 = (round(v) for v in bounds(box))
        rows = gray[y0:y1] < 128
        assert rows[:, x0 : x0 + 4].any() and rows[:, x1 - 4 : x1].any(), text
        assert not rows[:, x0 - 8 : x0 - 1].any() and not rows[:, x1 + 1 : x1 + 8].any(), text
    assert "U.S. Nonresident Alien Income Tax Return" in irs1.text


def test_word_box_is_within_two_pixels_of_pdfium_char_boxes(irs1: TextLayer) -> None:
    words = [w for ln in irs1.lines for w in ln.words if w.text == "Nonresident"]
    assert len(words) == 1
    pdf = pdfium.PdfDocument(IRS)
    page = pdf[0]
    textpage = page.get_textpage()
    # char indices (search() answers in text indices, which PDFium's inserted chars shift)
    chars = "".join(
        chr(pdfium_c.FPDFText_GetUnicode(textpage, i)) for i in range(textpage.count_chars())
    )
    start, count = chars.index("Nonresident"), len("Nonresident")
    boxes = [textpage.get_charbox(i, loose=True) for i in range(start, start + count)]
    # this page's CropBox starts at x = -34.5 pt: the render, hence the boxes, start there
    left_pt, _, _, top_pt = page.get_cropbox()
    assert left_pt < -30
    textpage.close()
    page.close()
    pdf.close()
    want = (
        (min(b[0] for b in boxes) - left_pt) * SCALE,
        (top_pt - max(b[3] for b in boxes)) * SCALE,
        (max(b[2] for b in boxes) - left_pt) * SCALE,
        (top_pt - min(b[1] for b in boxes)) * SCALE,
    )
    got = bounds(words[0].box)
    assert all(abs(g - w) < 2 for g, w in zip(got, want, strict=True)), (got, want)
    assert words[0].confidence == 1.0


def test_lines_split_into_words_at_spaces(irs1: TextLayer) -> None:
    title = line(irs1, "U.S. Nonresident Alien Income Tax Return")
    assert [w.text for w in title.words] == [
        "U.S.",
        "Nonresident",
        "Alien",
        "Income",
        "Tax",
        "Return",
    ]
    lefts = [bounds(w.box)[0] for w in title.words]
    assert lefts == sorted(lefts)
    tx0, ty0, tx1, ty1 = bounds(title.box)
    for w in title.words:
        x0, y0, x1, y1 = bounds(w.box)
        assert tx0 - 0.01 <= x0 < x1 <= tx1 + 0.01 and ty0 - 0.01 <= y0 < y1 <= ty1 + 0.01


def test_all_pages_usable_and_landscape_page_sized_as_rendered() -> None:
    pdf = pdfium.PdfDocument(IRS)
    try:
        layers = [read_text_layer(pdf, i, 100) for i in range(len(pdf))]
    finally:
        pdf.close()
    assert all(layer.usable for layer in layers), [layer.reason for layer in layers]
    assert (layers[3].width, layers[3].height) == (1100, 850)  # page 4 is landscape
    assert all(layer.bad_chars / layer.chars < 0.01 for layer in layers)


# --------------------------------------------------------------------------- geometry


def test_reading_order_is_top_down_whatever_the_stream_order() -> None:
    # Drawn bottom line first: the stream order is not the reading order.
    content = (
        b"BT /F1 14 Tf 72 600 Td (third line here) Tj ET "
        b"BT /F1 14 Tf 72 700 Td (first line here) Tj ET "
        b"BT /F1 14 Tf 72 650 Td (second line here) Tj ET"
    )
    layer = layer_of(tiny_pdf(HELVETICA, content))
    assert layer.usable, layer.reason
    assert layer.text == "first line here\nsecond line here\nthird line here"
    assert [w.text for w in layer.lines[1].words] == ["second", "line", "here"]
    tops = [bounds(ln.box)[1] for ln in layer.lines]
    assert tops == sorted(tops)
    # the baseline 700 pt up a 792 pt page is 92 pt from the top, 255.6 px at 200 dpi: the
    # box reaches up by the font's ascent (about 0.9 of 14 pt) and down by its descent
    x0, y0, _, y1 = bounds(layer.lines[0].box)
    assert 210 < y0 < 230 and 256 < y1 < 270 and abs(x0 - 200) < 2


def test_a_wide_gap_on_one_baseline_makes_two_lines() -> None:
    content = b"BT /F1 12 Tf 72 700 Td (Name) Tj 300 0 Td (Date) Tj ET"
    layer = layer_of(tiny_pdf(HELVETICA, content))
    assert [ln.text for ln in layer.lines] == ["Name", "Date"]


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_rotated_page_boxes_follow_the_rendered_bitmap(irs1: TextLayer, turn: int) -> None:
    pdf = pdfium.PdfDocument(IRS)
    pdf[0].set_rotation(turn)
    buf = io.BytesIO()
    pdf.save(buf)
    pdf.close()
    data = buf.getvalue()
    layer = layer_of(data)
    w, h = irs1.width, irs1.height
    assert (layer.width, layer.height) == ((h, w) if turn in (90, 270) else (w, h))
    text = "U.S. Nonresident Alien Income Tax Return"
    assert text in layer.text
    upright, turned = line(irs1, text).box, line(layer, text).box

    def turn_point(x: float, y: float) -> tuple[float, float]:
        if turn == 90:
            return h - y, x
        if turn == 180:
            return w - x, h - y
        return y, w - x

    # every corner, in the same role (top-left of the text first), where the turn puts it
    for (ux, uy), (tx, ty) in zip(upright, turned, strict=True):
        ex, ey = turn_point(ux, uy)
        assert abs(ex - tx) < 1.5 and abs(ey - ty) < 1.5, (turn, (ux, uy), (tx, ty))
    gray = render(data)
    assert gray.shape == (layer.height, layer.width)
    assert dark_share(gray, turned) > 0.08


# --------------------------------------------------------------------------- verdicts


def test_empty_page_has_no_text() -> None:
    pdf = pdfium.PdfDocument.new()
    pdf.new_page(612, 792).close()
    buf = io.BytesIO()
    pdf.save(buf)
    pdf.close()
    layer = layer_of(buf.getvalue())
    assert (layer.usable, layer.reason, layer.lines, layer.text) == (False, "no text", (), "")


def test_font_without_unicode_map_is_mojibake() -> None:
    # A subset font as PDF producers write them: codes 1, 2, 3... in glyph order, glyph names
    # that say nothing, no /ToUnicode. PDFium can only hand back the codes.
    names = " ".join(f"/g{i}" for i in range(1, 12))
    font = (
        "<< /Type /Font /Subtype /Type1 /BaseFont /ABCDEF+Subset /FirstChar 1 /LastChar 11"
        " /Widths [" + " ".join(["600"] * 11) + "]"
        f" /Encoding << /Type /Encoding /Differences [1 {names}] >> >>"
    )
    content = b"BT /F1 14 Tf 72 700 Td (\x01\x02\x03\x03\x04 \x05\x04\x06\x03\x07) Tj ET"
    layer = layer_of(tiny_pdf(font, content))
    assert not layer.usable
    assert layer.reason.startswith("mojibake: 100.0% of chars"), layer.reason
    assert layer.bad_chars == layer.chars == 10
    # the same words in a font that maps: read as they are
    good = layer_of(tiny_pdf(HELVETICA, b"BT /F1 14 Tf 72 700 Td (Hello World) Tj ET"))
    assert (good.usable, good.text, good.bad_chars) == (True, "Hello World", 0)


def test_scan_with_only_a_header_stamped_on_it_falls_back() -> None:
    irs1 = layer_of(IRS)
    header = [(ln.text, ln.box) for ln in irs1.lines[:3]]
    layer = layer_of(scanned(header, invisible=False))
    assert layer.image_share > 0.95
    assert layer.ink_covered is not None and layer.ink_covered < 0.2
    assert not layer.usable
    assert layer.reason.startswith("scan: text covers only"), layer.reason
    assert irs1.lines[0].text in layer.text  # read, but not to be used


def test_scan_with_a_full_invisible_ocr_layer_is_usable() -> None:
    irs1 = layer_of(IRS)
    layer = layer_of(scanned([(ln.text, ln.box) for ln in irs1.lines], invisible=True))
    assert layer.ink_covered is not None and layer.ink_covered > 0.5
    assert layer.usable, layer.reason
    assert "over a scan" in layer.reason


def test_ligature_glyph_reads_as_its_letters() -> None:
    font = (
        "<< /Type /Font /Subtype /Type1 /BaseFont /Times-Roman"
        " /Encoding << /Type /Encoding /BaseEncoding /WinAnsiEncoding /Differences [1 /fi] >> >>"
    )
    layer = layer_of(tiny_pdf(font, b"BT /F1 14 Tf 72 700 Td (\x01nd it) Tj ET"))
    assert layer.text == "find it"
    assert [w.text for w in layer.lines[0].words] == ["find", "it"]


def test_zero_size_text_is_counted_but_has_no_box() -> None:
    content = b"BT /F1 0 Tf 72 700 Td (hidden) Tj ET BT /F1 12 Tf 72 650 Td (shown) Tj ET"
    layer = layer_of(tiny_pdf(HELVETICA, content))
    assert layer.usable
    assert [ln.text for ln in layer.lines] == ["shown"]


@pytest.mark.parametrize(
    ("measures", "verdict"),
    [
        ({"chars": 0, "bad_chars": 0, "image_share": 0.0, "ink_covered": None}, "no text"),
        ({"chars": 100, "bad_chars": 11, "image_share": 0.0, "ink_covered": None}, "mojibake"),
        ({"chars": 100, "bad_chars": 10, "image_share": 0.0, "ink_covered": None}, "text layer"),
        ({"chars": 100, "bad_chars": 0, "image_share": 0.9, "ink_covered": 0.49}, "scan"),
        ({"chars": 100, "bad_chars": 0, "image_share": 0.9, "ink_covered": 0.5}, "text layer"),
    ],
)
def test_judge_thresholds(measures: dict[str, int | float | None], verdict: str) -> None:
    usable, reason = judge(**measures)  # type: ignore[arg-type]
    assert reason.startswith(verdict)
    assert usable == (verdict == "text layer")
    if measures["bad_chars"]:
        assert not judge(**measures, rule=LayerRule(max_bad_share=0.0))[0]  # type: ignore[arg-type]
