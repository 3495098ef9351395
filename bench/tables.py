"""The benchmarks' Markdown: table cells and rows, and their sections of ``bench/RESULTS.md``.

A benchmark's report replaces only the section between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` (NAME: the benchmark's tag); the rest of the file is written by hand.
Also the command-line parsers the benchmarks share. Processes, ports and the machine header
are in ``harness.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import ROOT

RESULTS_MD = ROOT / "bench" / "RESULTS.md"


# --------------------------------------------------------------------------- cells and rows


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def judge(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def table_head(head: Sequence[str]) -> list[str]:
    """A table's header and separator: the first column left-aligned, the others right."""
    return [table_row(head), "|---" + "|---:" * (len(head) - 1) + "|"]


def table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------- RESULTS.md


def markers(tag: str) -> tuple[str, str]:
    """The comments around a benchmark's section of RESULTS.md."""
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"


def write_results(section: str, path: Path, begin: str, end: str) -> None:
    """Replace only the section between ``begin`` and ``end``; the rest of the file stays."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{section.rstrip()}\n{end}"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        text = head + block + rest.partition(end)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def publish(tag: str, run: Path, raw: dict[str, Any], report: str, *, to_results: bool) -> None:
    """Raw JSON first (a closed stdout, ``| head``, must not lose a long run's results), then
    the RESULTS.md section ``tag`` when asked, then the report on stdout."""
    raw_path = run.with_suffix(".json")
    raw_path.write_text(json.dumps(raw, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"[{tag}] raw results: {raw_path}", file=sys.stderr)
    if to_results:
        write_results(report, RESULTS_MD, *markers(tag))
        print(f"[{tag}] updated {RESULTS_MD}", file=sys.stderr)
    print(report)


def raw_args(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's arguments for the raw JSON (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


# --------------------------------------------------------------------------- the command line


def comma_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}"
        )
    return chosen


def positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from e
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n
