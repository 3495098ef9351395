#!/usr/bin/env python3
"""Hostile-input benchmark: the peak memory of a fresh ``ocrserve serve`` for each bomb file.

    python bench/bombs.py                          # every case
    python bench/bombs.py --cases strip-20000x1,tiff-30
    python bench/bombs.py --write-results          # also update bench/RESULTS.md

Each case starts its own server (``python -m ocrserve serve`` on 127.0.0.1, every setting at
its default but a fresh data folder and the result cache off), waits for ``GET /ready``, reads
the server's resident memory, sends one file, waits for the answer (``/ocr``) or for the
task's end (``/ocr/async``, polling ``GET /task/{id}``), and reads the server's peak resident
memory over the request (Linux's ``VmHWM``, reset just before it: every allocation however
short) and its memory a second later.

The files are made here, a few hundred bytes to a few KB each: 1-pixel strips (PNG, W x 1 and
1 x W), a 30-page TIFF and a 10-page PDF whose pages are each at the per-page pixel limit
(5000 x 8000, blank; the TIFF's pages share one CCITT G4 strip, the PDF's render at 200 dpi),
and for scale a blank A4 page and one page at the limit.
Only 127.0.0.1 is contacted. Raw results land in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pypdfium2 as pdfium

# bench/ is not a package: running this file puts bench/ first on sys.path, so the harness
# and the tables import as top-level modules and every report shares one machine line.
from harness import (
    HOST,
    ROOT,
    Proc,
    commit,
    free_port,
    machine_header,
    machine_info,
    new_run,
    ocrserve_cmd,
    pkg,
    wait_ready,
)
from PIL import Image
from tables import comma_list, fmt, publish

READY_TIMEOUT_S = 120
ANSWER_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30
#: A page of exactly the default per-page limit (40 M pixels); 1800 x 2880 pt at 200 dpi.
AT_LIMIT = (5000, 8000)
PDF_PAGE_PT = (1800.0, 2880.0)
A4_PT = (595.0, 842.0)


# ---------------------------------------------------------------------------- the files


def strip_png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("L", size, 255).save(out, "PNG")
    return out.getvalue()


def blank_tiff(size: tuple[int, int], pages: int) -> bytes:
    """Blank 1-bit pages whose directories all point at one CCITT G4 strip made by Pillow."""
    one = io.BytesIO()
    Image.new("1", size, 1).save(one, "TIFF", compression="group4", strip_size=2**31 - 1)
    with Image.open(one) as img:
        (offset,), (count,) = img.tag_v2[273], img.tag_v2[279]
        photometric = int(img.tag_v2[262])
    strip = one.getvalue()[offset : offset + count]
    strip += b"\x00" * (len(strip) % 2)
    width, height = size
    entries = [  # (tag, type: 3 SHORT or 4 LONG, value), in tag order
        (256, 4, width), (257, 4, height), (258, 3, 1), (259, 3, 4), (262, 3, photometric),
        (273, 4, 8), (277, 3, 1), (278, 4, height), (279, 4, count),
    ]  # fmt: skip
    first = 8 + len(strip)
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", first) + strip)
    for n in range(pages):
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", first + ifd_size * (n + 1) if n + 1 < pages else 0)
    return bytes(out)


def blank_pdf(size_pt: tuple[float, float], pages: int) -> bytes:
    pdf = pdfium.PdfDocument.new()
    try:
        for _ in range(pages):
            pdf.new_page(*size_pt).close()
        out = io.BytesIO()
        pdf.save(out)
    finally:
        pdf.close()
    return out.getvalue()


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # pages x size, for the table
    make: Callable[[], bytes]
    filename: str
    mime: str
    route: str = "/ocr"


def cases() -> list[Case]:
    out = []
    for w in (20_000, 100_000, 300_000):
        for size in ((w, 1), (1, w)):
            label = f"{size[0]}x{size[1]}"
            out.append(
                Case(f"strip-{label}", f"1 page, {label}", lambda s=size: strip_png(s),
                     "strip.png", "image/png")
            )  # fmt: skip
    out.append(
        Case("async-strip-300000x1", "1 page, 300000x1", lambda: strip_png((300_000, 1)),
             "strip.png", "image/png", route="/ocr/async")
    )  # fmt: skip
    size = f"{AT_LIMIT[0]}x{AT_LIMIT[1]}"
    out.append(
        Case("tiff-30", f"30 pages, {size}", lambda: blank_tiff(AT_LIMIT, 30), "scan.tif",
             "image/tiff")
    )  # fmt: skip
    out.append(
        Case("async-tiff-30", f"30 pages, {size}", lambda: blank_tiff(AT_LIMIT, 30), "scan.tif",
             "image/tiff", route="/ocr/async")
    )  # fmt: skip
    # For scale: a normal page (its detector run costs what any page's does), then one page at
    # the limit, then ten.
    out.append(
        Case("pdf-1-a4", "1 page, 1654x2339 (A4, 200 dpi)", lambda: blank_pdf(A4_PT, 1),
             "a4.pdf", "application/pdf")
    )  # fmt: skip
    for pages in (1, 10):
        out.append(
            Case(f"pdf-{pages}", f"{pages} page{'s' * (pages > 1)}, {size} (200 dpi)",
                 lambda n=pages: blank_pdf(PDF_PAGE_PT, n), "form.pdf", "application/pdf")
        )  # fmt: skip
    return out


CASE_NAMES = tuple(c.name for c in cases())


# ---------------------------------------------------------------------------- the server


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux 4.0+), so the peak is the request's alone."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_case(case: Case, run: Path) -> dict[str, Any]:
    data = case.make()
    out: dict[str, Any] = {"case": case.name, "what": case.what, "bytes": len(data)}
    port = free_port()
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="ocrserve-bombs-") as data_dir:
        env = {
            **os.environ,
            "OCRSERVE_DATA_DIR": data_dir,
            "OCRSERVE_CACHE_MAX_ENTRIES": "0",
            "OCRSERVE_LOG_LEVEL": "warning",
        }
        cmd = ocrserve_cmd("serve", "--port", str(port))
        server = Proc("server", cmd, env, run / f"{case.name}.log")
        pid = server.proc.pid
        try:
            wait_ready(base, [server], timeout_s=READY_TIMEOUT_S)
            time.sleep(1.0)  # let start-up's garbage settle before the baseline
            out["rss_before_mb"] = status_kib(pid, "VmRSS") / 1024
            out["peak_reset"] = reset_peak(pid)
            t0 = time.perf_counter()
            with httpx.Client(base_url=base, timeout=ANSWER_TIMEOUT_S) as client:
                out.update(send(client, case, data))
            out["seconds"] = time.perf_counter() - t0
            out["peak_mb"] = status_kib(pid, "VmHWM") / 1024
            time.sleep(1.0)
            out["rss_after_mb"] = status_kib(pid, "VmRSS") / 1024
            out["alive"] = server.alive()
        except Exception as e:  # the case failed to run: say so in the table, go on
            out["error"] = f"{type(e).__name__}: {e}"
            out["alive"] = server.alive()
        finally:
            server.stop(STOP_TIMEOUT_S)
    return out


def send(client: httpx.Client, case: Case, data: bytes) -> dict[str, Any]:
    if case.route == "/ocr":
        r = client.post("/ocr", files={"image": (case.filename, data, case.mime)})
        return {"status": r.status_code, **answer(r.json())}
    r = client.post("/ocr/async", json={"image_base64": base64.b64encode(data).decode()})
    if r.status_code != 202:
        return {"status": r.status_code, **answer(r.json())}
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        task = client.get(f"/task/{task_id}").json()
        if task["status"] not in ("queued", "running"):
            return {"status": 202, "task": task["status"], **answer(task)}
        time.sleep(0.1)
    return {"status": 202, "task": "still running at the timeout"}


def answer(body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    if error:
        return {"code": error.get("code"), "message": error.get("message")}
    result = body.get("result") or body
    return {"pages": result.get("page_count")}


# ---------------------------------------------------------------------------- the report


def outcome(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"did not run: {r['error']}"
    if "task" in r:
        code = f" `{r['code']}`" if r.get("code") else ""
        return f"202, task {r['task']}{code}"
    if r.get("code"):
        return f"{r['status']} `{r['code']}`"
    pages = r.get("pages")
    return f"{r['status']}, {pages} page{'s' * (pages != 1)} read"


def render(results: list[dict[str, Any]], machine: dict[str, Any], run_line: str) -> str:
    lines = [
        "## Bombs: peak memory of a fresh server per hostile file",
        "",
        machine_header(machine, ("ocrserve",)),
        "",
        run_line,
        "",
        "| case | route | file | pages | answer | RSS before MB | peak MB | peak - before MB "
        "| RSS 1 s after MB | s |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        growth = r["peak_mb"] - r["rss_before_mb"] if "peak_mb" in r else None
        lines.append(
            f"| {r['case']} | {r['route']} | {r['bytes']:,} B | {r['what']} | {outcome(r)} "
            f"| {fmt(r.get('rss_before_mb'), '.0f')} | {fmt(r.get('peak_mb'), '.0f')} "
            f"| {fmt(growth, '.0f')} | {fmt(r.get('rss_after_mb'), '.0f')} "
            f"| {fmt(r.get('seconds'), '.2f')} |"
        )
    refused = ", ".join(r["case"] for r in results if r.get("peak_reset") is False)
    unreset = f" (reset refused, start-up's peak included: {refused})" if refused else ""
    lines += [
        "",
        "- RSS before = VmRSS 1 s after /ready; peak = VmHWM, reset to RSS before just before "
        "the request and read after the answer (or the task's end): the most the server held "
        f"for the case, every short allocation included{unreset}.",
        "- Limits at their defaults: 40 M pixels and 16,384 px a side per page, aspect ratio "
        "100:1, 500 M pixels per request, 60 M pixels of pages in flight per process.",
        "- s: the request (or submit and poll) as the client saw it; one run, a noisy machine.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--cases",
        default=",".join(CASE_NAMES),
        type=lambda v: comma_list(v, CASE_NAMES, "case"),
        help=f"comma list, default all: {','.join(CASE_NAMES)}",
    )
    ap.add_argument(
        "--write-results", action="store_true", help="replace the bombs section of RESULTS.md"
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = new_run("bombs")
    machine = machine_info()
    machine["ocrserve"] = pkg("ocrserve")
    results = []
    for case in (c for c in cases() if c.name in args.cases):
        print(f"[bombs] {case.name} ...", file=sys.stderr, flush=True)
        result = {"route": case.route, **run_case(case, run)}
        print(f"[bombs] {case.name}: {outcome(result)}", file=sys.stderr, flush=True)
        results.append(result)
    machine["loadavg_end"] = os.getloadavg()[0]
    head, dirty = commit(("src",))
    at = f"{head} (+ uncommitted changes in src/)" if dirty else head
    run_line = (
        f"Run: commit {at}; {len(results)} cases, one fresh `ocrserve serve` each; "
        f"raw data `{run.relative_to(ROOT)}.json`, server logs in `{run.relative_to(ROOT)}/`."
    )
    report = render(results, machine, run_line)
    raw = {"machine": machine, "results": results, "markdown": report}
    publish("bombs", run, raw, report, to_results=args.write_results)
    return 1 if any("error" in r or not r.get("alive") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
