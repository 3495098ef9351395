#!/usr/bin/env python3
"""Documents benchmark (issue 13): word boxes, and pages turned by a quarter or a half turn.

    python bench/documents.py                                   # everything, every dev set
    python bench/documents.py --parts words                     # word boxes only (quick)
    python bench/documents.py --sets tesseract_pages_en --limit 1 --no-tesseract
    python bench/documents.py --write-results                   # also update bench/RESULTS.md

Word boxes: the labelled word boxes of ``icdar2015_scene_en`` (each labelled "line" there is
one word; ``###`` / ``ignore`` left out) and ``funsd_forms_train_en`` (its lines' ``words``).
The upright image is read once (default options: ``lang="ch"``, orientation ``auto``). A
labelled word is *read correctly* when a predicted word with the same text after
:func:`word_key` (case folded, punctuation and symbols around it stripped; a label with
nothing left, a lone ":", is left out and counted apart) overlaps it at all; it is *matched*
when the best of those same-text predicted words overlaps it at polygon IoU >= 0.5 (shapely).
A same-text word only elsewhere on the page (a form's second "Date") is not this word read.
Reported: the matched share among the correctly read words (the issue's target, >= 90%) and
among all labelled words.

Orientation: every labelled item of every chosen dev set (PDF pages rendered at their
``render_dpi`` by ``ocrserve.decode``, as ``bench/engine.py`` renders them) is read upright
and turned by 90, 180 and 270 degrees clockwise with ``cv2.rotate``; the page's ``angle`` must
come back as that turn (0 for the upright one). Page CER is ``../shared/eval/score.py``'s, with
the set's flags as ``bench/engine.py`` uses them (``SCORE_FLAGS``; ``pdf_docs_more`` is scored
as is, its Chinese page included), of each turned input against the upright input's. Tesseract's
OSD (``pytesseract.image_to_osd``, psm 0, the ``osd`` traineddata) answers the same images; a
page it refuses ("too few characters") counts as its answer 0. Its seconds per page include
the spawn of the ``tesseract`` process that pytesseract runs per call.

The cost of orientation: each upright page is also read with ``orientation="off"``; the cost
is the median over the pages of (seconds with ``auto`` - seconds with ``off``), one call each,
in one process after a warm-up: a rough number on a shared machine, unlike the accuracy ones.

Everything runs in this one process (accuracy, not speed, is measured). Raw results (every
page's angle and text, every labelled word's best box and IoU) land in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import (
    DEFAULT_EVAL_DIR,
    DEV_SETS,
    SCORE_FLAGS,
    commit,
    machine_header,
    machine_info,
    new_run,
    pkg,
)
from tables import comma_list, fmt, judge, positive, publish, raw_args, table_head, table_row

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]

TAG = "documents"
#: The sets with labelled word boxes.
WORD_SETS = ("icdar2015_scene_en", "funsd_forms_train_en")
ANGLES = (0, 90, 180, 270)
PARTS = ("words", "orientation")
IOU = 0.5
#: Issue 13's targets.
WORD_TARGET = 0.90
ANGLE_TARGET = 0.98
CER_TARGET_POINTS = 1.0
#: The dev PDFs' largest page (the 4,922 x 9,297 px mind map) is over ocrserve's default
#: per-page limit; bench/engine.py renders it with this limit too.
RENDER_MAX_PIXELS = 400_000_000
ORIENTATIONS = ("auto", "off")


# --------------------------------------------------------------------------- inputs


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_bgr(folder: Path, rec: dict[str, Any]) -> Image:
    """The item's pixels: an image file, or a PDF page rendered at the label's dpi."""
    import cv2
    import numpy as np
    from PIL import Image as PILImage

    path = folder / rec["image"]
    if rec.get("page") is not None:
        from ocrserve.decode import DecodeLimits, decode_path

        dpi = int(rec.get("render_dpi", 200))
        doc = decode_path(path, DecodeLimits(pdf_dpi=dpi, max_pixels=RENDER_MAX_PIXELS))
        (page,) = [p for p in doc.pages if p.index == rec["page"]]
        return np.ascontiguousarray(page.image)
    if path.suffix.lower() in (".tif", ".tiff"):
        # cv2 reads some TIFF flavours (1-bit, multi-page) differently from PIL.
        with PILImage.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return np.asarray(img, dtype=np.uint8)


def turned(img: Image, angle: int) -> Image:
    """The image turned ``angle`` degrees clockwise: its content's angle is then ``angle``."""
    import cv2
    import numpy as np

    if angle == 0:
        return img
    code = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return np.ascontiguousarray(cv2.rotate(img, code[angle]))


def item_key(rec: dict[str, Any]) -> str:
    return rec["image"] + (f" p{rec['page']}" if rec.get("page") is not None else "")


# --------------------------------------------------------------------------- word boxes


def word_key(text: str) -> str:
    """A word's text as compared: NFKC, case folded, punctuation and symbols around it gone."""
    s = unicodedata.normalize("NFKC", text).casefold().strip()
    keep = [unicodedata.category(c)[0] not in "PSZ" for c in s]
    if not any(keep):
        return ""
    a, b = keep.index(True), len(keep) - keep[::-1].index(True)
    return s[a:b]


def labelled_words(name: str, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The labelled words of one item: text and 4 points."""
    out = []
    for line in rec["lines"]:
        if line.get("ignore") or line.get("points") is None:
            continue
        if name == "icdar2015_scene_en":
            out.append({"text": line["text"], "points": line["points"]})
        else:
            out.extend(
                {"text": w["text"], "points": w["points"]}
                for w in line.get("words") or ()
                if w.get("points") is not None
            )
    return [w for w in out if w["text"].strip() and w["text"] != "###"]


def polygon(points: Sequence[Sequence[float]]) -> Any:
    from shapely.geometry import Polygon

    poly = Polygon([tuple(map(float, p)) for p in points])
    # A self-crossing label (corners out of order) is repaired rather than dropped.
    return poly if poly.is_valid else poly.buffer(0)


def iou(a: Any, b: Any) -> float:
    inter = a.intersection(b).area
    union = a.area + b.area - inter
    return float(inter / union) if union > 0 else 0.0


def box_shape(points: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(length along the reading direction, height): the mean of the opposite sides."""
    import numpy as np

    p = np.asarray(points, dtype=np.float64)
    w = (np.linalg.norm(p[1] - p[0]) + np.linalg.norm(p[2] - p[3])) / 2
    h = (np.linalg.norm(p[3] - p[0]) + np.linalg.norm(p[2] - p[1])) / 2
    return float(w), float(h)


def match_words(name: str, rec: dict[str, Any], result: Any) -> list[dict[str, Any]]:
    """Every labelled word of the item with its best same-text predicted word (if any)."""
    predicted = []
    for line in result.lines:
        for word in line.words:
            predicted.append((word_key(word.text), word.text, word.box, polygon(word.box)))
    out = []
    for label in labelled_words(name, rec):
        key = word_key(label["text"])
        row: dict[str, Any] = {"image": item_key(rec), "text": label["text"], "key": key}
        row["label_box"] = label["points"]
        if not key:
            row["kind"] = "punctuation"
            out.append(row)
            continue
        lpoly = polygon(label["points"])
        same = [(iou(lpoly, poly), text, box) for k, text, box, poly in predicted if k == key]
        # Any predicted word, whatever its text: how good the boxes are where the text is not.
        anyw = max((iou(lpoly, poly) for *_, poly in predicted), default=0.0)
        row["best_any_iou"] = anyw
        if not same:
            row["kind"] = "misread"
        else:
            best = max(same, key=lambda t: t[0])
            row["kind"] = "matched" if best[0] >= IOU else "box" if best[0] > 0 else "elsewhere"
            row["iou"] = best[0]
            row["pred_text"] = best[1]
            row["pred_box"] = [list(p) for p in best[2]]
            (lw, lh), (pw, ph) = box_shape(label["points"]), box_shape(best[2])
            row["width_ratio"] = pw / lw if lw else None
            row["height_ratio"] = ph / lh if lh else None
        out.append(row)
    return out


def word_kind(row: dict[str, Any]) -> str:
    # A same-text word that does not touch the label is another occurrence of the text (a
    # form's "mm", "Date"): this one was not read as such.
    if row["kind"] == "box" and row["iou"] == 0:
        return "elsewhere"
    return str(row["kind"])


def word_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = ("matched", "box", "elsewhere", "misread", "punctuation")
    n = {k: sum(word_kind(r) == k for r in rows) for k in kinds}
    read = n["matched"] + n["box"]
    scored = read + n["elsewhere"] + n["misread"]
    ratios = [r for r in rows if word_kind(r) in ("matched", "box")]

    def med(key: str, kinds: tuple[str, ...]) -> float | None:
        vals = [r[key] for r in ratios if word_kind(r) in kinds and r.get(key) is not None]
        return statistics.median(vals) if vals else None

    return {
        **n,
        "labelled": scored,
        "read": read,
        "share_of_read": n["matched"] / read if read else None,
        "share_of_all": n["matched"] / scored if scored else None,
        "median_iou_read": statistics.median([r["iou"] for r in ratios]) if ratios else None,
        "width_ratio_read": med("width_ratio", ("matched", "box")),
        "height_ratio_read": med("height_ratio", ("matched", "box")),
        "width_ratio_box_misses": med("width_ratio", ("box",)),
        "height_ratio_box_misses": med("height_ratio", ("box",)),
    }


# --------------------------------------------------------------------------- orientation


def tesseract_osd(img: Image) -> tuple[int, float, str | None]:
    """Tesseract's angle for the page (its "Orientation in degrees", clockwise as ours),
    seconds, and the error it raised (then the angle is 0)."""
    import pytesseract

    t0 = time.perf_counter()
    try:
        osd = pytesseract.image_to_osd(img[:, :, ::-1], output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractError as e:
        return 0, time.perf_counter() - t0, str(e.message).strip().splitlines()[-1][:200]
    return int(osd["orientation"]) % 360, time.perf_counter() - t0, None


def run_score(pred: Path, labels: Path, flags: Sequence[str], eval_dir: Path) -> dict[str, Any]:
    """score.py's JSON report of one predictions file against one labels file."""
    report_path = pred.with_suffix(".score.json")
    cmd = [sys.executable, str(eval_dir / "score.py"), "--pred", str(pred)]
    cmd += ["--json", str(report_path), *flags, str(labels)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"score.py failed on {pred}: {done.stderr.strip()}")
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    return report


def score_angles(
    name: str, pages: list[dict[str, Any]], labels: Path, eval_dir: Path, run: Path
) -> dict[str, Any]:
    """Per turn: score.py's summary of the set and its items' character edits."""
    out: dict[str, Any] = {}
    for angle in ANGLES:
        preds = [
            {"image": p["image"], **({"page": p["page"]} if p["page"] else {}), "text": t["text"]}
            for p in pages
            for t in p["turns"]
            if t["angle"] == angle
        ]
        pred_path = run / "preds" / f"{name}-{angle}.jsonl"
        write_jsonl(pred_path, preds)
        report = run_score(pred_path, labels, SCORE_FLAGS.get(name, ()), eval_dir)
        s = report["sets"][name]
        out[str(angle)] = {
            "cer": s["summary"]["cer"],
            "ref_chars": s["summary"]["ref_chars"],
            "char_edits": sum(it["char_edits"] for it in s["items"]),
            "items": {f"{it['image']}|{it['page']}": it["cer"] for it in s["items"]},
        }
    return out


# --------------------------------------------------------------------------- the run


def run_set(
    name: str,
    engine: Any,
    args: argparse.Namespace,
    run: Path,
    progress: Any,
) -> dict[str, Any]:
    from ocrserve.types import OCROptions, Page

    folder = args.eval_dir / "dev" / name
    stop = None if args.limit is None else args.skip + args.limit
    records = read_jsonl(folder / "labels.jsonl")[args.skip : stop]
    labels = folder / "labels.jsonl"
    if args.limit is not None or args.skip:
        # score.py counts every labelled item it gets no prediction for as empty output.
        labels = run / "labels" / name / "labels.jsonl"
        write_jsonl(labels, records)
    do_words = "words" in args.parts and name in WORD_SETS
    do_orient = "orientation" in args.parts
    pages: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    for rec in records:
        img = load_bgr(folder, rec)
        page: dict[str, Any] = {"image": rec["image"], "page": rec.get("page"), "turns": []}
        page["size"] = [int(img.shape[1]), int(img.shape[0])]
        for angle in ANGLES if do_orient else (0,):
            src = turned(img, angle)
            timed = do_orient and len(pages) < args.cost_limit
            modes = ORIENTATIONS if angle == 0 and timed else ("auto",)
            for mode in modes:
                t0 = time.perf_counter()
                [result] = engine.run([Page(src)], OCROptions(orientation=mode))
                seconds = time.perf_counter() - t0
                if mode == "off":
                    page["off_seconds"] = seconds
                    continue
                turn: dict[str, Any] = {"angle": angle, "found": result.angle}
                turn |= {"seconds": seconds, "text": result.text}
                if do_orient and not args.no_tesseract:
                    turn["osd"], turn["osd_seconds"], turn["osd_error"] = tesseract_osd(src)
                page["turns"].append(turn)
                if angle == 0 and do_words:
                    words.extend(match_words(name, rec, result))
        pages.append(page)
        progress(name, page)
    out: dict[str, Any] = {"pages": pages}
    if do_words:
        out["words"] = words
        out["word_summary"] = word_summary(words)
    if do_orient:
        out["scores"] = score_angles(name, pages, labels, args.eval_dir, run)
    return out


def orient_summary(sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Share right per turn, ocrserve's and Tesseract's, over the given sets' pages."""
    turns = [t for s in sets.values() for p in s["pages"] for t in p["turns"]]
    out: dict[str, Any] = {"pages": sum(len(s["pages"]) for s in sets.values())}
    for who, key in (("ocrserve", "found"), ("tesseract", "osd")):
        if any(key not in t for t in turns):
            continue
        per = {}
        for angle in ANGLES:
            mine = [t for t in turns if t["angle"] == angle]
            per[str(angle)] = sum(t[key] == angle for t in mine) / len(mine) if mine else None
        rotated = [t for t in turns if t["angle"]]
        out[who] = {
            "per_angle": per,
            "rotated": sum(t[key] == t["angle"] for t in rotated) / len(rotated)
            if rotated
            else None,
            "all": sum(t[key] == t["angle"] for t in turns) / len(turns) if turns else None,
        }
    out["tesseract_seconds"] = (
        statistics.median([t["osd_seconds"] for t in turns])
        if turns and "osd" in turns[0]
        else None
    )
    out["tesseract_refused"] = sum(bool(t.get("osd_error")) for t in turns)
    upright = [p for s in sets.values() for p in s["pages"] if "off_seconds" in p]
    costs = [p["turns"][0]["seconds"] - p["off_seconds"] for p in upright]
    out["cost_seconds"] = statistics.median(costs) if costs else None
    out["off_seconds"] = statistics.median([p["off_seconds"] for p in upright]) if upright else None
    # CER over the sets: character edits over reference characters, each set with its flags.
    cer = {}
    for angle in ANGLES:
        edits = sum(s["scores"][str(angle)]["char_edits"] for s in sets.values())
        chars = sum(s["scores"][str(angle)]["ref_chars"] for s in sets.values())
        cer[str(angle)] = edits / chars if chars else None
    out["cer"] = cer
    return out


def merge(sets: dict[str, dict[str, Any]], paths: Sequence[Path]) -> list[str]:
    """Add to ``sets`` the parts (word boxes, orientation) that earlier runs' raw JSON files
    measured and this run did not; returns a note per file used."""
    notes = []
    for path in paths:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        head, dirty = earlier["commit"]
        used = []
        for name, old in earlier["sets"].items():
            new = sets.setdefault(name, {"pages": []})
            if "scores" in old and "scores" not in new:
                new["pages"], new["scores"] = old["pages"], old["scores"]
                used.append(f"{name} orientation")
            elif "scores" in old and not {item_key(p) for p in old["pages"]} & {
                item_key(p) for p in new["pages"]
            }:
                # Other items of the same set (--skip): their pages and character edits add up.
                new["pages"] = old["pages"] + new["pages"]
                for angle, score in old["scores"].items():
                    mine = new["scores"][angle]
                    for key in ("char_edits", "ref_chars"):
                        mine[key] += score[key]
                    mine["items"] |= score["items"]
                    mine["cer"] = mine["char_edits"] / mine["ref_chars"] if mine["ref_chars"] else 0
                used.append(f"{name} orientation, items {len(old['pages'])} more")
            if "word_summary" in old and "word_summary" not in new:
                new["words"], new["word_summary"] = old["words"], word_summary(old["words"])
                used.append(f"{name} words")
        limit = earlier.get("args", {}).get("limit")
        skip = earlier.get("args", {}).get("skip") or 0
        if used:
            notes.append(
                f"From an earlier run ({path.name}, commit {head}"
                f"{' with uncommitted changes' if dirty else ''}"
                f"{f', items {skip + 1} to {skip + limit} of each set' if limit else ''}): "
                f"{', '.join(used)}."
            )
    return notes


# --------------------------------------------------------------------------- the report


def pct(value: float | None) -> str:
    return fmt(None if value is None else 100 * value, ".1f")


def render(raw: dict[str, Any]) -> str:
    sets: dict[str, dict[str, Any]] = raw["sets"]
    lines = [f"## Documents: word boxes and page orientation (`bench/documents.py`, {TAG})", ""]
    lines.append(raw["machine_line"])
    head, dirty = raw["commit"]
    lines += ["", f"Commit {head}{' (with uncommitted changes)' if dirty else ''}.", ""]

    word_sets = {k: v for k, v in sets.items() if "word_summary" in v}
    if word_sets:
        lines += [
            "Word boxes: a labelled word is *read* when a predicted word with the same text "
            "(case folded, punctuation around it stripped) overlaps it, *matched* when the best "
            f"such word overlaps it at IoU >= {IOU}; *elsewhere*: its text was read only "
            "elsewhere on the page. Target: >= "
            f"{WORD_TARGET:.0%} of read words matched. Width and height: the read words' "
            "predicted box over their label's, medians.",
            "",
        ]
        lines += table_head(
            [
                "set",
                "labelled words",
                "misread",
                "elsewhere",
                "read",
                "matched",
                "% of read",
                "% of all",
                "median IoU (read)",
                "width / label (read)",
                "height / label (read)",
                "target",
            ]
        )
        for name, s in word_sets.items():
            w = s["word_summary"]
            ok = None if w["share_of_read"] is None else w["share_of_read"] >= WORD_TARGET
            lines.append(
                table_row(
                    [
                        name,
                        str(w["labelled"]),
                        str(w["misread"]),
                        str(w["elsewhere"]),
                        str(w["read"]),
                        str(w["matched"]),
                        pct(w["share_of_read"]),
                        pct(w["share_of_all"]),
                        fmt(w["median_iou_read"], ".2f"),
                        fmt(w["width_ratio_read"], ".2f"),
                        fmt(w["height_ratio_read"], ".2f"),
                        judge(ok),
                    ]
                )
            )
        lines.append("")

    orient_sets = {k: v for k, v in sets.items() if "scores" in v}
    if orient_sets:
        total = orient_summary(orient_sets)
        lines += [
            "Orientation: every dev page turned 90, 180 and 270 degrees clockwise "
            "(`cv2.rotate`); *right* is the page's `angle` equal to the turn (0 for the upright "
            f"page). Target: >= {ANGLE_TARGET:.0%} of turned pages right, page CER within "
            f"{CER_TARGET_POINTS:g} point of the upright page's. CER in % (score.py, the set's "
            "flags).",
            "",
        ]
        lines += table_head(
            [
                "set",
                "pages",
                "right 0",
                "right 90",
                "right 180",
                "right 270",
                "right turned",
                "CER 0",
                "CER 90",
                "CER 180",
                "CER 270",
                "worst CER - upright",
            ]
        )
        rows = [(name, orient_summary({name: s}), s["scores"]) for name, s in orient_sets.items()]
        for name, summ, _ in [*rows, ("all (micro)", total, None)]:
            o = summ["ocrserve"]
            cer = summ["cer"]
            worst = max(cer[a] - cer["0"] for a in ("90", "180", "270"))
            lines.append(
                table_row(
                    [
                        name,
                        str(summ["pages"]),
                        *(pct(o["per_angle"][a]) for a in ("0", "90", "180", "270")),
                        pct(o["rotated"]),
                        *(pct(cer[a]) for a in ("0", "90", "180", "270")),
                        f"{100 * worst:+.2f}",
                    ]
                )
            )
        ok_angle = total["ocrserve"]["rotated"] >= ANGLE_TARGET
        worst_set = max(
            summ["cer"][a] - summ["cer"]["0"] for _, summ, _ in rows for a in ("90", "180", "270")
        )
        lines += [
            "",
            f"Targets: turned pages right {pct(total['ocrserve']['rotated'])}% "
            f"({judge(ok_angle)}); worst CER rise on a set {100 * worst_set:+.2f} points "
            f"({judge(worst_set <= CER_TARGET_POINTS / 100)}).",
            "",
        ]
        if "tesseract" in total:
            lines += [
                f"Tesseract {raw['tesseract']} OSD (`image_to_osd`, psm 0) on the same images: "
                "share right, and median seconds per page (the spawn of its process included); "
                "a page it refuses counts as its answer 0.",
                "",
            ]
            lines += table_head(
                [
                    "set",
                    "right 0",
                    "right 90",
                    "right 180",
                    "right 270",
                    "right turned",
                    "refused",
                    "s/page",
                ]
            )
            for name, summ, _ in [*rows, ("all", total, None)]:
                t = summ["tesseract"]
                lines.append(
                    table_row(
                        [
                            name,
                            *(pct(t["per_angle"][a]) for a in ("0", "90", "180", "270")),
                            pct(t["rotated"]),
                            str(summ["tesseract_refused"]),
                            fmt(summ["tesseract_seconds"], ".2f"),
                        ]
                    )
                )
            lines.append("")
        lines += [
            'What orientation costs ocrserve: upright pages read with `orientation="auto"` and '
            '`"off"`, one call each; the median over the pages of the difference (rough: one '
            "process on a shared machine).",
            "",
        ]
        lines += table_head(["set", "s/page off", "+ s/page auto"])
        for name, summ, _ in [*rows, ("all", total, None)]:
            lines.append(
                table_row(
                    [name, fmt(summ["off_seconds"], ".3f"), fmt(summ["cost_seconds"], "+.3f")]
                )
            )
        lines.append("")
        wrong = [
            f"{name} {p['image']}{' p' + str(p['page']) if p['page'] else ''} "
            f"at {t['angle']}: {t['found']}"
            for name, s in orient_sets.items()
            for p in s["pages"]
            for t in p["turns"]
            if t["found"] != t["angle"]
        ]
        if wrong:
            lines += [f"ocrserve's wrong angles ({len(wrong)}): " + "; ".join(wrong) + ".", ""]
    if raw.get("notes"):
        lines += [f"- {n}" for n in raw["notes"]]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- the command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sets",
        type=lambda v: comma_list(v, DEV_SETS, "set"),
        default=list(DEV_SETS),
        help="comma-separated dev sets (default: all)",
    )
    ap.add_argument(
        "--parts",
        type=lambda v: comma_list(v, PARTS, "part"),
        default=list(PARTS),
        help="words, orientation or both (default)",
    )
    ap.add_argument("--limit", type=positive, default=None, help="first N items of each set")
    ap.add_argument(
        "--skip",
        type=int,
        default=0,
        help="leave out the first N items of each set (another run of those is --merge'd)",
    )
    ap.add_argument("--no-tesseract", action="store_true", help="skip Tesseract's OSD")
    ap.add_argument(
        "--cost-limit",
        type=positive,
        default=5,
        help="time orientation off vs auto on the first N items of each set (default 5)",
    )
    ap.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="raw JSON of an earlier run: its sets' parts this run did not measure are "
        "reported too (e.g. the slow orientation run, then the word boxes after a change)",
    )
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: report what the --merge files hold",
    )
    ap.add_argument(
        "--note",
        action="append",
        default=[],
        help="a sentence for the report's notes (what the failures were, read by a person)",
    )
    ap.add_argument("--write-results", action="store_true", help="update bench/RESULTS.md")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ocrserve.config import Settings
    from ocrserve.engine import Engine
    from ocrserve.types import OCROptions, Page

    machine = machine_info()
    # The code measured is the one at the start: others may commit while a long run goes on.
    at_start = commit(["src", "bench/documents.py"])
    run = new_run(TAG)
    if args.report_only:
        args.sets = []
    engine = None if args.report_only else Engine.from_settings(Settings())
    warm = load_bgr(
        Path(__file__).resolve().parent.parent / "tests" / "fixtures", {"image": "phototest.tif"}
    )
    if engine is not None:
        engine.run([Page(warm)], OCROptions())

    def progress(name: str, page: dict[str, Any]) -> None:
        found = " ".join(f"{t['angle']}->{t['found']}" for t in page["turns"])
        print(f"[{TAG}] {name} {page['image']} {page['page'] or ''} {found}", file=sys.stderr)

    sets: dict[str, dict[str, Any]] = {}
    for name in args.sets:
        sets[name] = run_set(name, engine, args, run, progress)
        # A long run's finished sets survive its interruption: --merge reads this file.
        partial = {"commit": at_start, "sets": sets}
        partial["args"] = raw_args(args) | {"merge": [str(m) for m in args.merge]}
        run.with_suffix(".partial.json").write_text(json.dumps(partial), encoding="utf-8")
    notes = [*merge(sets, args.merge), *args.note]
    sets = {name: sets[name] for name in DEV_SETS if name in sets}
    machine["loadavg_end"] = os.getloadavg()[0]
    raw: dict[str, Any] = {
        "args": raw_args(args) | {"merge": [str(m) for m in args.merge]},
        "machine": machine,
        "machine_line": machine_header(machine, ("tesseract",), f" · shapely {pkg('shapely')}"),
        "commit": at_start,
        "tesseract": machine["tesseract"],
        "sets": sets,
        "notes": notes,
    }
    if args.limit is not None or args.skip:
        raw["notes"].append(
            f"Partial run: items {args.skip + 1} to {args.skip + (args.limit or 0)} of each set."
        )
    publish(TAG, run, raw, render(raw), to_results=args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
