"""ALTO v4 (schema 4.4): the result as ``Page > PrintSpace > TextBlock > TextLine > String``,
positions in page pixels (``MeasurementUnit pixel``), an ``SP`` between the words of a line.

The engine finds lines, not blocks: each page's lines go in one ``TextBlock``. Built with the
standard library's ElementTree, as :mod:`ocrserve.formats.hocr` is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Final

from ocrserve._version import __version__
from ocrserve.formats.boxes import Rect, bounding_rect, lines_with_words, union, xml_text
from ocrserve.types import PageResult

#: Not registered with IANA; the name OCR-D and other ALTO tooling use.
MEDIA_TYPE: Final = "application/alto+xml"
ALTO_NS: Final = "http://www.loc.gov/standards/alto/ns-v4#"
SCHEMA_LOCATION: Final = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"
DEFAULT_SYSTEM: Final = f"ocrserve {__version__}"


def write_alto(
    pages: Sequence[PageResult], *, filename: str = "", system: str = DEFAULT_SYSTEM
) -> str:
    """The pages as one ALTO 4.4 document (UTF-8), valid against the ALTO v4 schema.

    >>> doc = write_alto(engine.run(decode_path("scan.png").pages), filename="scan.png")
    ... # doctest: +SKIP
    >>> "<String " in doc  # doctest: +SKIP
    True

    ``system`` names the engine (``Processing/processingSoftware``). A line read without word
    boxes is written as one ``String`` spanning the line.
    """
    alto = ET.Element(
        "alto",
        {
            "xmlns": ALTO_NS,
            "xmlns:xsi": XSI_NS,
            "xsi:schemaLocation": f"{ALTO_NS} {SCHEMA_LOCATION}",
        },
    )
    description = ET.SubElement(alto, "Description")
    ET.SubElement(description, "MeasurementUnit").text = "pixel"
    if filename:
        source = ET.SubElement(description, "sourceImageInformation")
        ET.SubElement(source, "fileName").text = xml_text(filename)
    processing = ET.SubElement(description, "Processing", {"ID": "processing_1"})
    ET.SubElement(processing, "processingCategory").text = "contentGeneration"
    software = ET.SubElement(processing, "processingSoftware")
    ET.SubElement(software, "softwareName").text = xml_text(system)
    layout = ET.SubElement(alto, "Layout")
    for page in pages:
        _page(layout, page)
    ET.indent(alto)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(alto, encoding="unicode") + "\n"


def _page(layout: ET.Element, page: PageResult) -> None:
    p = page.index
    element = ET.SubElement(
        layout,
        "Page",
        {
            "ID": f"page_{p}",
            "PHYSICAL_IMG_NR": str(p),
            "WIDTH": str(page.width),
            "HEIGHT": str(page.height),
        },
    )
    space = ET.SubElement(element, "PrintSpace", _position(Rect(0, 0, page.width, page.height)))
    lines = list(lines_with_words(page))
    if not lines:
        return
    block = ET.SubElement(space, "TextBlock", {"ID": f"block_{p}_1"})
    line_rects = []
    for n, (line, words) in enumerate(lines, start=1):
        rects = [bounding_rect(word.box, page) for word in words]
        line_rect = union([bounding_rect(line.box, page), *rects])
        line_rects.append(line_rect)
        text_line = ET.SubElement(
            block, "TextLine", {"ID": f"line_{p}_{n}", **_position(line_rect)}
        )
        for m, (word, rect) in enumerate(zip(words, rects, strict=True), start=1):
            if m > 1:
                gap = rects[m - 2]
                sp = Rect(gap.x1, line_rect.y0, max(rect.x0, gap.x1), line_rect.y1)
                ET.SubElement(
                    text_line,
                    "SP",
                    {"HPOS": str(sp.x0), "VPOS": str(sp.y0), "WIDTH": str(sp.width)},
                )
            ET.SubElement(
                text_line,
                "String",
                {
                    "ID": f"string_{p}_{n}_{m}",
                    "CONTENT": xml_text(word.text),
                    **_position(rect),
                    "WC": f"{min(max(word.confidence, 0.0), 1.0):.4f}",
                },
            )
    block.attrib.update(_position(union(line_rects)))


def _position(rect: Rect) -> dict[str, str]:
    return {
        "HPOS": str(rect.x0),
        "VPOS": str(rect.y0),
        "WIDTH": str(rect.width),
        "HEIGHT": str(rect.height),
    }
