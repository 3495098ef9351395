"""The PDF text layer against the dev PDFs' labels, its cost per page, and the rule's verdicts.

    python bench/pdftext.py [--eval-dir ../shared/eval] [--repeat 3]

For every page of ``dev/pdf_docs`` and ``dev/pdf_docs_more``: seconds for
``read_text_layer`` at 200 dpi (verdict included; median of ``--repeat``), the verdict, and
for labelled pages page CER and bag-of-words F1 (``score.py``) of three texts:

- ``layer``: ``TextLayer.text``, the lines this module finds in :mod:`ocrserve.layout` order;
- ``labels``: the labels' own lines (the text layer as PyMuPDF reads it) through the same
  ``layout.page_text``: what the text layer itself scores in that order, the target;
- ``stream``: the labels' ``page_text_stream_order``, the layer in content-stream order.

Then, through the engine as a user runs it (``Engine.run`` on the decoded page), seconds per
page with ``pdf_text=auto`` (the layer) and ``pdf_text=ocr`` (recognised), one after the other
on each page, and the recognised text's CER: the issue's target is auto >= 50x faster than OCR
per page at a CER within 0.5 points of the layer's own.

Then the broken layers the rule must refuse (and one it must keep), built as the tests build
them: IRS page 1 scanned with its header stamped on, the same scan under a full invisible OCR
layer, and a font without a Unicode map. The Chinese mind map is scored with ``--nospace``.

    python bench/pdftext.py --write-results     # the pdftext section of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import pypdfium2 as pdfium
import tables

from ocrserve.config import Settings
from ocrserve.decode import DecodeLimits, decode_bytes
from ocrserve.engine import Engine
from ocrserve.layout import page_text
from ocrserve.pdftext import TextLayer, read_text_layer
from ocrserve.types import OCROptions

# The broken-layer builders are the tests' own, so the bench measures what the tests assert.
sys.path.insert(0, str(harness.ROOT))
from tests.test_pdftext import HELVETICA, IRS, scanned, tiny_pdf

SETS = ("pdf_docs", "pdf_docs_more")
DPI = 200
#: The Chinese mind map is 45 M pixels at 200 dpi, over the default 40 M page limit.
LIMITS = DecodeLimits(max_pixels=60_000_000, pdf_dpi=DPI)
NOSPACE = {("chem_notation_mindmap_zh.pdf", 1)}


def timed_read(data: bytes, index: int, repeat: int) -> tuple[TextLayer, float]:
    pdf = pdfium.PdfDocument(data)
    try:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            layer = read_text_layer(pdf, index, DPI)
            times.append(time.perf_counter() - t0)
    finally:
        pdf.close()
    return layer, statistics.median(times)


def score(preds: list[dict[str, Any]], labels: list[Path], eval_dir: Path) -> dict[Any, Any]:
    """Per page: (CER, BoW F1) from score.py, with --nospace for the Chinese page."""
    out: dict[Any, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pred_path, report = Path(tmp, "preds.jsonl"), Path(tmp, "report.json")
        pred_path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds))
        for flags in ((), ("--nospace",)):
            cmd = [sys.executable, str(eval_dir / "score.py"), "--pred", str(pred_path)]
            subprocess.run([*cmd, *flags, "--json", str(report), *map(str, labels)],
                           check=True, capture_output=True)  # fmt: skip
            for s in json.loads(report.read_text())["sets"].values():
                for it in s["items"]:
                    key = (it["image"], it["page"])
                    if (key in NOSPACE) == bool(flags):
                        p = it["bow_match"] / max(it["hyp_tokens"], 1)
                        r = it["bow_match"] / max(it["ref_tokens"], 1)
                        out[key] = (it["cer"], 2 * p * r / (p + r) if p + r else 0.0, it)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=harness.DEFAULT_EVAL_DIR)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ocr", action="store_true", help="Skip the engine's OCR of each page.")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    machine = harness.machine_info()
    dev = args.eval_dir / "dev"
    labels = [dev / s / "labels.jsonl" for s in SETS]
    truth = {
        (r["image"], r["page"]): r
        for path in labels
        for r in map(json.loads, path.read_text().splitlines())
    }
    engine = None if args.no_ocr else Engine.from_settings(Settings())
    if engine is not None:
        engine.warmup()
    rows, variants = [], {"layer": [], "labels": [], "stream": [], "ocr": []}
    seconds_by_mode: dict[str, list[float]] = {"auto": [], "ocr": []}
    for s in SETS:
        for pdf_path in sorted((dev / s).glob("*.pdf")):
            data = pdf_path.read_bytes()
            for index in range(len(pdfium.PdfDocument(data))):
                layer, seconds = timed_read(data, index, args.repeat)
                key = (pdf_path.name, index + 1)
                rows.append((key, layer, seconds))
                variants["layer"].append(layer.text)
                rec = truth.get(key)
                lines = rec["lines"] if rec else []
                boxes = [tuple(map(tuple, ln["points"])) for ln in lines]
                variants["labels"].append(page_text([ln["text"] for ln in lines], boxes))
                variants["stream"].append(rec["page_text_stream_order"] if rec else "")
                text = ""
                if engine is not None:
                    page = decode_bytes(data, LIMITS).pages[index]
                    for mode in ("auto", "ocr"):
                        t0 = time.perf_counter()
                        [result] = engine.run([page], OCROptions(pdf_text=mode))  # type: ignore[arg-type]
                        seconds_by_mode[mode].append(time.perf_counter() - t0)
                        text = result.text if mode == "ocr" else text
                variants["ocr"].append(text)
    if engine is None:
        del variants["ocr"]
    scores = {
        name: score(
            [
                {"image": k[0], "page": k[1], "text": t}
                for (k, _, _), t in zip(rows, texts, strict=True)
            ],
            labels,
            args.eval_dir,
        )
        for name, texts in variants.items()
    }
    out = [
        "## PDF text layers: the layer vs OCR, per page (issue 13)",
        "",
        "`python bench/pdftext.py --write-results`. Page CER and bag-of-words F1 against the"
        " labels (the text layer as PyMuPDF reads it, ordered by a column heuristic); "
        "*labels* is that text through ocrserve's own reading order, the target for the layer.",
        "",
    ]
    head = ["page", "s/page (layer)", "verdict", *(f"CER {n}" for n in variants), "F1 layer"]
    if engine is not None:
        head[3:3] = ["s/page auto", "s/page ocr", "ocr / auto"]
    out += tables.table_head(head)
    tot = {name: [0, 0] for name in variants}
    for n_row, (key, layer, seconds) in enumerate(rows):
        cells = [""] * (len(variants) + 1)
        if key in scores["layer"]:
            cells = [f"{scores[n][key][0]:.2%}" for n in variants] + [
                f"{scores['layer'][key][1]:.1%}"
            ]
            for n in variants:
                tot[n][0] += scores[n][key][2]["char_edits"]
                tot[n][1] += scores[n][key][2]["ref_chars"]
        timing = []
        if engine is not None:
            auto, ocr = seconds_by_mode["auto"][n_row], seconds_by_mode["ocr"][n_row]
            timing = [f"{auto:.3f}", f"{ocr:.2f}", f"{ocr / auto:.0f}x"]
        out.append(
            tables.table_row(
                [f"{key[0]} p{key[1]}", f"{seconds:.3f}", layer.reason, *timing, *cells]
            )
        )
    micro = " · ".join(f"{n} {e / max(c, 1):.2%}" for n, (e, c) in tot.items())
    secs = [s for _, _, s in rows]
    out += ["", f"Micro CER over the labelled pages: {micro}."]
    out.append(
        f"`read_text_layer`: median {statistics.median(secs):.3f} s per page, max "
        f"{max(secs):.3f}, {len(secs)} pages."
    )
    if engine is not None:
        auto_m = statistics.median(seconds_by_mode["auto"])
        ocr_m = statistics.median(seconds_by_mode["ocr"])
        ratios = [
            o / a for a, o in zip(seconds_by_mode["auto"], seconds_by_mode["ocr"], strict=True)
        ]
        out.append(
            f"Through the engine: `pdf_text=auto` median {auto_m:.3f} s per page, "
            f"`pdf_text=ocr` median {ocr_m:.2f} s: {ocr_m / auto_m:.0f}x by medians, per page "
            f"{min(ratios):.0f}x to {max(ratios):.0f}x (median {statistics.median(ratios):.0f}x)."
        )

    irs1 = read_text_layer(pdfium.PdfDocument(IRS), 0, DPI)
    header = [(ln.text, ln.box) for ln in irs1.lines[:3]]
    names = " ".join(f"/g{i}" for i in range(1, 12))
    broken = {
        "IRS p1 scanned, header stamped on": scanned(header, invisible=False),
        "IRS p1 scanned, full invisible OCR layer": scanned(
            [(ln.text, ln.box) for ln in irs1.lines], invisible=True
        ),
        "font without ToUnicode (codes 1..11)": tiny_pdf(
            "<< /Type /Font /Subtype /Type1 /BaseFont /ABCDEF+Subset /FirstChar 1 /LastChar 11"
            " /Widths [" + " ".join(["600"] * 11) + "]"
            f" /Encoding << /Type /Encoding /Differences [1 {names}] >> >>",
            b"BT /F1 14 Tf 72 700 Td (\x01\x02\x03\x03\x04 \x05\x04\x06\x03\x07) Tj ET",
        ),
        "same words, Helvetica": tiny_pdf(HELVETICA, b"BT /F1 14 Tf 72 700 Td (Hello World) Tj ET"),
    }
    out += ["", *tables.table_head(["built page", "s/page", "usable", "verdict"])]
    for name, data in broken.items():
        layer, seconds = timed_read(data, 0, args.repeat)
        out.append(tables.table_row([name, f"{seconds:.3f}", str(layer.usable), layer.reason]))
    machine["loadavg_end"] = os.getloadavg()[0]
    head_commit, dirty = harness.commit(["src/ocrserve/pdftext.py", "src/ocrserve/engine"])
    extra = (
        f" · pypdfium2 {harness.pkg('pypdfium2')} · ocrserve {head_commit}"
        f"{' (dirty)' if dirty else ''}"
    )
    out += ["", harness.machine_header(machine, (), extra)]
    run = harness.new_run("pdftext") / "pdftext"
    raw = {
        "pages": [
            {"page": f"{k[0]} p{k[1]}", "layer_s": s, "verdict": layer.reason}
            for k, layer, s in rows
        ],
        "seconds": seconds_by_mode,
    }
    tables.publish("pdftext", run, raw, "\n".join(out), to_results=args.write_results)


if __name__ == "__main__":
    main()
