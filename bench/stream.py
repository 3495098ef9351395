#!/usr/bin/env python3
"""Large documents stream: peak RSS of a scanned PDF of 30, 100 and 300 pages, CLI and async.

    python bench/stream.py                       # 30, 100, 300 pages; CLI then async
    python bench/stream.py --pages 10,20         # a quick check that everything runs
    python bench/stream.py --paths cli --pages 300
    python bench/stream.py --write-results       # also update bench/RESULTS.md

The target (issue "large documents stream"): a 300-page PDF through the CLI and the async path
peaks at 1 GB RSS at most, and the peak is flat in the page count: pages are decoded one at a
time as they are recognised, never the whole document first.

The PDFs are generated here, scanned-style: every page is an image only (no text layer, so it
must be OCRed), a 600x900 grey JPEG placed at 150 dpi (4 x 6 in, rendered at the service's
200 dpi as 800x1200), with 6 to 10 lines of different words per page. The writer streams: it
encodes one page at a time straight into the file, so generating 300 pages costs one page.

- CLI: ``ocrserve ocr big.pdf --format jsonl --pdf-text ocr --max-pages N -o out.jsonl`` as a
  child process; every page must come back as one JSON line.
- async: one ``ocrserve serve`` on 127.0.0.1 (embedded task workers, a fresh data folder,
  ``OCRSERVE_MAX_PAGES`` = N, cache off), its RSS read once idle (after ``/ready``), then the
  PDF sent to ``POST /ocr/async`` (multipart ``image``, ``pdf_text=ocr``) and ``GET
  /task/{id}`` polled until it ends; every page must be done.

RSS is sampled every 0.2 s (psutil, the process and its children); the kernel's own high-water
mark (``VmHWM``, which no sampling misses) is read as well: for the server it includes start-up.
Raw data lands in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from harness import (
    HOST,
    MB,
    ROOT,
    Proc,
    commit,
    env_overrides,
    free_port,
    machine_header,
    machine_info,
    new_run,
    ocrserve_cmd,
    pkg,
    wait_ready,
)
from PIL import Image
from tables import (
    RESULTS_MD,
    comma_list,
    fmt,
    judge,
    positive,
    publish,
    raw_args,
    table_head,
    table_row,
)

TAG = "stream"
PATHS = ("cli", "async")
DEFAULT_PAGES = "30,100,300"
#: The page image: A6-ish at 150 dpi.
PAGE_W, PAGE_H, PAGE_DPI = 600, 900, 150
TARGET_MB = 1024.0
#: "Flat": the largest document's peak at most this much over the smallest's.
FLAT_MB = 100.0
SAMPLE_S = 0.2
POLL_S = 1.0
READY_TIMEOUT_S = 600.0
#: Per page, generous on 2 shared cores: a stuck run ends, a slow one does not.
RUN_S_PER_PAGE = 10.0
RUN_S_BASE = 120.0
#: Per page as cheap as it goes (no 180-degree check, no page orientation): what is measured
#: is memory over the page count. The CLI's flags say the same.
OPTIONS = {"pdf_text": "ocr", "cls": "false", "orientation": "off"}
BASE_ENV = {"OCRSERVE_CACHE_MAX_ENTRIES": "0", "OCRSERVE_LOG_LEVEL": "warning"}
#: What the lines are made of.
VOCABULARY = (
    "invoice total amount date account number balance payment received order customer "
    "address street city postal code phone email reference period due tax rate net gross "
    "shipping delivery item quantity price unit description discount credit debit bank "
    "transfer statement summary report annual quarter budget project meeting agenda notes "
    "contract clause party agreement signature witness section page chapter figure table"
)


# --------------------------------------------------------------------------- the documents


def page_image(n: int) -> Image.Image:
    """Page ``n``: 6 to 10 lines of words drawn in grey on paper-grey, with a little noise."""
    rng = random.Random(n)
    words_of = VOCABULARY.split()
    img = np.full((PAGE_H, PAGE_W), 232, np.uint8)
    lines = rng.randint(6, 10)
    y = 70
    cv2.putText(img, f"Page {n}", (40, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 30, 2, cv2.LINE_AA)
    for _ in range(lines):
        y += rng.randint(70, 85)
        words: list[str] = []
        while len(" ".join(words)) < rng.randint(10, 20):
            words.append(rng.choice(words_of))
        text = " ".join(words)
        if rng.random() < 0.4:
            text += f" {rng.randint(10, 99999)}"
        cv2.putText(img, text, (40, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 40, 2, cv2.LINE_AA)
    noise = np.random.default_rng(n).normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8), "L")


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return buf.getvalue()


def write_pdf(path: Path, pages: Iterator[bytes]) -> int:
    """A PDF of grey JPEG pages (DCTDecode, no text), written one page at a time; its page
    count. Pillow's PDF writer would hold every page image until the end."""
    offsets: dict[int, int] = {}
    kids: list[int] = []
    w_pt, h_pt = PAGE_W * 72 / PAGE_DPI, PAGE_H * 72 / PAGE_DPI
    with path.open("wb") as f:

        def obj(num: int, body: bytes, stream: bytes | None = None) -> None:
            offsets[num] = f.tell()
            f.write(b"%d 0 obj\n" % num + body)
            if stream is not None:
                f.write(b"\nstream\n" + stream + b"\nendstream")
            f.write(b"\nendobj\n")

        f.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
        num = 3
        for data in pages:
            page, content, image = num, num + 1, num + 2
            num += 3
            draw = b"q %.2f 0 0 %.2f 0 0 cm /Im0 Do Q" % (w_pt, h_pt)
            obj(
                page,
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] "
                b"/Resources << /XObject << /Im0 %d 0 R >> >> /Contents %d 0 R >>"
                % (w_pt, h_pt, image, content),
            )
            obj(content, b"<< /Length %d >>" % len(draw), draw)
            obj(
                image,
                b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>"
                % (PAGE_W, PAGE_H, len(data)),
                data,
            )
            kids.append(page)
        refs = b" ".join(b"%d 0 R" % k for k in kids)
        obj(2, b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids)))
        xref = f.tell()
        f.write(b"xref\n0 %d\n0000000000 65535 f \n" % num)
        for n in range(1, num):
            f.write(b"%010d 00000 n \n" % offsets[n])
        f.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (num, xref))
    return len(kids)


def make_pdf(path: Path, n: int) -> Path:
    write_pdf(path, (jpeg(page_image(i)) for i in range(1, n + 1)))
    return path


# --------------------------------------------------------------------------- measuring


def vm_hwm_mb(pid: int) -> float | None:
    """The kernel's peak resident set of ``pid`` (``VmHWM``), or None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Sampler:
    """RSS of a process and its children every :data:`SAMPLE_S` on its own thread: the peak,
    the samples (seconds after start, MB) and the last ``VmHWM`` read."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.samples: list[tuple[float, float]] = []
        self.hwm: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="rss", daemon=True)
        self.t0 = time.perf_counter()

    def __enter__(self) -> Sampler:
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _main(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(SAMPLE_S):
                return

    def sample(self) -> None:
        rss = self.proc.rss_mb(children=True)
        if rss == rss:  # not NaN: the process is still there
            self.samples.append((time.perf_counter() - self.t0, rss))
        hwm = vm_hwm_mb(self.proc.proc.pid)
        if hwm is not None:
            self.hwm = hwm

    @property
    def peak(self) -> float | None:
        return max((r for _, r in self.samples), default=None)


def run_env(data_dir: Path, pages: int, pdf: Path) -> dict[str, str]:
    # Room for the document whatever N: bytes and pixels of all its pages (at the default
    # 200 dpi a page is 800x1200); the per-page limits stay at their defaults.
    pixels = pages * 2 * (PAGE_W * 200 // PAGE_DPI) * (PAGE_H * 200 // PAGE_DPI)
    size = pdf.stat().st_size
    return (
        os.environ
        | BASE_ENV
        | {
            "OCRSERVE_DATA_DIR": str(data_dir),
            "OCRSERVE_MAX_PAGES": str(pages),
            "OCRSERVE_MAX_FILE_BYTES": str(max(50 * MB, 2 * size)),
            "OCRSERVE_MAX_REQUEST_BYTES": str(max(200 * MB, 2 * size)),
            "OCRSERVE_MAX_REQUEST_PIXELS": str(max(500_000_000, pixels)),
        }
    )


def run_cli(pdf: Path, pages: int, run: Path, data_dir: Path, limit_s: float) -> dict[str, Any]:
    out = run / f"cli-{pages}.jsonl"
    cmd = [
        str(ROOT / ".venv" / "bin" / "ocrserve"), "ocr", str(pdf), "--format", "jsonl",
        "--pdf-text", "ocr", "--no-cls", "--orientation", "off", "--max-pages", str(pages),
        "--no-progress", "-o", str(out),
    ]  # fmt: skip
    if not Path(cmd[0]).is_file():
        cmd[:2] = [*ocrserve_cmd(), "ocr"]
    res: dict[str, Any] = {"path": "cli", "pages": pages, "cmd": " ".join(cmd)}
    proc = Proc("cli", cmd, run_env(data_dir, pages, pdf), run / f"cli-{pages}.log")
    try:
        with Sampler(proc) as s:
            deadline = time.monotonic() + limit_s
            while proc.alive() and time.monotonic() < deadline:
                time.sleep(SAMPLE_S)
        res["seconds"] = time.perf_counter() - proc.t_spawn
        if proc.alive():
            res["error"] = f"cut off: still running after {res['seconds']:.0f} s"
    finally:
        res["stop"] = proc.stop()
    res.update(peak_mb=s.peak, hwm_mb=s.hwm, samples=s.samples)
    res["returncode"] = proc.proc.returncode
    lines = out.read_text(encoding="utf-8").splitlines() if out.is_file() else []
    indexes = [json.loads(line).get("page") for line in lines]
    res["pages_done"] = len(lines)
    res["pages_ok"] = sorted(i for i in indexes if i is not None) == list(range(1, pages + 1))
    if proc.proc.returncode != 0 and "error" not in res:
        tail = proc.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        res["error"] = f"exit {proc.proc.returncode}: {' / '.join(tail[-3:])[:600]}"
    elif not res["pages_ok"] and "error" not in res:
        res["error"] = f"{len(lines)} JSON lines for {pages} pages"
    out.unlink(missing_ok=True)  # 300 pages of words: evidence enough in the counts
    return res


def wait_tasks_up(client: httpx.Client, proc: Proc) -> None:
    """Wait until ``/ready`` says the task store is up: ready is about ``/ocr`` only, and
    ``/ocr/async`` answers 503 while its store is still starting. Then a second to settle."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        proc.check_alive()
        if client.get("/ready").json().get("tasks") in ("up", None):
            time.sleep(1.0)
            return
        time.sleep(SAMPLE_S)
    raise RuntimeError(f"the task store was not up after {READY_TIMEOUT_S:.0f} s")


def run_async(pdf: Path, pages: int, run: Path, data_dir: Path, limit_s: float) -> dict[str, Any]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    cmd = ocrserve_cmd("serve", "--host", HOST, "--port", str(port))
    res: dict[str, Any] = {"path": "async", "pages": pages}
    proc = Proc("server", cmd, run_env(data_dir, pages, pdf), run / f"async-{pages}.log")
    try:
        with httpx.Client(base_url=base, trust_env=False, timeout=60.0) as client:
            wait_ready(base, [proc], timeout_s=READY_TIMEOUT_S, client=client)
            wait_tasks_up(client, proc)
            res["idle_mb"] = proc.rss_mb(children=True)
            res["startup_hwm_mb"] = vm_hwm_mb(proc.proc.pid)
            with Sampler(proc) as s:
                t0 = time.perf_counter()
                with pdf.open("rb") as f:
                    r = client.post(
                        "/ocr/async",
                        files={"image": (pdf.name, f, "application/pdf")},
                        data={**OPTIONS, "max_pages": str(pages)},
                    )
                if r.status_code != 202:
                    raise RuntimeError(f"POST /ocr/async answered {r.status_code}: {r.text[:300]}")
                task_id = r.json()["task_id"]
                deadline = time.monotonic() + limit_s
                view: dict[str, Any] = {}
                trace: list[tuple[float, int, float]] = []  # (s, pages done, RSS MB)
                res["trace"] = trace
                while time.monotonic() < deadline:
                    proc.check_alive()
                    view = client.get(f"/task/{task_id}").json()
                    done = (view.get("progress") or {}).get("pages_done") or 0
                    trace.append((time.perf_counter() - t0, done, proc.rss_mb(children=True)))
                    if view.get("status") not in ("queued", "running"):
                        break
                    time.sleep(POLL_S)
                res["seconds"] = time.perf_counter() - t0
                s.sample()
            res.update(peak_mb=s.peak, hwm_mb=s.hwm, samples=s.samples, task_id=task_id)
            res["status"] = view.get("status")
            res["pages_done"] = (view.get("progress") or {}).get("pages_done")
            result_pages = ((view.get("result") or {}).get("pages")) or []
            res["result_pages"] = len(result_pages)
            res["pages_ok"] = res["status"] == "succeeded" and res["pages_done"] == pages
            if not res["pages_ok"]:
                res["error"] = (
                    f"task {view.get('status')} with {res['pages_done']} of {pages} pages: "
                    f"{view.get('error')}"
                )
    except Exception as e:  # the other runs still go; the report says what broke
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        res["stop"] = proc.stop()
    return res


# --------------------------------------------------------------------------- report


def flatness(results: list[dict[str, Any]], path: str) -> tuple[float | None, bool | None]:
    """The largest document's peak minus the smallest's, and whether that is within
    :data:`FLAT_MB`; None where fewer than two sizes ran."""
    rows = sorted((r for r in results if r["path"] == path and r.get("peak_mb")),
                  key=lambda r: r["pages"])  # fmt: skip
    if len(rows) < 2:
        return None, None
    growth = rows[-1]["peak_mb"] - rows[0]["peak_mb"]
    return growth, growth <= FLAT_MB


def trace_points(trace: Sequence[Sequence[float]], points: int = 6) -> str:
    """A few (pages done -> RSS MB) readings spread over an async run's polls."""
    started = [t for t in trace if t[1] > 0] or list(trace)
    step = max(1, (len(started) - 1) // (points - 1))
    picked = [*started[::step][: points - 1], started[-1]]
    return ", ".join(f"{int(done)} -> {rss:.0f} MB" for _, done, rss in picked)


def render(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    machine: dict[str, Any],
    run: Path,
    pdfs: dict[int, int],
) -> str:
    head, dirty = commit(["src"])
    extra = f" · pypdfium2 {pkg('pypdfium2')} · commit {head}{' (dirty)' if dirty else ''}"
    lines = [
        "## Large documents stream: peak RSS by page count",
        "",
        machine_header(machine, ("ocrserve",), extra),
        "",
        f"Run: pages {', '.join(map(str, args.pages))}, paths {', '.join(args.paths)}, "
        + (
            "all at once (--parallel: seconds share the cores, peaks are each process's own)"
            if args.parallel
            else "one at a time"
        )
        + f"; raw "
        f"data `{run.relative_to(ROOT)}.json`, logs in `{run.relative_to(ROOT)}/`.",
        "",
    ]
    lines += table_head(
        [
            "pages",
            "path",
            "peak RSS MB",
            "VmHWM MB",
            "idle RSS MB",
            "seconds",
            "s/page",
            "pages back",
        ]
    )
    for r in results:
        done = r.get("pages_done")
        per = r["seconds"] / r["pages"] if r.get("seconds") else None
        lines.append(
            table_row(
                [
                    str(r["pages"]),
                    r["path"] + (" (FAILED)" if "error" in r else ""),
                    fmt(r.get("peak_mb"), ".0f"),
                    fmt(r.get("hwm_mb"), ".0f"),
                    fmt(r.get("idle_mb"), ".0f"),
                    fmt(r.get("seconds"), ".1f"),
                    fmt(per, ".2f"),
                    f"{'-' if done is None else done} / {r['pages']}",
                ]
            )
        )
    lines.append("")
    for path in args.paths:
        growth, flat = flatness(results, path)
        big = [r for r in results if r["path"] == path and r["pages"] == max(args.pages)]
        peak = big[0].get("peak_mb") if big else None
        under = None if peak is None else peak <= TARGET_MB
        lines.append(
            f"- {path}: peak at {max(args.pages)} pages {fmt(peak, '.0f')} MB, target "
            f"<= {TARGET_MB:.0f} MB {judge(under)}; largest minus smallest document "
            f"{fmt(growth, '+.0f')} MB: flat (within {FLAT_MB:.0f} MB) {judge(flat)}."
        )
    sizes = ", ".join(f"{n} pages {b / MB:.1f} MB" for n, b in sorted(pdfs.items()))
    lines += [
        f"- Documents: generated scanned-style PDFs, every page one {PAGE_W}x{PAGE_H} grey "
        f"JPEG at {PAGE_DPI} dpi (no text layer), 6-10 lines of words, different per page; "
        f"rendered at the default 200 dpi ({sizes}).",
        "- CLI: `ocrserve ocr FILE --format jsonl --pdf-text ocr --no-cls --orientation off "
        "--max-pages N -o FILE` (async: the same options), one "
        "process per document (model loading included in its seconds and peak). Async: one "
        "fresh `ocrserve serve` per document (embedded workers, SQLite, cache off), idle RSS "
        "read 1 s after /ready says its task store is up; seconds from POST /ocr/async to "
        f"the task's end, polled every {POLL_S:.0f} s.",
        f"- peak RSS: psutil samples every {SAMPLE_S} s of the process and its children over "
        "the run; VmHWM: the kernel's high-water mark of the process (the server's includes "
        "its start-up). pages back: JSON lines written (CLI) or the task's pages_done (async).",
    ]
    for r in results:
        if r.get("trace"):
            lines.append(
                f"- {r['path']} {r['pages']} pages, server RSS by pages done: "
                + trace_points(r["trace"])
                + "."
            )
    overrides = env_overrides()
    if overrides:
        lines.append(f"- Environment overrides inherited: {', '.join(overrides)}.")
    for r in results:
        if "error" in r:
            lines.append(f"- {r['path']} {r['pages']} pages: FAILED {r['error']}")
        for note in r.get("stop", {}).get("log_notes", [])[:5]:
            lines.append(f"- {r['path']} {r['pages']} log: {note}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--pages",
        default=DEFAULT_PAGES,
        type=lambda v: sorted({positive(x) for x in v.split(",") if x.strip()}),
        help=f"comma list of page counts (default {DEFAULT_PAGES})",
    )
    ap.add_argument(
        "--paths",
        default=",".join(PATHS),
        type=lambda v: comma_list(v, PATHS, "path"),
        help=f"comma list, default {','.join(PATHS)}",
    )
    ap.add_argument(
        "--run-timeout",
        type=float,
        default=None,
        help="seconds a run may take before it is cut off and reported with what it reached "
        f"(default {RUN_S_BASE:.0f} + {RUN_S_PER_PAGE:.0f} per page)",
    )
    ap.add_argument(
        "--parallel",
        action="store_true",
        help="run every (pages, path) at once: the peaks hold, the seconds do not (they then "
        "share the cores); for a machine too busy for a sequential run",
    )
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="render the report of an earlier run from its raw JSON (bench/out/stream-*.json)",
    )
    ap.add_argument(
        "--write-results",
        action="store_true",
        help=f"replace the {TAG} section of {RESULTS_MD.relative_to(ROOT)}",
    )
    return ap.parse_args(argv)


def rerender(args: argparse.Namespace) -> int:
    """The report of an earlier run again, from its raw JSON (with this version's notes)."""
    raw = json.loads(args.from_json.read_text(encoding="utf-8"))
    saved = argparse.Namespace(**(raw["args"] | {"from_json": None}))
    results = raw["results"]
    pdfs = {int(k): v for k, v in raw.get("pdf_bytes", {}).items()}
    if not pdfs:  # runs before pdf_bytes was kept: the documents are made the same way again
        with tempfile.TemporaryDirectory() as tmp:
            for n in saved.pages:
                pdfs[n] = make_pdf(Path(tmp, f"{n}.pdf"), n).stat().st_size
    run = args.from_json.resolve().with_suffix("")
    report = render(saved, results, raw["machine"], run, pdfs)
    raw["markdown"] = report
    publish(TAG, run, raw, report, to_results=args.write_results)
    return 1 if any("error" in r for r in results) else 0


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        return rerender(args)
    signal.signal(signal.SIGTERM, _terminate)
    run = new_run(TAG)
    machine = machine_info()
    machine["ocrserve"] = pkg("ocrserve")
    tmp = Path(tempfile.mkdtemp(prefix="ocrserve-stream-"))
    pdfs: dict[int, int] = {}

    def one(pages: int, path: str) -> dict[str, Any]:
        data_dir = tmp / f"data-{path}-{pages}"
        data_dir.mkdir(mode=0o700)
        runner = run_cli if path == "cli" else run_async
        limit = args.run_timeout or RUN_S_BASE + RUN_S_PER_PAGE * pages
        res = runner(tmp / f"scan-{pages}.pdf", pages, run, data_dir, limit)
        print(
            f"[{TAG}] {pages} pages {path}: peak {fmt(res.get('peak_mb'), '.0f')} MB, "
            f"{fmt(res.get('seconds'), '.1f')} s, {res.get('pages_done')} pages"
            + (f", FAILED {res['error']}" if "error" in res else ""),
            file=sys.stderr,
            flush=True,
        )
        return res

    combos = [(pages, path) for pages in args.pages for path in args.paths]
    try:
        for pages in args.pages:
            pdfs[pages] = make_pdf(tmp / f"scan-{pages}.pdf", pages).stat().st_size
        if args.parallel:
            with ThreadPoolExecutor(len(combos)) as pool:
                results = list(pool.map(lambda c: one(*c), combos))
        else:
            results = [one(*c) for c in combos]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    machine["loadavg_end"] = os.getloadavg()[0]
    report = render(args, results, machine, run, pdfs)
    raw = {
        "args": raw_args(args),
        "machine": machine,
        "pdf_bytes": pdfs,
        "results": results,
        "markdown": report,
    }
    publish(TAG, run, raw, report, to_results=args.write_results)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(f"[{TAG}] interrupted; the processes it started were stopped", file=sys.stderr)
        sys.exit(130)
