"""hOCR, ALTO and the searchable PDF (``ocrserve.formats``).

Results are built by hand, with known words and boxes, over the committed fixtures; one test
runs the engine. The ALTO schema is the official 4.4 one (``fixtures/alto-4-4.xsd``).
"""

from __future__ import annotations

import ctypes
import io
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from lxml import etree
from PIL import Image

from ocrserve import Engine
from ocrserve.decode import DecodeLimits, decode_bytes
from ocrserve.formats import (
    FORMATS,
    Source,
    by_media_type,
    searchable_pdf,
    write_alto,
    write_hocr,
)
from ocrserve.types import Box, Line, PageResult, Word

FIXTURES = Path(__file__).parent / "fixtures"
XHTML = "{http://www.w3.org/1999/xhtml}"
ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"

# The ALTO schema imports XLink's from the Library of Congress's site, for the one attribute
# group (xlink:simpleLink) that ALTO's blocks may carry; we never write it. The tests reach
# no network: this stands in for that file, declaring the group as it does.
XLINK_URL = "http://www.loc.gov/standards/xlink/xlink.xsd"
XLINK_XSD = b"""<?xml version="1.0" encoding="UTF-8"?>
<schema xmlns="http://www.w3.org/2001/XMLSchema" xmlns:xlink="http://www.w3.org/1999/xlink"
        targetNamespace="http://www.w3.org/1999/xlink">
  <attribute name="href" type="anyURI"/>
  <attribute name="role" type="string"/>
  <attribute name="arcrole" type="string"/>
  <attribute name="title" type="string"/>
  <attribute name="show" type="string"/>
  <attribute name="actuate" type="string"/>
  <attributeGroup name="simpleLink">
    <attribute name="type" type="string" fixed="simple" form="qualified"/>
    <attribute ref="xlink:href" use="optional"/>
    <attribute ref="xlink:role" use="optional"/>
    <attribute ref="xlink:arcrole" use="optional"/>
    <attribute ref="xlink:title" use="optional"/>
    <attribute ref="xlink:show" use="optional"/>
    <attribute ref="xlink:actuate" use="optional"/>
  </attributeGroup>
</schema>
"""


def rect(x0: float, y0: float, x1: float, y1: float) -> Box:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def line(*words: tuple[str, Box], confidence: float = 0.9) -> Line:
    parts = tuple(Word(text, confidence, box) for text, box in words)
    xs = [x for w in parts for x, _ in w.box]
    ys = [y for w in parts for _, y in w.box]
    return Line(
        " ".join(w.text for w in parts),
        confidence,
        rect(min(xs), min(ys), max(xs), max(ys)),
        parts,
    )


def page(width: int, height: int, *lines: Line, index: int = 1) -> PageResult:
    text = "\n".join(ln.text for ln in lines)
    return PageResult(index=index, width=width, height=height, lines=lines, text=text)


def sample_page() -> PageResult:
    """Three lines on a 640x480 page: plain words, markup characters, and a line that came
    without word boxes."""
    return page(
        640,
        480,
        line(("Hello", rect(36.4, 92, 130, 120.6)), ("world", rect(140, 92, 250, 120))),
        line(("<a&b>", rect(36, 140, 120, 170)), ('"quoted"', rect(130, 140, 260, 170))),
        Line("中文 一行", 0.75, rect(36, 200, 300, 240)),
    )


def pixel_box(
    page: pdfium.PdfPage, size: tuple[int, int], bbox: tuple[float, ...]
) -> tuple[int, ...]:
    """A user-space box (left, bottom, right, top) in the pixels of the page rendered to
    ``size``, as PDFium itself maps them (/Rotate and the crop box included)."""
    xs, ys = [], []
    for x, y in ((bbox[0], bbox[1]), (bbox[2], bbox[3])):
        dx, dy = ctypes.c_int(), ctypes.c_int()
        ok = pdfium.raw.FPDF_PageToDevice(
            page.raw, 0, 0, size[0], size[1], 0, x, y, ctypes.byref(dx), ctypes.byref(dy)
        )
        assert ok
        xs.append(dx.value)
        ys.append(dy.value)
    return (min(xs), min(ys), max(xs), max(ys))


def word_pixels(
    pdf: pdfium.PdfDocument, index: int, word: str, size: tuple[int, int]
) -> tuple[int, ...]:
    """The pixel box around the characters of ``word`` found on page ``index``."""
    pg = pdf[index]
    text = pg.get_textpage()
    # PDFium counts characters in UTF-16 code units (its search misses astral characters).
    units = text.get_text_range().encode("utf-16-le")
    found = units.find(word.encode("utf-16-le"))
    assert found >= 0 and found % 2 == 0, f"{word!r} not in {text.get_text_range()!r}"
    start, count = found // 2, len(word.encode("utf-16-le")) // 2
    boxes = [pixel_box(pg, size, text.get_charbox(i)) for i in range(start, start + count)]
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def assert_near(found: tuple[int, ...], expected: tuple[float, ...]) -> None:
    # Two pixels of rounding, and PDFium's own padding: it puts the top of a CID font's
    # glyph 1/64 em higher than the font says (CPDF_CIDFont::GetCharBBox).
    tolerance = 2 + max(expected[2] - expected[0], expected[3] - expected[1]) / 64
    assert all(abs(a - b) <= tolerance for a, b in zip(found, expected, strict=True)), (
        found,
        expected,
    )


def page_text(pdf: pdfium.PdfDocument, index: int) -> str:
    return " ".join(pdf[index].get_textpage().get_text_range().split())


# ---------------------------------------------------------------------------------- registry


def test_registry_names_media_types_and_writers() -> None:
    assert set(FORMATS) == {"hocr", "alto", "pdf"}
    assert {f.media_type for f in FORMATS.values()} == {
        "text/vnd.hocr+html",
        "application/alto+xml",
        "application/pdf",
    }
    assert by_media_type("Application/PDF; q=0.9") is FORMATS["pdf"]
    assert by_media_type("text/html") is None
    source = Source(data=(FIXTURES / "phototest.tif").read_bytes(), format="tiff", filename="p.tif")
    for fmt in FORMATS.values():
        out = fmt.write([sample_page()], source, system="test-engine")
        assert isinstance(out, bytes) and out


# -------------------------------------------------------------------------------------- hOCR


def test_hocr_has_pages_lines_words_and_their_boxes() -> None:
    doc = write_hocr([sample_page()], filename='scan "1".tif', system="ocrserve test")
    root = etree.fromstring(doc.encode())
    meta = {m.get("name"): m.get("content") for m in root.iter(f"{XHTML}meta") if m.get("name")}
    assert meta["ocr-system"] == "ocrserve test"
    assert set(meta["ocr-capabilities"].split()) >= {"ocr_page", "ocr_line", "ocrx_word"}
    (div,) = root.iter(f"{XHTML}div")
    assert div.get("class") == "ocr_page"
    assert div.get("title") == 'image "scan \\"1\\".tif"; bbox 0 0 640 480; ppageno 0'
    lines = [s for s in div.iter(f"{XHTML}span") if s.get("class") == "ocr_line"]
    words = [s for s in div.iter(f"{XHTML}span") if s.get("class") == "ocrx_word"]
    assert len(lines) == 3
    assert [w.text for w in words] == ["Hello", "world", "<a&b>", '"quoted"', "中文 一行"]
    # Boxes are whole pixels around the quad, confidence 0-100.
    assert words[0].get("title") == "bbox 36 92 130 121; x_wconf 90"
    assert lines[0].get("title") == "bbox 36 92 250 121"
    assert words[4].get("title") == "bbox 36 200 300 240; x_wconf 75"
    # A space between the words of a line: the page reads as text.
    assert "".join(lines[0].itertext()) == "Hello world"


def test_hocr_drops_characters_xml_cannot_hold() -> None:
    bad = page(100, 50, line(("a\x00b\x1f", rect(1, 1, 50, 20)), ("\x0c", rect(60, 1, 90, 20))))
    root = etree.fromstring(write_hocr([bad]).encode())
    words = [s.text for s in root.iter(f"{XHTML}span") if s.get("class") == "ocrx_word"]
    assert words == ["ab"]


# -------------------------------------------------------------------------------------- ALTO


@pytest.fixture(scope="module")
def alto_schema() -> etree.XMLSchema:
    class LocalXLink(etree.Resolver):
        def resolve(self, url: str, pubid: str, context: object) -> object:
            return self.resolve_string(XLINK_XSD, context) if url == XLINK_URL else None

    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(LocalXLink())
    return etree.XMLSchema(etree.parse(str(FIXTURES / "alto-4-4.xsd"), parser))


def test_alto_is_valid_and_has_lines_words_and_boxes(alto_schema: etree.XMLSchema) -> None:
    second = page(320, 200, index=2)  # a page where nothing was found
    doc = write_alto([sample_page(), second], filename="scan.tif", system="ocrserve test")
    root = etree.fromstring(doc.encode())
    alto_schema.assertValid(root)
    assert root.findtext(f"{ALTO}Description/{ALTO}MeasurementUnit") == "pixel"
    name = f"{ALTO}Description/{ALTO}Processing/{ALTO}processingSoftware/{ALTO}softwareName"
    assert root.findtext(name) == "ocrserve test"
    pages = root.findall(f"{ALTO}Layout/{ALTO}Page")
    assert [(p.get("WIDTH"), p.get("HEIGHT"), p.get("PHYSICAL_IMG_NR")) for p in pages] == [
        ("640", "480", "1"),
        ("320", "200", "2"),
    ]
    lines = pages[0].findall(f"{ALTO}PrintSpace/{ALTO}TextBlock/{ALTO}TextLine")
    assert len(lines) == 3
    first = lines[0]
    assert [child.tag.removeprefix(ALTO) for child in first] == ["String", "SP", "String"]
    hello = first[0]
    assert {k: hello.get(k) for k in ("CONTENT", "HPOS", "VPOS", "WIDTH", "HEIGHT", "WC")} == {
        "CONTENT": "Hello",
        "HPOS": "36",
        "VPOS": "92",
        "WIDTH": "94",
        "HEIGHT": "29",
        "WC": "0.9000",
    }
    contents = [s.get("CONTENT") for s in pages[0].iter(f"{ALTO}String")]
    assert contents == ["Hello", "world", "<a&b>", '"quoted"', "中文 一行"]
    assert pages[1].find(f"{ALTO}PrintSpace/{ALTO}TextBlock") is None


def test_alto_schema_rejects_what_it_should(alto_schema: etree.XMLSchema) -> None:
    # The check has teeth: a String without CONTENT is refused.
    root = etree.fromstring(write_alto([sample_page()]).encode())
    next(root.iter(f"{ALTO}String")).attrib.pop("CONTENT")
    assert not alto_schema.validate(root)


# ---------------------------------------------------------------------------- searchable PDF


def test_pdf_from_a_tiff_has_the_image_and_the_words_where_they_are() -> None:
    data = (FIXTURES / "phototest.tif").read_bytes()
    doc = decode_bytes(data)
    result = page(
        640,
        480,
        line(("This", rect(36, 92, 96, 122)), ("is", rect(106, 92, 128, 122))),
        line(("中文", rect(40, 300, 140, 340)), ("𝐀𝐁", rect(160, 300, 230, 340))),
    )
    out = searchable_pdf([result], data, doc.format)
    pdf = pdfium.PdfDocument(out)
    assert len(pdf) == 1
    # phototest.tif says 200 dpi: 640 x 480 px is 230.4 x 172.8 pt.
    assert pdf[0].get_size() == pytest.approx((230.4, 172.8), abs=0.01)
    assert page_text(pdf, 0) == "This is 中文 𝐀𝐁"
    with pikepdf.open(io.BytesIO(out)) as written:
        (image,) = written.pages[0].get_images().values()
        assert (image.Width, image.Height, image.BitsPerComponent) == (640, 480, 1)
        # Lossless: the image in the PDF is the page the engine read, pixel for pixel.
        pixels = np.asarray(pikepdf.PdfImage(image).as_pil_image().convert("RGB"))
        assert np.array_equal(pixels, doc.pages[0].image)
    # Drawn at 200 dpi the page is the image again (give or take PDFium's resampling: it
    # holds 172.8 pt as a float a hair over, and draws a 481st row).
    rendered = pdf[0].render(scale=200 / 72).to_numpy()[:480, :640]
    assert np.abs(rendered.astype(int) - doc.pages[0].image.astype(int)).mean() < 8
    for word, box in (
        ("This", (36, 92, 96, 122)),
        ("中文", (40, 300, 140, 340)),
        ("𝐀𝐁", (160, 300, 230, 340)),
    ):
        assert_near(word_pixels(pdf, 0, word, (640, 480)), box)


def test_pdf_from_a_jpeg_embeds_the_file_as_it_is() -> None:
    data = (FIXTURES / "zh_doc_certificate.jpeg").read_bytes()
    result = page(476, 368, line(("荣誉证书", rect(150, 40, 330, 90))))
    out = searchable_pdf([result], data, "jpeg")
    with pikepdf.open(io.BytesIO(out)) as written:
        (image,) = written.pages[0].get_images().values()
        assert image.Filter == pikepdf.Name.DCTDecode
        assert image.read_raw_bytes() == data
    pdf = pdfium.PdfDocument(out)
    assert page_text(pdf, 0) == "荣誉证书"
    assert_near(word_pixels(pdf, 0, "荣誉证书", (476, 368)), (150, 40, 330, 90))


@pytest.mark.parametrize("orientation", [3, 6, 8, 5])
def test_pdf_from_a_turned_jpeg_draws_it_upright(orientation: int) -> None:
    src = Image.open(FIXTURES / "en_doc_paragraph.jpg")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    src.save(buf, "JPEG", quality=95, exif=exif, dpi=(150, 150))
    data = buf.getvalue()
    upright = decode_bytes(data).pages[0]
    result = page(upright.width, upright.height, line(("word", rect(10, 20, 60, 40))))
    out = searchable_pdf([result], data, "jpeg")
    pdf = pdfium.PdfDocument(out)
    rendered = pdf[0].render(scale=150 / 72).to_numpy()[: upright.height, : upright.width]
    assert rendered.shape == upright.image.shape

    # Upright, not mirrored nor upside down: much nearer the decoded page than any of those
    # (not equal: PDFium resamples, holding the page size as a float a hair over).
    def distance(a: np.ndarray) -> float:
        return float(np.abs(rendered.astype(int) - a.astype(int)).mean())

    image = upright.image
    turned = [np.flipud(image), np.fliplr(image), np.flipud(np.fliplr(image))]
    assert distance(image) < 0.5 * min(distance(t) for t in turned)
    assert_near(word_pixels(pdf, 0, "word", (upright.width, upright.height)), (10, 20, 60, 40))


def test_pdf_from_a_pdf_keeps_its_pages_and_adds_the_words() -> None:
    data = (FIXTURES / "irs_f1040nr.pdf").read_bytes()
    dpi = 100
    doc = decode_bytes(data, DecodeLimits(pdf_dpi=dpi))
    first, fourth = doc.pages[0], doc.pages[3]
    results = [
        page(
            first.width,
            first.height,
            line(("Zanzibar", rect(300, 400, 420, 430)), ("漢字", rect(430, 400, 490, 430))),
        ),
        page(fourth.width, fourth.height, line(("Quokka", rect(50, 60, 150, 80))), index=4),
    ]
    out = searchable_pdf(results, data, "pdf", dpi)
    before, after = pdfium.PdfDocument(data), pdfium.PdfDocument(out)
    assert len(after) == len(before) == 5
    for i in range(5):
        assert after[i].get_size() == before[i].get_size()
    # The page's own text is still there, ours after it; untouched pages are as they were.
    assert page_text(before, 0) in page_text(after, 0)
    assert page_text(after, 0).endswith("Zanzibar 漢字")
    assert page_text(after, 3).endswith("Quokka")
    assert page_text(after, 1) == page_text(before, 1)
    # Invisible: the page draws exactly as before.
    scale = dpi / 72
    assert np.array_equal(
        after[0].render(scale=scale).to_numpy(), before[0].render(scale=scale).to_numpy()
    )
    assert_near(
        word_pixels(after, 0, "Zanzibar", (first.width, first.height)), (300, 400, 420, 430)
    )
    assert_near(word_pixels(after, 3, "Quokka", (fourth.width, fourth.height)), (50, 60, 150, 80))
    # The original page objects, content streams and all, are kept, not redrawn.
    with pikepdf.open(io.BytesIO(data)) as original, pikepdf.open(io.BytesIO(out)) as written:
        old = pikepdf.Page(original.pages[0])
        new = pikepdf.Page(written.pages[0])
        old_streams = [s.read_bytes() for s in _streams(old.obj.Contents)]
        new_streams = [s.read_bytes() for s in _streams(new.obj.Contents)]
        assert new_streams[1:-1] == old_streams


def _streams(contents: pikepdf.Object) -> list[pikepdf.Stream]:
    return list(contents) if isinstance(contents, pikepdf.Array) else [contents]


@pytest.mark.parametrize("rotate", [0, 90, 180, 270, -90])
def test_pdf_words_follow_rotate_and_crop_box(rotate: int) -> None:
    # A black bar on a page whose media box and crop box are off the origin and whose
    # /Rotate is inherited from the page tree: the word set on the bar's pixels, as PDFium
    # renders them, lands on the bar.
    pdf = pikepdf.new()
    pg = pdf.add_blank_page(page_size=(612, 792))
    pg.obj.MediaBox = pikepdf.Array([-50, -30, 562, 762])
    pg.obj.CropBox = pikepdf.Array([20, 40, 500, 700])
    pg.obj.Contents = pdf.make_stream(b"0 g 100 500 200 40 re f")
    pdf.Root.Pages.Rotate = rotate
    buf = io.BytesIO()
    pdf.save(buf)
    data = buf.getvalue()

    dpi = 72
    decoded = decode_bytes(data, DecodeLimits(pdf_dpi=dpi)).pages[0]
    dark = np.argwhere(decoded.image[:, :, 0] < 128)
    (y0, x0), (y1, x1) = dark.min(axis=0), dark.max(axis=0) + 1
    result = page(decoded.width, decoded.height, line(("bar", rect(x0, y0, x1, y1))))
    out = pdfium.PdfDocument(searchable_pdf([result], data, "pdf", dpi))
    assert page_text(out, 0) == "bar"
    assert_near(word_pixels(out, 0, "bar", (decoded.width, decoded.height)), (x0, y0, x1, y1))


def test_pdf_refuses_results_that_do_not_fit_the_source() -> None:
    data = (FIXTURES / "phototest.tif").read_bytes()
    with pytest.raises(ValueError, match="640x480"):
        searchable_pdf([page(600, 480)], data, "tiff")
    with pytest.raises(ValueError, match="no such page"):
        searchable_pdf([page(640, 480, index=2)], data, "tiff")
    pdf = (FIXTURES / "irs_f1040nr.pdf").read_bytes()
    with pytest.raises(ValueError, match="5 pages"):
        searchable_pdf([page(100, 100, index=6)], pdf, "pdf", 200)


def test_pdf_from_the_engine_extracts_as_the_result_reads(engine: Engine) -> None:
    data = (FIXTURES / "phototest.tif").read_bytes()
    doc = decode_bytes(data)
    (result,) = engine.run(doc.pages)
    out = pdfium.PdfDocument(searchable_pdf([result], data, doc.format))
    expected = " ".join(" ".join(ln.text for ln in result.lines).split())
    assert page_text(out, 0) == expected
