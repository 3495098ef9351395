#!/usr/bin/env python3
"""Engine benchmark: ocrserve (fp32, int8), faster-paddle (small, tiny), RapidOCR and Tesseract
side by side in one run.

    python bench/engine.py                        # all peers, all sets, 3 rounds
    python bench/engine.py --limit 2 --rounds 1   # a quick check that everything runs
    python bench/engine.py --peers ocrserve-fp32,rapidocr --sets speed --rounds 5
    python bench/engine.py --sets dense --rounds 3             # seconds per dense page only
    python bench/engine.py --sets pdf_docs,pdf_docs_more --rounds 1   # accuracy only
    python bench/engine.py --write-results        # also update bench/RESULTS.md

Every measurement runs in a fresh worker process (``--worker PEER --job FILE``, spawned by
this script), so no peer inherits another's imports, threads or memory:

- speed: each of ``--rounds`` rounds spawns one worker per peer, peers alternating round by
  round (A1 B1 C1 A2 B2 C2 ...), so slow drifts in the load of a shared machine hit every peer
  alike. A worker OCRs the speed images one per call, sequentially; throughput is images over
  the summed call time (image decoding excluded), reported as the median over rounds.
- dense pages: the same way (a fresh worker per peer and round, warmed up on the cold-start
  image, peers alternating; every speed worker of a round first, then every dense one), each
  worker OCRs the dense document pages one per call: the labelled pages of ``pdf_docs`` (the
  IRS form, 5 pages) and ``pdf_docs_more`` (a 3-column Federal Register page, 6 pages of a
  paper with charts and tables, a 4,922 x 9,297 px Chinese mind map), rendered once to PNG at
  the label's ``render_dpi``. Seconds per dense page: each page's median over rounds, then the
  median over the pages (issue 12's "seconds per dense page"). Their peak RSS is kept apart
  from the speed set's.
- accuracy: one more worker per peer OCRs the dev sets; ``../shared/eval/score.py`` scores
  the predictions (page CER, micro, and bag-of-words F1). The scorer's flags are per set
  (``SCORE_FLAGS``); it has no per-item flags, so ``pdf_docs_more`` is scored as is and its
  Chinese page is scored once more alone with ``--nospace`` (``ITEM_FLAGS``), in the notes.
- cold start: every worker first OCRs one small image; cold start is the wall time from just
  before the spawn to that first result (interpreter, imports, model loading, first page),
  the median over all fresh workers of a peer. That first page also warms the engine up
  before anything is timed.

Every peer gets the same pixels: the image decoded once by ``load_bgr`` (PDF pages rendered
once to PNG beforehand) outside the timed call. faster-paddle's ``OcrEngine.ocr`` takes only
encoded image bytes (jpeg/png/webp/bmp/tiff/gif), no array and no path: its worker encodes the
BGR array to an uncompressed 24-bit BMP (``FASTER_PADDLE_FORMAT``), also outside the timed call,
and the call then includes only that format's decode, a copy of the pixels, where a PNG would
add an inflate (tens of milliseconds on a dense page) to every call, while the others' decode
is excluded. Its page text is the result's ``"text"`` (its reading-order reconstruction;
``"structured_text"`` is its layout-preserving variant for screenshots and tables).

Peers run with their default threading (all cores): faster-paddle ``threads=None`` resolves to
the physical cores within the CPU affinity (``engine.config``, recorded in the raw data). Nothing
here touches the network: the workers refuse any internet socket, so a peer that tries to
download a model fails loudly. That guard is Python's ``socket`` module: faster-paddle is native
(Rust, its own ONNX Runtime), and only its ``medium`` size downloads (small and tiny are bundled
in the wheel; ``strace -e trace=socket,connect`` on building and running both saw no socket).
Raw results (every latency, prediction and score) land in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

# bench/ is not a package: running this file puts bench/ first on sys.path, so the harness
# and the tables import as top-level modules.
from harness import (
    DEFAULT_EVAL_DIR,
    DEV_SETS,
    MB,
    ROOT,
    SCORE_FLAGS,
    env_overrides,
    forbid_network,
    machine_header,
    machine_info,
    new_run,
    percentile,
    pkg,
    run_worker,
)
from tables import RESULTS_MD, comma_list, fmt, publish, raw_args, table_head, table_row

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]

PEERS = (
    "ocrserve-fp32",
    "ocrserve-int8",
    "faster-paddle-small",
    "faster-paddle-tiny",
    "rapidocr",
    "tesseract",
)
BASELINE = "rapidocr"
#: Issue 12's bar: throughput on the speed set is also shown as a ratio to this peer's.
TARGET_PEER = "faster-paddle-small"
SPEED = "speed"
DENSE = "dense"
#: The dev sets whose labelled PDF pages are the dense pages.
DENSE_SOURCES = ("pdf_docs", "pdf_docs_more")
#: Items scored once more alone with other flags (score.py's flags are per run, not per item):
#: pdf_docs_more mixes English pages with a Chinese one.
ITEM_FLAGS: dict[str, dict[tuple[str, int], tuple[str, ...]]] = {
    "pdf_docs_more": {("chem_notation_mindmap_zh.pdf", 1): ("--nospace",)},
}
#: What faster-paddle is fed: encoded bytes it must decode inside its call; BMP is a copy.
FASTER_PADDLE_FORMAT = ".bmp"
#: faster-paddle's other page text, scored in the notes: its layout-preserving reconstruction
#: (rows of a monospace grid, panes split at vertical gaps) reads in another order than "text".
FASTER_PADDLE_ALT = ("structured_text",)
#: Rendering limits for the dev PDFs: ocrserve's defaults (40 MP a page) refuse the mind map.
RENDER_MAX_PIXELS = 400_000_000
COLD_IMAGE = "en_doc_paragraph.jpg"
SPEED_SUFFIXES = (".jpg", ".jpeg", ".png")
TESSERACT_LANG = "eng+chi_sim"


# --------------------------------------------------------------------------- worker side
# Everything heavy is imported inside the peer builders: those imports are part of a peer's
# cold start, and the parent process never needs them.


class Peer(NamedTuple):
    """A built peer: ``prepare`` turns the decoded BGR image into what ``recognise`` takes
    (outside the timed call), ``recognise`` returns the page text, or a dict of its page texts
    (``"text"``, the one the tables score, and alternatives scored in the notes); ``info`` goes
    to the raw data (a ``"log"`` :class:`LogTap` in it is read and removed at the end)."""

    prepare: Callable[[Image], Any]
    recognise: Callable[[Any], str | dict[str, str]]
    info: dict[str, Any]


def as_is(bgr: Image) -> Image:
    return bgr


class LogTap:
    """Keeps the records of one logger, to report warnings and download attempts."""

    def __init__(self, name: str) -> None:
        import logging

        self.records: list[tuple[str, str]] = []
        tap = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                tap.records.append((record.levelname, record.getMessage()))

        logging.getLogger(name).addHandler(Handler(logging.DEBUG))

    def notable(self) -> list[str]:
        return [
            f"{level}: {msg}"
            for level, msg in self.records
            if level not in ("DEBUG", "INFO") or "download" in msg.lower()
        ]


def load_bgr(path: Path) -> Image:
    import cv2
    import numpy as np

    if path.suffix.lower() in (".tif", ".tiff"):
        # cv2 reads some TIFF flavours (1-bit, multi-page) differently from PIL and libtiff.
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return np.asarray(img, dtype=np.uint8)


def build_ocrserve(precision: str) -> Peer:
    from ocrserve.config import Settings
    from ocrserve.engine import Engine, ModelSet
    from ocrserve.engine.quantize import int8_path
    from ocrserve.types import Page

    settings = Settings(precision=precision)  # type: ignore[arg-type]
    info: dict[str, Any] = {"precision": precision, "intra_op_threads": settings.intra_op_threads}
    if precision == "int8":
        # Quantising on first use takes far longer than loading, so a cold start that had to
        # build the cache is not comparable with the others: record which kind this one was.
        models = ModelSet.locate(settings.model_dir, verify=False)
        cache = settings.data_dir / "models"
        targets = [int8_path(models.path(s), cache) for s in models.recs]
        info["int8_cache_existed"] = all(
            t.is_file() and t.with_suffix(".sha256").is_file() for t in targets
        )
        info["int8_files"] = [str(t) for t in targets]
    log = LogTap("ocrserve")
    engine = Engine.from_settings(settings)
    info["providers"] = list(engine.providers)
    info["log"] = log

    def recognise(bgr: Image) -> str:
        return engine.run([Page(bgr)])[0].text

    return Peer(as_is, recognise, info)


def build_faster_paddle(size: str) -> Peer:
    import cv2
    import faster_paddle

    engine = faster_paddle.OcrEngine(model_size=size)

    def prepare(bgr: Image) -> bytes:
        ok, buf = cv2.imencode(FASTER_PADDLE_FORMAT, bgr)
        if not ok:
            raise ValueError(f"cv2 could not encode a {bgr.shape} image as {FASTER_PADDLE_FORMAT}")
        return buf.tobytes()

    def recognise(data: bytes) -> dict[str, str]:
        result = engine.ocr(data)
        return {"text": str(result["text"]), **{k: str(result[k]) for k in FASTER_PADDLE_ALT}}

    # "ORT Build Info: git-branch=rel-1.28.0, git-commit-id=da9b5e3, ...": its own runtime.
    build = dict(
        part.strip().partition("=")[::2]
        for part in str(getattr(faster_paddle, "__runtime_build__", "")).split(",")
    )
    runtime = build.get("ORT Build Info: git-branch", "unknown").removeprefix("rel-")
    return Peer(
        prepare,
        recognise,
        {
            "version": version("faster-paddle"),
            "model_size": size,
            "input": FASTER_PADDLE_FORMAT.lstrip(".").upper(),
            "config": dict(engine.config),
            "runtime": runtime,
        },
    )


def build_rapidocr() -> Peer:
    from rapidocr import RapidOCR

    log = LogTap("RapidOCR")
    engine = RapidOCR()

    def recognise(bgr: Image) -> str:
        # Its return type is a union over its det/cls/rec-only modes; the full pipeline's
        # output has .txts (None when nothing was found).
        txts = getattr(engine(bgr), "txts", None)
        # What its users do: the lines in the order it returns them, one per line.
        return "\n".join(txts) if txts else ""

    return Peer(as_is, recognise, {"version": version("rapidocr"), "log": log})


def build_tesseract() -> Peer:
    import cv2
    import pytesseract

    def recognise(bgr: Image) -> str:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return str(pytesseract.image_to_string(rgb, lang=TESSERACT_LANG)).strip()

    info = {
        "version": str(pytesseract.get_tesseract_version()),
        "lang": TESSERACT_LANG,
        "OMP_THREAD_LIMIT": os.environ.get("OMP_THREAD_LIMIT"),
    }
    return Peer(as_is, recognise, info)


def build_peer(peer: str) -> Peer:
    if peer.startswith("ocrserve-"):
        return build_ocrserve(peer.removeprefix("ocrserve-"))
    if peer.startswith("faster-paddle-"):
        return build_faster_paddle(peer.removeprefix("faster-paddle-"))
    if peer == "rapidocr":
        return build_rapidocr()
    if peer == "tesseract":
        return build_tesseract()
    raise ValueError(f"unknown peer {peer!r}; expected one of {', '.join(PEERS)}")


def maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss * 1024 / MB  # ru_maxrss is in KiB on Linux


def worker(peer: str, job_path: Path, result_path: Path) -> int:
    """Cold start on one image, then OCR every item of the job; write the result as JSON."""
    t_main = time.time()
    forbid_network("bench/engine.py")
    job = json.loads(job_path.read_text(encoding="utf-8"))
    built = build_peer(peer)
    t_built = time.time()
    built.recognise(built.prepare(load_bgr(Path(job["cold_image"]))))
    t_first = time.time()
    rss_loaded = maxrss_mb(resource.RUSAGE_SELF)

    items = []
    t0 = time.perf_counter()
    for item in job["items"]:
        # Decoding (and the peer's own input preparation) stays outside the timed call.
        data = built.prepare(load_bgr(Path(item["path"])))
        start = time.perf_counter()
        out = built.recognise(data)
        seconds = time.perf_counter() - start
        texts = {"text": out} if isinstance(out, str) else dict(out)
        items.append({**item, "seconds": seconds, "text": texts.pop("text")})
        if texts:
            items[-1]["alt_texts"] = texts
        del data
    loop_s = time.perf_counter() - t0

    info = built.info
    log = info.pop("log", None)
    result = {
        "peer": peer,
        "info": info,
        "log_notes": log.notable() if isinstance(log, LogTap) else [],
        "t_main": t_main,
        "t_built": t_built,
        "t_first_result": t_first,
        "rss_after_first_mb": rss_loaded,
        "peak_rss_self_mb": maxrss_mb(resource.RUSAGE_SELF),
        # Tesseract does its work in child processes; the largest of them runs while this
        # process is alive, so the sum bounds what the peer holds at once.
        "peak_rss_children_mb": maxrss_mb(resource.RUSAGE_CHILDREN),
        "loop_wall_s": loop_s,
        "items": items,
    }
    result_path.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- parent side


def spawn(
    peer: str, kind: str, items: list[dict[str, Any]], cold: Path, run: Path, tag: str
) -> dict[str, Any]:
    """Run one fresh worker; returns its result plus cold-start timings, or an error."""
    for sub in ("jobs", "results", "logs"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    job, result, log = (
        run / "jobs" / f"{tag}.json",
        run / "results" / f"{tag}.json",
        run / "logs" / f"{tag}.log",
    )
    job.write_text(json.dumps({"cold_image": str(cold), "items": items}), encoding="utf-8")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        peer,
        "--job",
        str(job),
        "--result",
        str(result),
    ]
    res, t_spawn = run_worker(cmd, log, result)
    if "error" in res:
        return {"peer": peer, "kind": kind, "tag": tag, **res}
    res.update(
        kind=kind,
        tag=tag,
        log=str(log),
        cold_start_s=res["t_first_result"] - t_spawn,
        cold_parts_s={
            "interpreter": res["t_main"] - t_spawn,
            "imports_and_models": res["t_built"] - res["t_main"],
            "first_page": res["t_first_result"] - res["t_built"],
        },
    )
    return res


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def speed_items(eval_dir: Path, limit: int | None) -> list[dict[str, Any]]:
    paths = sorted(p for p in (eval_dir / SPEED).iterdir() if p.suffix.lower() in SPEED_SUFFIXES)
    return [{"set": SPEED, "image": p.name, "path": str(p)} for p in paths[:limit]]


def render_page(pdf: Path, dpi: int, page: int, dest: Path) -> tuple[Path, str, str | None]:
    """Render one PDF page to PNG; returns the PNG, how it was rendered, and why ocrserve's
    default decode limits refuse the file (None if they do not)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{pdf.stem}-p{page}-{dpi}dpi.png"
    try:
        from ocrserve.decode import DecodeLimits, decode_path
        from ocrserve.errors import LimitExceededError
    except ImportError:
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(str(pdf))
        try:
            doc[page - 1].render(scale=dpi / 72).to_pil().convert("RGB").save(out)
        finally:
            doc.close()
        return out, f"pypdfium2 {version('pypdfium2')} at {dpi} dpi", None
    from PIL import Image as PILImage

    refused = None
    try:
        # Only the pages' sizes are checked here; a page renders when its .image is read.
        document = decode_path(pdf, DecodeLimits(pdf_dpi=dpi))
    except LimitExceededError as e:
        refused = f"{type(e).__name__}: {e}"
        document = decode_path(pdf, DecodeLimits(pdf_dpi=dpi, max_pixels=RENDER_MAX_PIXELS))
    (found,) = [p for p in document.pages if p.index == page]
    PILImage.fromarray(found.image[:, :, ::-1].copy()).save(out)
    how = f"ocrserve.decode.decode_path at {dpi} dpi"
    return out, how, refused


class PageRenderer:
    """Renders each labelled PDF page once, to PNG, so that every peer reads the very same
    pixels, and the dev sets and the dense pages share the files."""

    def __init__(self, dest: Path, notes: list[str]) -> None:
        self.dest, self.notes = dest, notes
        self.done: dict[tuple[Path, int, int], Path] = {}
        self.told: set[Path] = set()

    def path(self, folder: Path, rec: dict[str, Any]) -> Path:
        pdf, dpi, page = folder / rec["image"], int(rec.get("render_dpi", 200)), int(rec["page"])
        key = (pdf, dpi, page)
        if key not in self.done:
            png, how, refused = render_page(pdf, dpi, page, self.dest)
            if pdf not in self.told:
                self.told.add(pdf)
                self.notes.append(f"{pdf.name} rendered with {how}.")
                if refused:
                    self.notes.append(
                        f"{pdf.name}: ocrserve's default decode limits refuse this file "
                        f"({refused}), so `ocrserve` at its default settings would not read "
                        f"it; the bench renders it with max_pixels={RENDER_MAX_PIXELS:,} and "
                        "hands the pixels to every peer's engine."
                    )
            _check_size(png, rec, self.notes)
            self.done[key] = png
        return self.done[key]


def dev_items(
    eval_dir: Path,
    sets: Sequence[str],
    limit: int | None,
    run: Path,
    pages: PageRenderer,
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """The items of every dev set, and the labels file to score each set against."""
    items: list[dict[str, Any]] = []
    labels: dict[str, Path] = {}
    for name in sets:
        path = eval_dir / "dev" / name / "labels.jsonl"
        records = read_jsonl(path)[:limit]
        if limit is not None:
            # score.py counts every labelled item it gets no prediction for as empty output:
            # a partial run is scored against the same partial labels.
            labels[name] = run / "labels" / name / "labels.jsonl"
            write_jsonl(labels[name], records)
        else:
            labels[name] = path
        for rec in records:
            item = {"set": name, "image": rec["image"], "path": str(path.parent / rec["image"])}
            if rec.get("page") is not None:
                item["page"] = rec["page"]
                item["path"] = str(pages.path(path.parent, rec))
            items.append(item)
    return items, labels


def dense_items(eval_dir: Path, limit: int | None, pages: PageRenderer) -> list[dict[str, Any]]:
    """The dense document pages: every labelled PDF page of ``DENSE_SOURCES`` (first ``limit``
    of each set)."""
    items = []
    for name in DENSE_SOURCES:
        path = eval_dir / "dev" / name / "labels.jsonl"
        for rec in read_jsonl(path)[:limit]:
            if rec.get("page") is None:
                continue
            items.append(
                {
                    "set": DENSE,
                    "source": name,
                    "image": rec["image"],
                    "page": rec["page"],
                    "path": str(pages.path(path.parent, rec)),
                }
            )
    return items


def page_key(item: dict[str, Any]) -> str:
    return f"{item['image']} p{item['page']}"


def _check_size(png: Path, rec: dict[str, Any], notes: list[str]) -> None:
    from PIL import Image as PILImage

    with PILImage.open(png) as im:
        size = im.size
    if rec.get("width") and size != (rec["width"], rec["height"]):
        # A pixel either way is the rounding of points x dpi / 72 (ocrserve rounds up).
        off = max(abs(size[0] - rec["width"]), abs(size[1] - rec["height"]))
        notes.append(
            ("" if off <= 1 else "WARNING: ")
            + f"{rec['image']} page {rec['page']} rendered {size[0]}x{size[1]}, "
            + f"labels say {rec['width']}x{rec['height']}"
            + (" (rounding of the page size)." if off <= 1 else ".")
        )


def run_score(pred: Path, labels: Path, flags: Sequence[str], eval_dir: Path) -> dict[str, Any]:
    """score.py's JSON report of one predictions file against one labels file."""
    report_path = pred.with_suffix(".score.json")
    cmd = [
        sys.executable,
        str(eval_dir / "score.py"),
        "--pred",
        str(pred),
        "--json",
        str(report_path),
        *flags,
        str(labels),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"score.py failed on {pred}: {done.stderr.strip()}")
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    return report


def score(
    peer: str, name: str, items: list[dict[str, Any]], labels: Path, eval_dir: Path, run: Path
) -> dict[str, Any]:
    preds = [
        {"image": it["image"], **({"page": it["page"]} if "page" in it else {}), "text": it["text"]}
        for it in items
        if it["set"] == name
    ]
    pred_path = run / "preds" / peer / f"{name}.jsonl"
    write_jsonl(pred_path, preds)
    flags = SCORE_FLAGS.get(name, ())
    report = run_score(pred_path, labels, flags, eval_dir)
    summary: dict[str, Any] = report["sets"][name]["summary"]
    summary["flags"] = list(flags)
    summary["preds"] = str(pred_path)
    # The items that need other flags than their set's, scored once more alone with them.
    rescored = []
    for (image, page), item_flags in ITEM_FLAGS.get(name, {}).items():
        records = [r for r in read_jsonl(labels) if (r["image"], r.get("page")) == (image, page)]
        in_set = [
            it for it in report["sets"][name]["items"] if (it["image"], it["page"]) == (image, page)
        ]
        if not records or not in_set:
            continue  # not in this (partial) run
        stem = f"{Path(image).stem}-p{page}"
        # score.py names a set after its labels' folder: keep the set's name.
        one_labels = run / "item_labels" / stem / name / "labels.jsonl"
        write_jsonl(one_labels, records)
        one_pred = run / "preds" / peer / f"{name}-{stem}.jsonl"
        write_jsonl(one_pred, [p for p in preds if (p["image"], p.get("page")) == (image, page)])
        alone = run_score(one_pred, one_labels, item_flags, eval_dir)["sets"][name]["summary"]
        rescored.append(
            {
                "image": image,
                "page": page,
                "flags": list(item_flags),
                "cer": alone["cer"],
                "bow_f1": alone["bow_f1"],
                "cer_in_set": in_set[0]["cer"],
            }
        )
    summary["rescored_items"] = rescored
    return summary


def rss_mb(w: dict[str, Any]) -> float:
    return float(w["peak_rss_self_mb"] + w["peak_rss_children_mb"])


def summarise(peer: str, workers: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [w for w in workers if w["peer"] == peer and "error" not in w]
    speed = [w for w in mine if w["kind"] == SPEED]
    dense = [w for w in mine if w["kind"] == DENSE]
    out: dict[str, Any] = {"errors": [w for w in workers if w["peer"] == peer and "error" in w]}
    if speed:
        per_round = [len(w["items"]) / sum(it["seconds"] for it in w["items"]) for w in speed]
        latencies = [it["seconds"] for w in speed for it in w["items"]]
        out.update(
            images_per_s=statistics.median(per_round),
            per_round_images_per_s=per_round,
            p50_ms=1000 * percentile(latencies, 0.50),
            p95_ms=1000 * percentile(latencies, 0.95),
            peak_rss_mb=max(rss_mb(w) for w in speed),
        )
    if dense:
        rounds: dict[str, list[float]] = {}
        for w in dense:
            for it in w["items"]:
                rounds.setdefault(page_key(it), []).append(it["seconds"])
        per_page = {page: statistics.median(s) for page, s in rounds.items()}
        out.update(
            s_per_dense_page=statistics.median(per_page.values()),
            dense_page_s=per_page,
            dense_rounds_s=rounds,
            dense_total_s_per_round=[sum(it["seconds"] for it in w["items"]) for w in dense],
            dense_peak_rss_mb=max(rss_mb(w) for w in dense),
        )
    # A start that had to quantise the int8 models first measures the one-off quantisation,
    # not a start: leave it out of the median whenever a start with the cache exists.
    warm = [w for w in mine if w["info"].get("int8_cache_existed", True)]
    starts = warm or mine
    if starts:
        out["cold_start_s"] = statistics.median(w["cold_start_s"] for w in starts)
        out["cold_start_n"] = len(starts)
        out["cold_starts_s"] = [w["cold_start_s"] for w in mine]
        out["cold_parts_s"] = {
            part: statistics.median(w["cold_parts_s"][part] for w in starts)
            for part in starts[0]["cold_parts_s"]
        }
    if peer == "ocrserve-int8" and mine:
        first = mine[0]
        out["int8_cache_existed"] = first["info"].get("int8_cache_existed")
        out["int8_first_start_s"] = first["cold_start_s"]
        out["int8_cold_from_warm_cache_only"] = bool(warm)
    if mine:
        out["info"] = mine[0]["info"]
    out["log_notes"] = sorted({n for w in mine for n in w["log_notes"]})
    return out


def render(
    peers: Sequence[str],
    summaries: dict[str, dict[str, Any]],
    scores: dict[str, dict[str, dict[str, Any]]],
    sets: Sequence[str],
    dense: Sequence[dict[str, Any]],
    machine: dict[str, Any],
    run_line: str,
    notes: list[str],
) -> str:
    lines = [
        "## Engine: ocrserve vs faster-paddle vs RapidOCR vs Tesseract",
        "",
        machine_header(machine, ("faster-paddle", "rapidocr", "tesseract")),
        "",
        run_line,
        "",
    ]
    dev = [s for s in sets if s not in (SPEED, DENSE)]
    target = TARGET_PEER if TARGET_PEER in peers else None
    head = [
        "peer",
        "images/s",
        f"ratio vs {BASELINE}",
        *([f"ratio vs {target}"] if target else []),
        "p50 ms",
        "p95 ms",
        "s / dense page",
        "peak RSS MB",
        "cold start s",
        *(f"{s} CER / F1 %" for s in dev),
    ]
    lines += table_head(head)
    base = summaries.get(BASELINE, {}).get("images_per_s")
    bar = summaries.get(target, {}).get("images_per_s") if target else None
    for peer in peers:
        s = summaries[peer]
        ips = s.get("images_per_s")
        ratio = ips / base if ips is not None and base else None
        cells = [
            peer,
            fmt(ips, ".2f"),
            fmt(ratio, ".2f"),
            *([fmt(ips / bar if ips is not None and bar else None, ".2f")] if target else []),
            fmt(s.get("p50_ms"), ".0f"),
            fmt(s.get("p95_ms"), ".0f"),
            fmt(s.get("s_per_dense_page"), ".2f"),
            fmt(s.get("peak_rss_mb"), ".0f"),
            fmt(s.get("cold_start_s"), ".2f"),
        ]
        for name in dev:
            sc = scores.get(peer, {}).get(name)
            cells.append(f"{100 * sc['cer']:.1f} / {100 * sc['bow_f1']:.1f}" if sc else "-")
        if s["errors"]:
            cells[0] += " (FAILED, see notes)"
        lines.append(table_row(cells))
    if dense and any("dense_page_s" in summaries[p] for p in peers):
        lines += ["", "Dense pages: seconds per page (median over rounds)", ""]
        lines += table_head(["page", *peers])
        for it in dense:
            key = page_key(it)
            lines.append(
                table_row(
                    [
                        key,
                        *(fmt(summaries[p].get("dense_page_s", {}).get(key), ".2f") for p in peers),
                    ]
                )
            )
        lines.append(
            table_row(
                [
                    "**median over pages**",
                    *(f"**{fmt(summaries[p].get('s_per_dense_page'), '.2f')}**" for p in peers),
                ]
            )
        )
        lines.append(
            table_row(
                ["peak RSS MB", *(fmt(summaries[p].get("dense_peak_rss_mb"), ".0f") for p in peers)]
            )
        )
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def threads_note(summaries: dict[str, dict[str, Any]]) -> str:
    fp = [
        f"{peer} threads={cfg.get('threads')} (det {cfg.get('det_threads')}, "
        f"{cfg.get('rec_workers')} rec workers x {cfg.get('rec_threads')})"
        for peer, s in summaries.items()
        if (cfg := s.get("info", {}).get("config"))
    ]
    return (
        "Threads: every peer at its default, all cores: ocrserve intra_op_threads=0, "
        + (
            "faster-paddle threads=None (physical cores within the affinity), resolved to "
            + ", ".join(fp)
            + ", "
            if fp
            else ""
        )
        + "rapidocr intra_op_num_threads=-1 (onnxruntime chooses), tesseract OpenMP "
        f"(OMP_THREAD_LIMIT={os.environ.get('OMP_THREAD_LIMIT', 'unset')})."
    )


def build_notes(
    peers: Sequence[str],
    summaries: dict[str, dict[str, Any]],
    scores: dict[str, dict[str, dict[str, Any]]],
    alt_scores: dict[str, dict[str, dict[str, dict[str, Any]]]],
    dense: Sequence[dict[str, Any]],
    pre: list[str],
) -> list[str]:
    notes = [
        "images/s: images over the summed engine-call time (one image per call, sequential, "
        f"image decoding excluded), median over rounds; ratio vs {BASELINE}"
        + (f" and vs {TARGET_PEER}" if TARGET_PEER in peers else "")
        + " are ratios of medians.",
        "p50/p95: per-image latency pooled over all rounds. Peak RSS: the worker's ru_maxrss "
        "at the end of the speed set (models and interpreter included), plus for tesseract "
        "its largest child process (RUSAGE_CHILDREN).",
        f"Cold start: spawn of a fresh worker to its first result on {COLD_IMAGE} (interpreter, "
        "imports, model loading, first page), median of every fresh worker of the peer.",
        threads_note(summaries),
        f"tesseract: pytesseract image_to_string, lang={TESSERACT_LANG}, default psm, one "
        "tesseract process per image. rapidocr: RapidOCR() defaults, page text = its lines in "
        "returned order joined by newlines.",
        "faster-paddle: OcrEngine(model_size=small|tiny) defaults, page text = the result's "
        '"text" (its "structured_text", another reading order, is scored in the notes below); '
        "it takes encoded bytes only, so each decoded image is encoded to an "
        f"uncompressed {FASTER_PADDLE_FORMAT.lstrip('.').upper()} outside the timed call, "
        "and its call includes that format's decode (a copy), where the others get the "
        "decoded array.",
        "Accuracy: page CER (micro) and bag-of-words F1 from shared/eval/score.py; "
        + ", ".join(f"{k} {' '.join(v)}" for k, v in SCORE_FLAGS.items())
        + ". Page CER on multi-column pages depends on reading order; compare F1 too.",
    ]
    if dense:
        n_docs = ", ".join(
            f"{name} ({sum(1 for d in dense if d['source'] == name)})" for name in DENSE_SOURCES
        )
        notes.append(
            f"s / dense page: seconds of one engine call on one dense document page ({n_docs} "
            "pages, rendered once to PNG at the labels' render_dpi, decoding excluded as for "
            "the speed set), each page's median over rounds, then the median over the "
            f"{len(dense)} pages; a fresh worker per peer and round, warmed up on {COLD_IMAGE}, "
            "after that round's speed workers, peers alternating. The speed table's peak RSS "
            "excludes these pages; the dense table has their own."
        )
    # ocrserve's Settings read OCRSERVE_* variables: any set here change its defaults.
    overrides = env_overrides()
    if overrides:
        notes.append(f"ocrserve ran with environment overrides: {', '.join(overrides)}.")
    for peer in peers:
        s = summaries[peer]
        if "per_round_images_per_s" in s:
            rounds = ", ".join(f"{v:.2f}" for v in s["per_round_images_per_s"])
            parts = ", ".join(f"{k} {v:.2f}" for k, v in s.get("cold_parts_s", {}).items())
            notes.append(
                f"{peer}: images/s per round {rounds}; cold start median of "
                f"{s['cold_start_n']} starts ({parts} s)."
            )
        if "dense_total_s_per_round" in s:
            totals = ", ".join(f"{v:.1f}" for v in s["dense_total_s_per_round"])
            notes.append(f"{peer}: dense pages, seconds for all pages per round {totals}.")
        info = s.get("info", {})
        if "runtime" in info:
            notes.append(
                f"{peer}: faster-paddle {info.get('version')} runs its own linked ONNX Runtime "
                f"{info['runtime']}, not the Python onnxruntime."
            )
        if peer == "ocrserve-int8" and "int8_cache_existed" in s:
            if s["int8_cache_existed"]:
                notes.append("ocrserve-int8: the int8 model cache existed at the first start.")
            else:
                notes.append(
                    "ocrserve-int8: the int8 model cache did NOT exist at the first start; that "
                    f"start quantised the models ({s['int8_first_start_s']:.1f} s to first "
                    "result) and is "
                    + (
                        "left out of the cold-start median."
                        if s["int8_cold_from_warm_cache_only"]
                        else "the only start measured: its cold start includes quantisation."
                    )
                )
        for line in s.get("log_notes", []):
            notes.append(f"{peer} log: {line}")
        for err in s["errors"]:
            notes.append(
                f"FAILED {err['tag']}: {err['error']}, log {err['log']}: "
                + " / ".join(err["log_tail"])
            )
        for name, sc in scores.get(peer, {}).items():
            if sc["missing"]:
                notes.append(f"{peer} {name}: {sc['missing']} items had no prediction.")
        for alt, per_set in alt_scores.get(peer, {}).items():
            notes.append(
                f"{peer} scored on its {alt} instead of its text (same calls), CER / F1 %: "
                + ", ".join(
                    f"{name} {100 * sc['cer']:.1f} / {100 * sc['bow_f1']:.1f}"
                    for name, sc in per_set.items()
                )
                + "."
            )
    rescored = [
        (peer, name, r)
        for peer in peers
        for name, sc in scores.get(peer, {}).items()
        for r in sc.get("rescored_items", [])
    ]
    for name in sorted({n for _, n, _ in rescored}):
        mine = [(peer, r) for peer, n, r in rescored if n == name]
        r0 = mine[0][1]
        notes.append(
            f"{name} is scored as one set without flags (score.py's flags are per run, not per "
            f"item), so its CER counts spacing on {r0['image']} p{r0['page']}; that page alone "
            f"with {' '.join(r0['flags'])}, CER (in the set): "
            + ", ".join(
                f"{peer} {100 * r['cer']:.1f}% ({100 * r['cer_in_set']:.1f}%)" for peer, r in mine
            )
            + "."
        )
    ran = BASELINE in peers and not summaries[BASELINE]["errors"]
    if ran and not any(f"{BASELINE} log" in n for n in notes):
        notes.append("rapidocr: logged no warnings and no download attempt (models from wheel).")
    return notes + pre


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    all_sets = (SPEED, DENSE, *DEV_SETS)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--peers",
        default=",".join(PEERS),
        type=lambda v: comma_list(v, PEERS, "peer"),
        help=f"comma list, default all: {','.join(PEERS)}",
    )
    ap.add_argument(
        "--sets",
        default=",".join(all_sets),
        type=lambda v: comma_list(v, all_sets, "set"),
        help=f"comma list, default all: {','.join(all_sets)} ({DENSE}: the dense pages of "
        f"{' and '.join(DENSE_SOURCES)}, timed in rounds; the others after {DENSE}: accuracy)",
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="speed and dense rounds per peer (default 3)"
    )
    ap.add_argument("--limit", type=int, default=None, help="first N images per set")
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    ap.add_argument(
        "--write-results",
        action="store_true",
        help=f"replace the engine section of {RESULTS_MD.relative_to(ROOT)}",
    )
    # Internal: how the parent starts a worker.
    ap.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rounds < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--rounds and --limit must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker, args.job, args.result)

    eval_dir: Path = args.eval_dir.resolve()
    peers: list[str] = args.peers
    sets = [s for s in (SPEED, DENSE, *DEV_SETS) if s in args.sets]
    run = new_run("engine")
    machine = machine_info()
    machine["faster-paddle"] = pkg("faster-paddle")
    notes: list[str] = []
    if args.limit is not None:
        notes.append(f"PARTIAL RUN (--limit {args.limit}): not comparable with full runs.")

    pages = PageRenderer(run / "pages", notes)
    speed = speed_items(eval_dir, args.limit) if SPEED in sets else []
    dense = dense_items(eval_dir, args.limit, pages) if DENSE in sets else []
    dev_sets = [s for s in sets if s not in (SPEED, DENSE)]
    dev, labels = dev_items(eval_dir, dev_sets, args.limit, run, pages)
    cold = eval_dir / SPEED / COLD_IMAGE

    def progress(w: dict[str, Any]) -> None:
        what = w.get("error") or f"cold start {w['cold_start_s']:.2f} s"
        if "error" not in w and w["kind"] == SPEED:
            what += f", {len(w['items']) / sum(i['seconds'] for i in w['items']):.2f} images/s"
        if "error" not in w and w["kind"] == DENSE:
            s = statistics.median(i["seconds"] for i in w["items"])
            what += f", median {s:.2f} s per dense page"
        print(f"[engine] {w['tag']}: {what}", file=sys.stderr, flush=True)

    workers: list[dict[str, Any]] = []
    timed = [(kind, items) for kind, items in ((SPEED, speed), (DENSE, dense)) if items]
    for r in range(1, args.rounds + 1) if timed else ():
        for kind, items in timed:
            for peer in peers:
                workers.append(spawn(peer, kind, items, cold, run, f"{peer}-{kind}-r{r}"))
                progress(workers[-1])
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    # A peer's other page texts (faster-paddle's structured_text): peer -> text -> set -> score.
    alt_scores: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for peer in peers:
        if not dev:
            break
        w = spawn(peer, "accuracy", dev, cold, run, f"{peer}-accuracy")
        workers.append(w)
        progress(w)
        if "error" not in w:
            scores[peer] = {
                name: score(peer, name, w["items"], labels[name], eval_dir, run) for name in labels
            }
            for alt in sorted({k for it in w["items"] for k in it.get("alt_texts", {})}):
                alt_items = [
                    {**it, "text": it.get("alt_texts", {}).get(alt, "")} for it in w["items"]
                ]
                alt_scores.setdefault(peer, {})[alt] = {
                    name: score(f"{peer}.{alt}", name, alt_items, labels[name], eval_dir, run)
                    for name in labels
                }
    machine["loadavg_end"] = os.getloadavg()[0]

    summaries = {peer: summarise(peer, workers) for peer in peers}
    counts = ", ".join(f"{s} ({sum(1 for d in dev if d['set'] == s)})" for s in labels)
    speed_line = (
        f"{len(speed)} speed images x {args.rounds} rounds (a fresh worker process per peer "
        "and round, peers alternating round by round)"
        if speed
        else "no speed set"
    )
    dense_line = (
        f"{len(dense)} dense pages x {args.rounds} rounds (the same way)"
        if dense
        else "no dense pages"
    )
    run_line = (
        f"Run: {speed_line}; {dense_line}; accuracy on {counts or 'no sets'}; "
        f"raw data `{run.relative_to(ROOT)}.json`."
    )
    report = render(
        peers,
        summaries,
        scores,
        sets,
        dense,
        machine,
        run_line,
        build_notes(peers, summaries, scores, alt_scores, dense, notes),
    )
    raw = {
        "args": raw_args(args),
        "machine": machine,
        "summaries": summaries,
        "scores": scores,
        "alt_scores": alt_scores,
        "workers": workers,
        "markdown": report,
    }
    publish("engine", run, raw, report, to_results=args.write_results)
    failed = any(s["errors"] for s in summaries.values()) or any(
        sc["missing"] for per in scores.values() for sc in per.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
