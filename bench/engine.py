#!/usr/bin/env python3
"""Engine benchmark: ocrserve (fp32, int8), RapidOCR and Tesseract side by side in one run.

    python bench/engine.py                        # all peers, all sets, 3 rounds
    python bench/engine.py --limit 2 --rounds 1   # a quick check that everything runs
    python bench/engine.py --peers ocrserve-fp32,rapidocr --sets speed --rounds 5
    python bench/engine.py --write-results        # also update bench/RESULTS.md

Every measurement runs in a fresh worker process (``--worker PEER --job FILE``, spawned by
this script), so no peer inherits another's imports, threads or memory:

- speed: each of ``--rounds`` rounds spawns one worker per peer, peers alternating round by
  round (A1 B1 C1 A2 B2 C2 ...), so slow drifts in the load of a shared machine hit every peer
  alike. A worker OCRs the speed images one per call, sequentially; throughput is images over
  the summed call time (image decoding excluded), reported as the median over rounds.
- accuracy: one more worker per peer OCRs the dev sets; ``../shared/eval/score.py`` scores
  the predictions (page CER, micro, and bag-of-words F1).
- cold start: every worker first OCRs one small image; cold start is the wall time from just
  before the spawn to that first result (interpreter, imports, model loading, first page),
  the median over all fresh workers of a peer. That first page also warms the engine up
  before anything is timed.

Peers run with their default threading (all cores). Nothing here touches the network: the
workers refuse any internet socket, so a peer that tries to download a model fails loudly.
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
from typing import TYPE_CHECKING, Any

# bench/ is not a package: running this file puts bench/ first on sys.path, so the harness
# and the tables import as top-level modules.
from harness import (
    DEFAULT_EVAL_DIR,
    MB,
    ROOT,
    env_overrides,
    forbid_network,
    machine_header,
    machine_info,
    new_run,
    percentile,
    run_worker,
)
from tables import RESULTS_MD, comma_list, fmt, publish, raw_args, table_head, table_row

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]
    Recognise = Callable[[Image], str]

PEERS = ("ocrserve-fp32", "ocrserve-int8", "rapidocr", "tesseract")
BASELINE = "rapidocr"
SPEED = "speed"
DEV_SETS = (
    "sroie_receipts_en",
    "icdar2015_scene_en",
    "rects_signboards_zh",
    "tesseract_pages_en",
    "pdf_docs",
)
#: SROIE's ground truth is all upper case; Chinese has no spaces to score.
SCORE_FLAGS: dict[str, tuple[str, ...]] = {
    "sroie_receipts_en": ("--ignore-case",),
    "rects_signboards_zh": ("--nospace",),
}
COLD_IMAGE = "en_doc_paragraph.jpg"
SPEED_SUFFIXES = (".jpg", ".jpeg", ".png")
TESSERACT_LANG = "eng+chi_sim"


# --------------------------------------------------------------------------- worker side
# Everything heavy is imported inside the peer builders: those imports are part of a peer's
# cold start, and the parent process never needs them.


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


def build_ocrserve(precision: str) -> tuple[Recognise, dict[str, Any]]:
    from ocrserve.config import Settings
    from ocrserve.engine import Engine, ModelSet
    from ocrserve.engine.models import int8_path
    from ocrserve.types import Page

    settings = Settings(precision=precision)  # type: ignore[arg-type]
    info: dict[str, Any] = {"precision": precision, "intra_op_threads": settings.intra_op_threads}
    if precision == "int8":
        # Quantising on first use takes far longer than loading, so a cold start that had to
        # build the cache is not comparable with the others: record which kind this one was.
        models = ModelSet.locate(settings.model_dir, verify=False)
        cache = settings.data_dir / "models"
        targets = [int8_path(models.path(s), cache) for s in (models.det, *models.recs)]
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

    return recognise, info


def build_rapidocr() -> tuple[Recognise, dict[str, Any]]:
    from rapidocr import RapidOCR

    log = LogTap("RapidOCR")
    engine = RapidOCR()

    def recognise(bgr: Image) -> str:
        # Its return type is a union over its det/cls/rec-only modes; the full pipeline's
        # output has .txts (None when nothing was found).
        txts = getattr(engine(bgr), "txts", None)
        # What its users do: the lines in the order it returns them, one per line.
        return "\n".join(txts) if txts else ""

    return recognise, {"version": version("rapidocr"), "log": log}


def build_tesseract() -> tuple[Recognise, dict[str, Any]]:
    import cv2
    import pytesseract

    def recognise(bgr: Image) -> str:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return str(pytesseract.image_to_string(rgb, lang=TESSERACT_LANG)).strip()

    return recognise, {
        "version": str(pytesseract.get_tesseract_version()),
        "lang": TESSERACT_LANG,
        "OMP_THREAD_LIMIT": os.environ.get("OMP_THREAD_LIMIT"),
    }


def build_peer(peer: str) -> tuple[Recognise, dict[str, Any]]:
    if peer.startswith("ocrserve-"):
        return build_ocrserve(peer.removeprefix("ocrserve-"))
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
    recognise, info = build_peer(peer)
    t_built = time.time()
    recognise(load_bgr(Path(job["cold_image"])))
    t_first = time.time()
    rss_loaded = maxrss_mb(resource.RUSAGE_SELF)

    items = []
    t0 = time.perf_counter()
    for item in job["items"]:
        bgr = load_bgr(Path(item["path"]))
        start = time.perf_counter()
        text = recognise(bgr)
        items.append({**item, "seconds": time.perf_counter() - start, "text": text})
    loop_s = time.perf_counter() - t0

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


def render_pdf(pdf: Path, dpi: int, dest: Path) -> tuple[dict[int, Path], str]:
    """Render every page once to PNG, so that every peer reads the very same pixels."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[int, Path] = {}
    try:
        from ocrserve.decode import DecodeLimits, decode_path
    except ImportError:
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(str(pdf))
        try:
            for n in range(len(doc)):
                out[n + 1] = dest / f"{pdf.stem}-p{n + 1}-{dpi}dpi.png"
                doc[n].render(scale=dpi / 72).to_pil().convert("RGB").save(out[n + 1])
        finally:
            doc.close()
        return out, f"pypdfium2 {version('pypdfium2')} at {dpi} dpi"
    from PIL import Image as PILImage

    for page in decode_path(pdf, DecodeLimits(pdf_dpi=dpi)).pages:
        out[page.index] = dest / f"{pdf.stem}-p{page.index}-{dpi}dpi.png"
        PILImage.fromarray(page.image[:, :, ::-1].copy()).save(out[page.index])
    return out, f"ocrserve.decode.decode_path at {dpi} dpi"


def dev_items(
    eval_dir: Path, sets: Sequence[str], limit: int | None, run: Path, notes: list[str]
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
        rendered: dict[tuple[str, int], dict[int, Path]] = {}
        for rec in records:
            item = {"set": name, "image": rec["image"], "path": str(path.parent / rec["image"])}
            if rec.get("page") is not None:
                key = (rec["image"], int(rec.get("render_dpi", 200)))
                if key not in rendered:
                    rendered[key], how = render_pdf(path.parent / key[0], key[1], run / "pages")
                    notes.append(f"{key[0]} rendered with {how}.")
                item["page"] = rec["page"]
                item["path"] = str(rendered[key][rec["page"]])
                _check_size(Path(item["path"]), rec, notes)
            items.append(item)
    return items, labels


def _check_size(png: Path, rec: dict[str, Any], notes: list[str]) -> None:
    from PIL import Image as PILImage

    with PILImage.open(png) as im:
        size = im.size
    if rec.get("width") and size != (rec["width"], rec["height"]):
        notes.append(
            f"WARNING: {rec['image']} page {rec['page']} rendered {size[0]}x{size[1]}, "
            f"labels say {rec['width']}x{rec['height']}."
        )


def score(
    peer: str, name: str, items: list[dict[str, Any]], labels: Path, eval_dir: Path, run: Path
) -> dict[str, Any]:
    preds = [
        {"image": it["image"], **({"page": it["page"]} if "page" in it else {}), "text": it["text"]}
        for it in items
        if it["set"] == name
    ]
    pred_path = run / "preds" / peer / f"{name}.jsonl"
    report_path = pred_path.with_suffix(".score.json")
    write_jsonl(pred_path, preds)
    cmd = [
        sys.executable,
        str(eval_dir / "score.py"),
        "--pred",
        str(pred_path),
        "--json",
        str(report_path),
        *SCORE_FLAGS.get(name, ()),
        str(labels),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"score.py failed on {pred_path}: {done.stderr.strip()}")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    summary: dict[str, Any] = report["sets"][name]["summary"]
    summary["flags"] = list(SCORE_FLAGS.get(name, ()))
    summary["preds"] = str(pred_path)
    return summary


def summarise(peer: str, workers: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [w for w in workers if w["peer"] == peer and "error" not in w]
    speed = [w for w in mine if w["kind"] == SPEED]
    out: dict[str, Any] = {"errors": [w for w in workers if w["peer"] == peer and "error" in w]}
    if speed:
        per_round = [len(w["items"]) / sum(it["seconds"] for it in w["items"]) for w in speed]
        latencies = [it["seconds"] for w in speed for it in w["items"]]
        out.update(
            images_per_s=statistics.median(per_round),
            per_round_images_per_s=per_round,
            p50_ms=1000 * percentile(latencies, 0.50),
            p95_ms=1000 * percentile(latencies, 0.95),
            peak_rss_mb=max(w["peak_rss_self_mb"] + w["peak_rss_children_mb"] for w in speed),
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
    out["log_notes"] = sorted({n for w in mine for n in w["log_notes"]})
    return out


def render(
    peers: Sequence[str],
    summaries: dict[str, dict[str, Any]],
    scores: dict[str, dict[str, dict[str, Any]]],
    sets: Sequence[str],
    machine: dict[str, Any],
    run_line: str,
    notes: list[str],
) -> str:
    lines = [
        "## Engine: ocrserve vs RapidOCR vs Tesseract",
        "",
        machine_header(machine, ("rapidocr", "tesseract")),
        "",
        run_line,
        "",
    ]
    dev = [s for s in sets if s != SPEED]
    head = [
        "peer",
        "images/s",
        f"ratio vs {BASELINE}",
        "p50 ms",
        "p95 ms",
        "peak RSS MB",
        "cold start s",
        *(f"{s} CER / F1 %" for s in dev),
    ]
    lines += table_head(head)
    base = summaries.get(BASELINE, {}).get("images_per_s")
    for peer in peers:
        s = summaries[peer]
        ips = s.get("images_per_s")
        ratio = ips / base if ips is not None and base else None
        cells = [
            peer,
            fmt(ips, ".2f"),
            fmt(ratio, ".2f"),
            fmt(s.get("p50_ms"), ".0f"),
            fmt(s.get("p95_ms"), ".0f"),
            fmt(s.get("peak_rss_mb"), ".0f"),
            fmt(s.get("cold_start_s"), ".2f"),
        ]
        for name in dev:
            sc = scores.get(peer, {}).get(name)
            cells.append(f"{100 * sc['cer']:.1f} / {100 * sc['bow_f1']:.1f}" if sc else "-")
        if s["errors"]:
            cells[0] += " (FAILED, see notes)"
        lines.append(table_row(cells))
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def build_notes(
    peers: Sequence[str],
    summaries: dict[str, dict[str, Any]],
    scores: dict[str, dict[str, dict[str, Any]]],
    pre: list[str],
) -> list[str]:
    notes = [
        "images/s: images over the summed engine-call time (one image per call, sequential, "
        "image decoding excluded), median over rounds; ratio vs rapidocr is the ratio of medians.",
        "p50/p95: per-image latency pooled over all rounds. Peak RSS: the worker's ru_maxrss "
        "at the end of the speed set (models and interpreter included), plus for tesseract "
        "its largest child process (RUSAGE_CHILDREN).",
        f"Cold start: spawn of a fresh worker to its first result on {COLD_IMAGE} (interpreter, "
        "imports, model loading, first page), median of every fresh worker of the peer.",
        "Threads: every peer at its default, all cores: ocrserve intra_op_threads=0, rapidocr "
        "intra_op_num_threads=-1 (onnxruntime chooses), tesseract OpenMP "
        f"(OMP_THREAD_LIMIT={os.environ.get('OMP_THREAD_LIMIT', 'unset')}).",
        f"tesseract: pytesseract image_to_string, lang={TESSERACT_LANG}, default psm, one "
        "tesseract process per image. rapidocr: RapidOCR() defaults, page text = its lines in "
        "returned order joined by newlines.",
        "Accuracy: page CER (micro) and bag-of-words F1 from shared/eval/score.py; "
        + ", ".join(f"{k} {' '.join(v)}" for k, v in SCORE_FLAGS.items())
        + ". Page CER on multi-column pages depends on reading order; compare F1 too.",
    ]
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
    ran = BASELINE in peers and not summaries[BASELINE]["errors"]
    if ran and not any(f"{BASELINE} log" in n for n in notes):
        notes.append("rapidocr: logged no warnings and no download attempt (models from wheel).")
    return notes + pre


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    all_sets = (SPEED, *DEV_SETS)
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
        help=f"comma list, default all: {','.join(all_sets)}",
    )
    ap.add_argument("--rounds", type=int, default=3, help="speed rounds per peer (default 3)")
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
    sets = [s for s in (SPEED, *DEV_SETS) if s in args.sets]
    run = new_run("engine")
    machine = machine_info()
    notes: list[str] = []
    if args.limit is not None:
        notes.append(f"PARTIAL RUN (--limit {args.limit}): not comparable with full runs.")

    speed = speed_items(eval_dir, args.limit) if SPEED in sets else []
    dev, labels = dev_items(eval_dir, [s for s in sets if s != SPEED], args.limit, run, notes)
    cold = eval_dir / SPEED / COLD_IMAGE

    def progress(w: dict[str, Any]) -> None:
        what = w.get("error") or f"cold start {w['cold_start_s']:.2f} s"
        if "error" not in w and w["kind"] == SPEED:
            what += f", {len(w['items']) / sum(i['seconds'] for i in w['items']):.2f} images/s"
        print(f"[engine] {w['tag']}: {what}", file=sys.stderr, flush=True)

    workers: list[dict[str, Any]] = []
    for r in range(1, args.rounds + 1) if speed else ():
        for peer in peers:
            workers.append(spawn(peer, SPEED, speed, cold, run, f"{peer}-speed-r{r}"))
            progress(workers[-1])
    scores: dict[str, dict[str, dict[str, Any]]] = {}
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
    machine["loadavg_end"] = os.getloadavg()[0]

    summaries = {peer: summarise(peer, workers) for peer in peers}
    counts = ", ".join(f"{s} ({sum(1 for d in dev if d['set'] == s)})" for s in labels)
    speed_line = (
        f"{len(speed)} speed images x {args.rounds} rounds (a fresh worker process per peer "
        "and round, peers alternating round by round)"
        if speed
        else "no speed set"
    )
    run_line = (
        f"Run: {speed_line}; accuracy on {counts or 'no sets'}; "
        f"raw data `{run.relative_to(ROOT)}.json`."
    )
    report = render(
        peers,
        summaries,
        scores,
        sets,
        machine,
        run_line,
        build_notes(peers, summaries, scores, notes),
    )
    raw = {
        "args": raw_args(args),
        "machine": machine,
        "summaries": summaries,
        "scores": scores,
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
