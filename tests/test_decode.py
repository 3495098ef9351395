"""decode: every format, mode, limit and corruption, on real files. No mocks.

Formats Pillow can write are built here from a committed real image; what Pillow cannot write
(a decompression bomb, a 16-bit RGB PNG, an encrypted PDF, a poster-sized PDF page) is built
byte by byte, so the tests need nothing but the committed fixtures.
"""

from __future__ import annotations

import hashlib
import io
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFile

from ocrserve.decode import DecodeLimits, decode_bytes, decode_path, sniff_format
from ocrserve.errors import (
    AspectRatioError,
    CorruptFileError,
    FileTooLargeError,
    InputError,
    PixelBudgetError,
    SideTooLongError,
    TooManyPagesError,
    TooManyPixelsError,
    UnsupportedFormatError,
)

FIXTURES = Path(__file__).parent / "fixtures"
JPEG_FIXTURES = {
    "en_doc_paragraph.jpg": (132, 709),
    "zh_doc_certificate.jpeg": (368, 476),
    "en_line_long_text.jpg": (34, 545),
    "zh_scene_poster_ch_en_num.jpg": (430, 323),
}
IRS_PDF = FIXTURES / "irs_f1040nr.pdf"
ORIENTATION = 0x0112
# Low enough to render the 5-page form in a blink; a letter page is 306x396 at 36 dpi.
FAST_DPI = 36

Array = npt.NDArray[np.uint8]


# ------------------------------------------------------------------------------ builders


def real_image(size: tuple[int, int] | None = None) -> Image.Image:
    img = Image.open(FIXTURES / "en_doc_paragraph.jpg").convert("RGB")
    return img.resize(size) if size else img


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def pil_bgr(data: bytes) -> Array:
    """What Pillow alone makes of ``data``, as BGR: the reference decode."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))[:, :, ::-1]


def single_page(data: bytes, limits: DecodeLimits | None = None) -> Array:
    doc = decode_bytes(data, limits or DecodeLimits())
    assert len(doc.pages) == 1
    assert (doc.pages_total, doc.truncated, doc.pages[0].index) == (1, False, 1)
    return check_page(doc.pages[0].image)


def read_every_page(data: bytes, limits: DecodeLimits | None = None, **kw: str) -> None:
    """Decode and read every page: corrupt pixel data is found when a page is read."""
    for page in decode_bytes(data, limits or DecodeLimits(), **kw).pages:
        check_page(page.image)


def check_page(image: Array) -> Array:
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 3
    assert image.flags.c_contiguous
    return image


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png(width: int, height: int, *, bit_depth: int, color_type: int, rows: bytes | None) -> bytes:
    """A PNG written by hand: Pillow writes neither 16-bit RGB nor a header without pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    chunks = [png_chunk(b"IHDR", ihdr)]
    if rows is not None:
        chunks.append(png_chunk(b"IDAT", zlib.compress(rows, 9)))
    chunks.append(png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0) of a baseline JPEG to claim another size."""
    out = bytearray(data)
    pos = 2
    while pos < len(out):
        marker, length = out[pos + 1], int.from_bytes(out[pos + 2 : pos + 4], "big")
        if marker == 0xC0:
            out[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        pos += 2 + length
    raise AssertionError("no SOF0 marker")


def pdf(objects: list[bytes], trailer: bytes = b"") -> bytes:
    """A PDF from object bodies (object 1 is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\n" % (len(objects) + 1, trailer)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def pdf_pages(sizes: list[tuple[float, float]], content: bytes | None = None) -> list[bytes]:
    """Catalog, page tree and one page per size; ``content`` drawn on the first page."""
    first_page = 3
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(len(sizes)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(sizes)),
    ]
    content_ref = b""
    if content is not None:
        content_ref = b"/Contents %d 0 R" % (first_page + len(sizes))
    for i, (width, height) in enumerate(sizes):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] %s >>"
            % (width, height, content_ref if i == 0 else b"")
        )
    if content is not None:
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    return objects


def rc4(key: bytes, data: bytes) -> bytes:
    box = list(range(256))
    j = 0
    for i in range(256):
        j = (j + box[i] + key[i % len(key)]) % 256
        box[i], box[j] = box[j], box[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + box[i]) % 256
        box[i], box[j] = box[j], box[i]
        out.append(byte ^ box[(box[i] + box[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes) -> bytes:
    """A one-page PDF under the standard security handler, revision 2 (40-bit RC4).

    Algorithms 2, 3 and 4 of ISO 32000-1 7.6.3; the page has no strings or streams, so
    nothing else needs encrypting.
    """
    pad = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
    padded_user = (user_password + pad)[:32]
    padded_owner = (b"owner" + pad)[:32]
    owner_entry = rc4(hashlib.md5(padded_owner).digest()[:5], padded_user)
    permissions = -44
    file_id = hashlib.md5(b"ocrserve test").digest()
    key = hashlib.md5(
        padded_user + owner_entry + struct.pack("<i", permissions) + file_id
    ).digest()[:5]
    user_entry = rc4(key, pad)
    objects = pdf_pages([(612, 792)])
    objects.append(
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (owner_entry.hex().encode(), user_entry.hex().encode(), permissions)
    )
    hex_id = file_id.hex().encode()
    return pdf(objects, b"/Encrypt %d 0 R /ID [<%s> <%s>] " % (len(objects), hex_id, hex_id))


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    """A valid 10000x10000 1-bit PNG: 100 megapixels in about 12 KB."""
    side = 10_000
    row = b"\x00" + b"\x00" * (side // 8)  # filter byte + 1250 bytes of black pixels
    return png(side, side, bit_depth=1, color_type=0, rows=row * side)


# -------------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00", "bmp"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"GIF89a\x01\x00", "gif"),
        (b"GIF87a\x01\x00", "gif"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"%PDF-1.7\n", "pdf"),
        (b"\r\n\r\n%PDF-1.4\n", "pdf"),
        (b"BMW is a car maker, not a bitmap", None),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"hello", None),
        (b"", None),
    ],
)
def test_sniff_format_reads_magic_bytes(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


def test_format_comes_from_magic_bytes_not_filename() -> None:
    data = encode(real_image(), "PNG")
    doc = decode_bytes(data, filename="scan.jpg")
    assert doc.format == "png"


# ------------------------------------------------------------------------- committed files


@pytest.mark.parametrize("name", sorted(JPEG_FIXTURES))
def test_committed_jpegs_decode_to_bgr(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    doc = decode_bytes(data)
    assert doc.format == "jpeg"
    image = single_page(data)
    assert image.shape == (*JPEG_FIXTURES[name], 3)
    np.testing.assert_array_equal(image, pil_bgr(data))


@pytest.mark.parametrize(
    ("name", "shape"), [("phototest.tif", (480, 640, 3)), ("eurotext.tif", (800, 1024, 3))]
)
def test_committed_1bit_tiffs_decode_to_black_and_white_bgr(
    name: str, shape: tuple[int, int, int]
) -> None:
    data = (FIXTURES / name).read_bytes()
    assert decode_bytes(data).format == "tiff"
    image = single_page(data)
    assert image.shape == shape
    assert set(np.unique(image)) == {0, 255}
    np.testing.assert_array_equal(image, pil_bgr(data))


def test_committed_pdf_renders_every_page_at_the_dpi() -> None:
    doc = decode_bytes(IRS_PDF.read_bytes(), DecodeLimits(pdf_dpi=FAST_DPI))
    assert (doc.format, doc.pages_total, doc.truncated) == ("pdf", 5, False)
    assert [page.index for page in doc.pages] == [1, 2, 3, 4, 5]
    portrait, landscape = (396, 306, 3), (306, 396, 3)
    assert [check_page(p.image).shape for p in doc.pages] == [portrait] * 3 + [landscape, portrait]
    # a form, mostly white paper with black print
    for page in doc.pages:
        assert page.image.min() < 50
        assert np.median(page.image) == 255


def test_pdf_default_dpi_is_200() -> None:
    doc = decode_bytes(IRS_PDF.read_bytes(), DecodeLimits(max_pages=1))
    assert doc.pages[0].image.shape == (2200, 1700, 3)  # US letter, 8.5x11 in at 200 dpi


def test_pdf_pages_are_bgr() -> None:
    red_square = b"1 0 0 rg 0 0 36 36 re f"  # bottom-left inch, pure red
    data = pdf(pdf_pages([(72, 72)], content=red_square))
    image = single_page(data, DecodeLimits(pdf_dpi=72))
    assert image.shape == (72, 72, 3)
    assert image[60, 10].tolist() == [0, 0, 255]  # B, G, R
    assert image[10, 60].tolist() == [255, 255, 255]


def test_pdf_header_after_leading_junk_is_still_a_pdf() -> None:
    data = b"\x00junk from a mail gateway\r\n" + pdf(pdf_pages([(72, 144)]))
    doc = decode_bytes(data, DecodeLimits(pdf_dpi=72))
    assert doc.format == "pdf"
    assert doc.pages[0].image.shape == (144, 72, 3)


# ---------------------------------------------------------------------- generated formats


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {}),
        ("BMP", {}),
        ("WEBP", {"lossless": True}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
    ],
)
def test_lossless_formats_decode_exactly(fmt: str, params: dict[str, object]) -> None:
    img = real_image()
    data = encode(img, fmt, **params)
    doc = decode_bytes(data)
    assert doc.format == fmt.lower()
    expected = np.asarray(img)[:, :, ::-1]
    np.testing.assert_array_equal(single_page(data), expected)


@pytest.mark.parametrize(("fmt", "params"), [("JPEG", {"quality": 90}), ("WEBP", {})])
def test_lossy_formats_decode_like_pillow(fmt: str, params: dict[str, object]) -> None:
    data = encode(real_image(), fmt, **params)
    assert decode_bytes(data).format == fmt.lower()
    np.testing.assert_array_equal(single_page(data), pil_bgr(data))


def test_gif_gives_the_first_frame_only() -> None:
    first = real_image((120, 40))
    frames = [first, first.rotate(180), Image.new("RGB", first.size, (0, 0, 0))]
    data = encode(first, "GIF", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3  # the file really is animated
    doc = decode_bytes(data)
    assert (doc.format, len(doc.pages), doc.pages_total, doc.truncated) == ("gif", 1, 1, False)
    np.testing.assert_array_equal(check_page(doc.pages[0].image), pil_bgr(data))


def test_animated_webp_gives_the_first_frame_only() -> None:
    first = real_image((120, 40))
    data = encode(first, "WEBP", save_all=True, append_images=[first.rotate(180)], lossless=True)
    image = single_page(data)
    np.testing.assert_array_equal(image, np.asarray(first)[:, :, ::-1])


def test_multipage_tiff_gives_every_page_in_order() -> None:
    img = real_image()
    frames = [img, img.resize((200, 100)).convert("L"), img.resize((64, 32)).convert("1")]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    doc = decode_bytes(data)
    assert (doc.format, doc.pages_total, doc.truncated) == ("tiff", 3, False)
    assert [page.index for page in doc.pages] == [1, 2, 3]
    for page, frame in zip(doc.pages, frames, strict=True):
        expected = np.asarray(frame.convert("RGB"))[:, :, ::-1]
        np.testing.assert_array_equal(check_page(page.image), expected)


# ---------------------------------------------------------------------- EXIF orientation


ORIENTED: dict[int, Callable[[Array], Array]] = {
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # stored sideways: turn 90 degrees clockwise to view
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
@pytest.mark.parametrize(
    ("fmt", "params"), [("JPEG", {}), ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})]
)
def test_exif_orientation_is_applied(fmt: str, params: dict[str, object], orientation: int) -> None:
    img = real_image((90, 30))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    plain = single_page(encode(img, fmt, **params))
    if fmt == "TIFF":
        tagged = encode(img, fmt, tiffinfo={ORIENTATION: orientation})
    else:
        tagged = encode(img, fmt, exif=exif, **params)
    image = single_page(tagged)
    assert image.shape == ((90, 30, 3) if orientation in (6, 8) else (30, 90, 3))
    np.testing.assert_array_equal(image, ORIENTED[orientation](plain))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_broken_exif_costs_the_orientation_not_the_page(fmt: str) -> None:
    img = real_image((90, 30))
    image = single_page(encode(img, fmt, exif=b"Exif\x00\x00not a TIFF header"))
    assert image.shape == (30, 90, 3)


# ------------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "YCbCr", "I", "F"])
def test_every_mode_becomes_three_channel_bgr(mode: str) -> None:
    img = real_image().convert(mode)
    data = encode(img, "TIFF")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == mode
    image = single_page(data)
    assert image.shape == (132, 709, 3)
    # 32-bit int and float grey holding 0..255 are taken as 8-bit grey
    reference = real_image().convert("L") if mode in ("I", "F") else img
    expected = np.asarray(reference.convert("RGB"))[:, :, ::-1]
    np.testing.assert_allclose(image, expected, atol=1)


def test_grey_pages_have_three_equal_channels() -> None:
    image = single_page(encode(real_image().convert("L"), "PNG"))
    assert (image[:, :, 0] == image[:, :, 1]).all()
    assert (image[:, :, 1] == image[:, :, 2]).all()


def test_cmyk_jpeg_becomes_bgr() -> None:
    img = real_image()
    image = single_page(encode(img.convert("CMYK"), "JPEG", quality=95))
    # Pillow's naive CMYK -> RGB round trip is exact; JPEG loses a little
    assert np.abs(image.astype(int) - np.asarray(img)[:, :, ::-1]).mean() < 4


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_rgba_is_composited_onto_white(fmt: str) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)  # transparent black everywhere...
    rgba[:, 10:20] = (0, 0, 0, 255)  # ...an opaque black band...
    rgba[:, 20:] = (0, 0, 255, 128)  # ...and a half-transparent blue one
    params: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    image = single_page(encode(Image.fromarray(rgba), fmt, **params))
    assert (image[:, :10] == 255).all()  # white, not black
    assert (image[:, 10:20] == 0).all()
    blue_on_white = [255, 127, 127]  # B, G, R
    np.testing.assert_allclose(image[:, 20:], np.broadcast_to(blue_on_white, (20, 10, 3)), atol=1)


def test_grey_with_alpha_is_composited_onto_white() -> None:
    la = Image.merge("LA", [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 0)])
    assert (single_page(encode(la, "PNG")) == 255).all()


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_transparent_palette_colour_becomes_white(fmt: str) -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0])
    img.putpixel((0, 0), 1)
    image = single_page(encode(img, fmt, transparency=0))
    assert image[0, 0].tolist() == [0, 0, 255]  # the one red pixel, in BGR
    assert (image[1:] == 255).all()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grey_keeps_the_high_byte(fmt: str) -> None:
    values = np.array([[0, 128 * 256 + 255, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), fmt)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "I;16"
    image = single_page(data)
    assert image[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


def test_16bit_rgb_png() -> None:
    # one row, two pixels: full red and half green, 16 bits per channel
    pixels = struct.pack(">6H", 65535, 0, 0, 0, 32896, 0)
    data = png(2, 1, bit_depth=16, color_type=2, rows=b"\x00" + pixels)
    image = single_page(data)
    assert image[0].tolist() == [[0, 0, 255], [0, 128, 0]]


@pytest.mark.parametrize(
    ("fmt", "params"), [("TIFF", {"compression": "group4"}), ("PNG", {}), ("BMP", {})]
)
def test_1bit_fax_and_bilevel(fmt: str, params: dict[str, object]) -> None:
    bilevel = real_image().convert("1")
    image = single_page(encode(bilevel, fmt, **params))
    expected = np.where(np.asarray(bilevel), 255, 0).astype(np.uint8)
    assert set(np.unique(image)) == {0, 255}
    np.testing.assert_array_equal(image, np.repeat(expected[:, :, np.newaxis], 3, axis=2))


# ------------------------------------------------------------------------------- limits


def test_byte_limit() -> None:
    data = encode(real_image(), "PNG")
    with pytest.raises(FileTooLargeError) as caught:
        decode_bytes(data, DecodeLimits(max_bytes=len(data) - 1))
    assert (caught.value.limit, caught.value.value) == (len(data) - 1, len(data))
    assert f"{len(data):,}" in str(caught.value)
    single_page(data, DecodeLimits(max_bytes=len(data)))  # the limit itself is allowed


def test_pixel_limit() -> None:
    data = encode(real_image(), "JPEG")
    pixels = 709 * 132
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(data, DecodeLimits(max_pixels=pixels - 1))
    assert (caught.value.limit, caught.value.value, caught.value.page) == (
        pixels - 1,
        pixels,
        None,
    )
    single_page(data, DecodeLimits(max_pixels=pixels))


def test_pixel_limit_names_the_tiff_page() -> None:
    img = real_image()
    data = encode(img.resize((10, 10)), "TIFF", save_all=True, append_images=[img])
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(data, DecodeLimits(max_pixels=1000))
    assert (caught.value.limit, caught.value.value, caught.value.page) == (1000, 709 * 132, 2)
    assert "on page 2" in str(caught.value)


def test_png_bomb_is_refused_from_its_header(png_bomb: bytes) -> None:
    assert len(png_bomb) < 20_000
    started = time.perf_counter()
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(png_bomb)
    elapsed = time.perf_counter() - started
    assert (caught.value.limit, caught.value.value) == (40_000_000, 100_000_000)
    # Inflating and allocating 100 megapixels takes far longer than reading a header.
    assert elapsed < 1.0


def test_pixel_check_reads_no_pixel_data() -> None:
    # A header that promises 10 gigapixels and no pixel data at all: only a check made before
    # decoding can answer "too many pixels" rather than "corrupt".
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(png(100_000, 100_000, bit_depth=8, color_type=0, rows=None))
    assert caught.value.value == 10_000_000_000
    huge_jpeg = jpeg_with_size(encode(real_image(), "JPEG"), 60_000, 60_000)
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(huge_jpeg)
    assert caught.value.value == 3_600_000_000


def test_pixel_limit_above_pillows_is_capped_at_pillows(png_bomb: bytes) -> None:
    # Pillow would warn about a 100-megapixel image while loading it; we refuse it ourselves
    # at Pillow's limit instead (pytest turns any warning into an error here).
    pil_limit = Image.MAX_IMAGE_PIXELS
    assert pil_limit is not None
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(png_bomb, DecodeLimits(max_pixels=10**12))
    assert (caught.value.limit, caught.value.value) == (pil_limit, 100_000_000)
    assert pil_limit == Image.MAX_IMAGE_PIXELS  # and we did not touch Pillow's global


def test_gif_frame_outside_its_screen_is_refused() -> None:
    # The screen says 16x16 but the first frame spans 20000x20000: Pillow grows the canvas
    # while it opens the file, so the check must catch Pillow's own bomb error too.
    screen = b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 20_000, 20_000, 0) + b"\x02\x02\x4c\x01\x00"
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(screen + frame + b";")
    assert (caught.value.limit, caught.value.value) == (40_000_000, 400_000_000)


def test_pdf_page_too_large_is_refused_before_rendering() -> None:
    # 200 x 200 inches, the largest page PDF allows: 40000 x 40000 pixels at 200 dpi
    data = pdf(pdf_pages([(612, 792), (14400, 14400)]))
    started = time.perf_counter()
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(data, DecodeLimits(pdf_dpi=200))
    assert time.perf_counter() - started < 1.0
    assert (caught.value.limit, caught.value.value, caught.value.page) == (
        40_000_000,
        1_600_000_000,
        2,
    )


def test_pdf_pixel_limit_uses_the_rendered_size() -> None:
    pixels = 1700 * 2200
    with pytest.raises(TooManyPixelsError) as caught:
        decode_bytes(IRS_PDF.read_bytes(), DecodeLimits(max_pixels=pixels - 1, max_pages=1))
    assert (caught.value.value, caught.value.page) == (pixels, 1)


@pytest.mark.parametrize("size", [(20_000, 1), (1, 20_000), (300_000, 1), (1, 300_000)])
def test_a_strip_is_refused_by_its_aspect_ratio_from_its_header(size: tuple[int, int]) -> None:
    # A 1-pixel strip passes the pixel limit; the detector could find nothing on it.
    data = encode(Image.new("L", size, 255), "PNG")
    assert len(data) < 1000
    with pytest.raises(AspectRatioError) as caught:
        decode_bytes(data)
    assert (caught.value.limit, caught.value.value, caught.value.page) == (100, max(size), None)
    assert caught.value.code == "aspect_ratio_too_large"
    assert f"{size[0]}x{size[1]}" in str(caught.value)


def test_the_aspect_ratio_limit_itself_is_allowed() -> None:
    single_page(encode(Image.new("L", (1000, 10), 255), "PNG"))
    with pytest.raises(AspectRatioError) as caught:
        decode_bytes(encode(Image.new("L", (1001, 10), 255), "PNG"))
    assert (caught.value.limit, caught.value.value) == (100, 101)
    decode_bytes(encode(Image.new("L", (1001, 10), 255), "PNG"), DecodeLimits(max_aspect=101))


def test_side_limit() -> None:
    data = encode(Image.new("L", (17_000, 200), 255), "PNG")
    with pytest.raises(SideTooLongError) as caught:
        decode_bytes(data)
    assert (caught.value.limit, caught.value.value, caught.value.page) == (16_384, 17_000, None)
    single_page(data, DecodeLimits(max_side=17_000))


def test_pdf_page_shape_limits_use_the_rendered_size() -> None:
    # 100 x 0.5 inches at 200 dpi: 20000 x 100 pixels, 2 M pixels but 200:1
    data = pdf(pdf_pages([(612, 792), (7200, 36)]))
    with pytest.raises(AspectRatioError) as caught:
        decode_bytes(data)
    assert (caught.value.value, caught.value.page) == (200, 2)
    with pytest.raises(SideTooLongError) as side:
        decode_bytes(data, DecodeLimits(max_aspect=200))
    assert (side.value.value, side.value.page) == (20_000, 2)


def test_the_pixel_budget_counts_every_kept_page() -> None:
    img = real_image()  # 709 x 132
    page = 709 * 132
    data = encode(img, "TIFF", save_all=True, append_images=[img, img])
    with pytest.raises(PixelBudgetError) as caught:
        decode_bytes(data, DecodeLimits(max_total_pixels=3 * page - 1))
    error = caught.value
    assert (error.limit, error.value, error.pages) == (3 * page - 1, 3 * page, 3)
    assert error.code == "pixel_budget_exceeded" and "3 pages" in str(error)
    # Pages past max_pages are not read, so they cost nothing.
    doc = decode_bytes(data, DecodeLimits(max_total_pixels=2 * page, max_pages=2))
    assert (len(doc.pages), doc.pixels, doc.truncated) == (2, 2 * page, True)


def test_pages_are_decoded_when_read_and_know_their_size_before() -> None:
    img = real_image()
    frames = [img, img.resize((200, 100))]
    doc = decode_bytes(encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    assert [(p.width, p.height, p.pixels) for p in doc.pages] == [
        (709, 132, 709 * 132),
        (200, 100, 200 * 100),
    ]
    # Nothing is held: each read decodes afresh (read once, use, let go).
    first = doc.pages[0]
    assert first.image is not first.image
    np.testing.assert_array_equal(first.image, first.image)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize(
    ("fmt", "params"), [("JPEG", {}), ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})]
)
def test_a_page_knows_its_upright_size_before_it_is_decoded(
    fmt: str, params: dict[str, object], orientation: int
) -> None:
    img = real_image((90, 30))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    if fmt == "TIFF":
        tagged = encode(img, fmt, tiffinfo={ORIENTATION: orientation})
    else:
        tagged = encode(img, fmt, exif=exif, **params)
    page = decode_bytes(tagged).pages[0]
    assert (page.width, page.height) == ((30, 90) if orientation == 6 else (90, 30))
    assert page.image.shape == (page.height, page.width, 3)


def test_tiff_over_the_page_limit_is_truncated_and_says_so() -> None:
    img = real_image((40, 20))
    frames = [img.rotate(180 * (i % 2)) for i in range(5)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    doc = decode_bytes(data, DecodeLimits(max_pages=2))
    assert (len(doc.pages), doc.pages_total, doc.truncated) == (2, 5, True)
    assert [page.index for page in doc.pages] == [1, 2]
    with pytest.raises(TooManyPagesError) as caught:
        decode_bytes(data, DecodeLimits(max_pages=2, truncate=False))
    assert (caught.value.limit, caught.value.value) == (2, 5)
    assert not decode_bytes(data, DecodeLimits(max_pages=5, truncate=False)).truncated


def test_pdf_over_the_page_limit_is_truncated_and_says_so() -> None:
    data = IRS_PDF.read_bytes()
    doc = decode_bytes(data, DecodeLimits(max_pages=2, pdf_dpi=FAST_DPI))
    assert (doc.format, len(doc.pages), doc.pages_total, doc.truncated) == ("pdf", 2, 5, True)
    assert [page.index for page in doc.pages] == [1, 2]
    with pytest.raises(TooManyPagesError) as caught:
        decode_bytes(data, DecodeLimits(max_pages=2, truncate=False, pdf_dpi=FAST_DPI))
    assert (caught.value.limit, caught.value.value) == (2, 5)


@pytest.mark.parametrize("field", ["max_bytes", "max_pixels", "max_pages", "pdf_dpi"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DecodeLimits(**{field: 0})  # type: ignore[arg-type]


# ---------------------------------------------------------------------- corrupt and alien


def test_truncated_jpeg_is_corrupt_not_half_grey() -> None:
    data = (FIXTURES / "zh_doc_certificate.jpeg").read_bytes()
    with pytest.raises(CorruptFileError, match="truncated"):
        read_every_page(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {}), ("JPEG", {})],
)
def test_truncated_images_are_corrupt(fmt: str, params: dict[str, object]) -> None:
    data = encode(real_image(), fmt, **params)
    with pytest.raises(CorruptFileError) as caught:
        read_every_page(data[: len(data) * 2 // 3], filename=f"cut.{fmt.lower()}")
    assert str(caught.value).startswith(f"cut.{fmt.lower()}: cannot decode this {fmt} file")
    assert caught.value.reason


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(4096), id="png"),
        pytest.param(b"\xff\xd8\xff\xe0" + np.random.default_rng(2).bytes(4096), id="jpeg"),
        pytest.param(b"II*\x00" + np.random.default_rng(3).bytes(4096), id="tiff"),
        # GIF: a sane 16x16 screen and frame, else random sizes could read as "too large"
        pytest.param(
            b"GIF89a\x10\x00\x10\x00\x00\x00\x00,\x00\x00\x00\x00\x10\x00\x10\x00\x00\x08"
            + np.random.default_rng(4).bytes(4096),
            id="gif",
        ),
        pytest.param(b"RIFF\x00\x10\x00\x00WEBP" + np.random.default_rng(5).bytes(4096), id="webp"),
        pytest.param(b"%PDF-1.7\n" + np.random.default_rng(6).bytes(4096), id="pdf"),
    ],
)
def test_garbage_behind_a_valid_header_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptFileError) as caught:
        read_every_page(data)
    assert caught.value.code == "corrupt_file"


def test_empty_file_is_refused_clearly() -> None:
    with pytest.raises(CorruptFileError, match="empty") as caught:
        decode_bytes(b"")
    assert caught.value.reason == "empty file"


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (b"Invoice 2024-03\nTotal: 42.00 EUR\n", "text"),
        ("发票号码 12345\n".encode(), "text"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "svg/xml/html"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heic"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "avif"),
        (b"PK\x03\x04\x14\x00\x06\x00", "zip"),
        (b"\x00\x01\x02\x03\xfe\xfd\xfc", None),
    ],
)
def test_unsupported_formats_say_what_came_and_what_is_supported(
    data: bytes, detected: str | None
) -> None:
    with pytest.raises(UnsupportedFormatError) as caught:
        decode_bytes(data, filename="upload.bin")
    assert caught.value.detected == detected
    message = str(caught.value)
    assert message.startswith("upload.bin: unsupported file format")
    assert "JPEG, PNG, BMP, WebP, GIF, TIFF, PDF" in message
    if detected:
        assert detected in message


def test_encrypted_pdf_without_password_is_refused_clearly() -> None:
    with pytest.raises(CorruptFileError, match="encrypted") as caught:
        decode_bytes(encrypted_pdf(b"secret"))
    assert caught.value.reason == "encrypted"


def test_encrypted_pdf_with_an_empty_user_password_opens() -> None:
    # Owner-only protection (printing/copying restrictions) needs no password to read.
    doc = decode_bytes(encrypted_pdf(b""), DecodeLimits(pdf_dpi=FAST_DPI))
    assert doc.pages[0].image.shape == (396, 306, 3)


def test_every_decode_error_is_an_input_error() -> None:
    for data in (b"", b"text", b"%PDF-1.4\ngarbage", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(InputError):
            decode_bytes(data)


# ---------------------------------------------------------------------------- decode_path


def test_decode_path_matches_decode_bytes() -> None:
    path = FIXTURES / "phototest.tif"
    from_path = decode_path(path)
    from_bytes = decode_bytes(path.read_bytes())
    assert from_path.format == from_bytes.format == "tiff"
    np.testing.assert_array_equal(from_path.pages[0].image, from_bytes.pages[0].image)
    assert decode_path(str(path)).pages_total == 1


def test_decode_path_checks_the_size_before_reading(tmp_path: Path) -> None:
    # A sparse 10 GiB file: reading it first would take minutes and all the memory.
    huge = tmp_path / "huge.pdf"
    with huge.open("wb") as f:
        f.truncate(10 * 1024**3)
    started = time.perf_counter()
    with pytest.raises(FileTooLargeError) as caught:
        decode_path(huge)
    assert time.perf_counter() - started < 1.0
    assert (caught.value.limit, caught.value.value) == (50 * 1024 * 1024, 10 * 1024**3)


def test_decode_path_byte_limit_reports_the_file_size() -> None:
    size = IRS_PDF.stat().st_size
    with pytest.raises(FileTooLargeError) as caught:
        decode_path(IRS_PDF, DecodeLimits(max_bytes=1000))
    assert (caught.value.limit, caught.value.value) == (1000, size)


def test_decode_path_names_the_file_in_errors(tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not an image at all\n")
    with pytest.raises(UnsupportedFormatError, match=r"^notes\.png: "):
        decode_path(notes)


# ------------------------------------------------------------------------------ threads


def test_pdf_decoding_from_many_threads_is_safe() -> None:
    data = IRS_PDF.read_bytes()
    limits = DecodeLimits(max_pages=2, pdf_dpi=FAST_DPI)
    expected = decode_bytes(data, limits)
    with ThreadPoolExecutor(max_workers=4) as pool:
        docs = list(pool.map(lambda _: decode_bytes(data, limits), range(8)))
    for doc in docs:
        for page, want in zip(doc.pages, expected.pages, strict=True):
            np.testing.assert_array_equal(page.image, want.image)
