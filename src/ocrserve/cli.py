"""The command line: thin wiring of settings, decoding, the engine and the server.

ocrserve serve [--host 127.0.0.1] [--port 8000]
ocrserve ocr FILE... [--format text|json|jsonl|hocr|alto|pdf] [-o PATH] [--lang ch]
             [--precision int8] [--no-cls] [--pdf-text auto|ocr|pdf] [--orientation auto|off]
ocrserve models [--precision int8]
ocrserve db upgrade | current
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO, TypeVar

import typer
from tqdm import tqdm

from ocrserve._version import __version__
from ocrserve.client.cli import client_app
from ocrserve.config import Settings
from ocrserve.errors import OCRServeError
from ocrserve.types import ORIENTATIONS, PDF_TEXT_MODES

if TYPE_CHECKING:
    from ocrserve.engine import Engines
    from ocrserve.types import Document, PageResult

# The engine (onnxruntime, OpenCV, pypdfium2) is imported by the commands that run it, not here:
# `ocrserve --version`, `ocrserve db ...` and `ocrserve client ...` never load it.

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ocrserve: self-hosted OCR.")
app.add_typer(client_app, name="client", help="Call an ocrserve server through the SDK.")
log = logging.getLogger("ocrserve")


_PAGES_PER_CALL = 4
T = TypeVar("T", bound=str)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    jsonl = "jsonl"
    # Documents, written by ocrserve.formats: one per input file.
    hocr = "hocr"
    alto = "alto"
    pdf = "pdf"


_DOCUMENT_FORMATS = frozenset({OutputFormat.hocr, OutputFormat.alto, OutputFormat.pdf})


@dataclass
class _FileResult:
    path: Path
    doc: Document | None = None
    pages: list[PageResult] | None = None
    error: OCRServeError | None = None
    #: Pages already written (JSON lines go out as they are read).
    streamed: int = 0


def _settings(**overrides: object) -> Settings:
    try:
        base = Settings()
        return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise typer.BadParameter(str(e)) from e


def _fail(e: OCRServeError) -> typer.Exit:
    typer.echo(f"error: [{e.code}] {e.message}", err=True)
    return typer.Exit(2)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """ocrserve: self-hosted OCR."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default 127.0.0.1 (OCRSERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Default 8000 (OCRSERVE_PORT).")] = None,
) -> None:
    """Run the HTTP service (embedded defaults: no other server needed)."""
    from ocrserve.engine import Engine
    from ocrserve.logs import configure

    settings = _settings(host=host, port=port)
    try:
        settings.check_extras()
    except OCRServeError as e:
        raise _fail(e) from e
    configure(settings.log_level, json_lines=settings.log_json)
    loading = Engine.preload(settings)  # the models load while the web stack is imported
    from ocrserve.api.server import serve as run_server

    run_server(settings, preloaded=loading)


@app.command()
def worker(
    burst: Annotated[
        bool,
        typer.Option(help="Run what is queued and send its callbacks, then exit (no waiting)."),
    ] = False,
) -> None:
    """Run a Celery worker for async tasks (needs OCRSERVE_BROKER_URL and _DATABASE_URL)."""
    from ocrserve.logs import configure

    settings = _settings()
    if not settings.broker_url:
        typer.echo("error: set OCRSERVE_BROKER_URL (amqp://... or redis://...)", err=True)
        raise typer.Exit(2)
    try:
        settings.check_extras()
    except OCRServeError as e:
        raise _fail(e) from e
    from ocrserve.jobs.celery_app import run_burst, run_worker

    configure(settings.log_level, json_lines=settings.log_json)
    if burst:
        ran = run_burst(settings)
        log.info("burst done", extra={"tasks_run": ran})
        return
    run_worker(settings)


dlq_app = typer.Typer(no_args_is_help=True, help="Callbacks that could not be delivered.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list() -> None:
    """List dead-lettered callbacks (JSON lines)."""
    from ocrserve.jobs.store import TaskStore

    store = TaskStore(_settings().task_database_url())
    for row in store.dead_letters():
        typer.echo(json.dumps({"task_id": row.id, "status": row.status,
                               "callback_url": row.callback_url,
                               "attempts": row.callback_attempts,
                               "last_error": row.callback_last_error}))  # fmt: skip


@dlq_app.command("replay")
def dlq_replay(task_ids: Annotated[list[str], typer.Argument(help="Tasks to send again.")]) -> None:
    """Send dead callbacks again (a running server or worker delivers them)."""
    from ocrserve.jobs.store import TaskStore

    store = TaskStore(_settings().task_database_url())
    missing = [t for t in task_ids if not store.replay(t)]
    for t in missing:
        typer.echo(f"{t}: error: not a dead letter", err=True)
    if missing:
        raise typer.Exit(1)


db_app = typer.Typer(no_args_is_help=True, help="The task database's schema (migrations).")
app.add_typer(db_app, name="db")


def _revision(revision: str | None) -> str:
    from ocrserve.jobs.schema import head

    if revision is None:
        return "none (no revision recorded)"
    return f"{revision} (head)" if revision == head() else revision


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the task table to this version's schema (servers and workers also do at start)."""
    from ocrserve.jobs.schema import migrate
    from ocrserve.jobs.store import make_engine

    engine = make_engine(_settings().task_database_url())
    try:
        typer.echo(_revision(migrate(engine)))
    except OCRServeError as e:
        raise _fail(e) from e
    finally:
        engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """Print the task table's revision."""
    from ocrserve.jobs.schema import current
    from ocrserve.jobs.store import make_engine

    engine = make_engine(_settings().task_database_url())
    try:
        typer.echo(_revision(current(engine)))
    finally:
        engine.dispose()


@app.command()
def ocr(
    files: Annotated[list[Path], typer.Argument(help="Images or PDFs to read.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.text,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write here instead of to stdout: a file for one input, a folder for several "
            "(hocr, alto and pdf then write <name>.hocr, .xml, .pdf per input).",
        ),
    ] = None,
    lang: Annotated[str | None, typer.Option(help="Language of the text (default ch).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 or int8.")] = None,
    no_cls: Annotated[bool, typer.Option("--no-cls", help="Skip the 180-degree check.")] = False,
    pdf_text: Annotated[
        str,
        typer.Option(
            help="PDF pages: auto reads a usable text layer and recognises the rest; ocr "
            "recognises every page; pdf only reads text layers."
        ),
    ] = "auto",
    orientation: Annotated[
        str, typer.Option(help="auto finds pages turned by 90, 180 or 270 degrees; off.")
    ] = "auto",
    dpi: Annotated[int | None, typer.Option(help="PDF render resolution.")] = None,
    max_pages: Annotated[int | None, typer.Option(help="Pages read per document.")] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Default: on a terminal.")
    ] = None,
) -> None:
    """Recognise text in local files; exits 1 if any file failed (the others still run)."""
    from ocrserve.decode import decode_path
    from ocrserve.engine import Engines

    settings = _settings(precision=precision, pdf_dpi=dpi, max_pages=max_pages)
    limits = settings.decode_limits()
    try:
        engine = Engines.from_settings(settings)
        options = replace(
            engine.defaults,
            use_cls=not no_cls and settings.use_cls,
            pdf_text=_choice("--pdf-text", pdf_text, PDF_TEXT_MODES),
            orientation=_choice("--orientation", orientation, ORIENTATIONS),
        )
        if lang is not None:
            options = replace(options, lang=lang)
        engine.resolve(options)  # a bad --lang fails once, before any file is read
    except OCRServeError as e:
        raise _fail(e) from e

    target = _Target(fmt, output, many=len(files) > 1)
    show = progress if progress is not None else sys.stderr.isatty()
    # Counts pages; the total grows as each file is opened and its page count becomes known.
    bar = tqdm(total=0, unit="page", disable=not show, file=sys.stderr, leave=False)
    failed = 0
    for path in files:
        result = _FileResult(path)
        try:
            result.doc = decode_path(path, limits)
            bar.total = (bar.total or 0) + len(result.doc.pages)
            bar.refresh()
            result.pages = []
            # A few pages per engine call: the recogniser still gets full batches, and the
            # bar moves through a long PDF.
            for start in range(0, len(result.doc.pages), _PAGES_PER_CALL):
                chunk = result.doc.pages[start : start + _PAGES_PER_CALL]
                result.pages += engine.run(chunk, options)
                target.progress(result)
                bar.update(len(chunk))
        except OCRServeError as e:
            result.error = e
            result.pages = None
        if result.error is not None:
            failed += 1
            bar.write(
                f"{path}: error: [{result.error.code}] {result.error.message}", file=sys.stderr
            )
        elif result.doc is not None and result.doc.truncated:
            bar.write(
                f"{path}: read {len(result.doc.pages)} of {result.doc.pages_total} pages "
                "(page limit)",
                file=sys.stderr,
            )
        try:
            target.emit(result, engine, settings.pdf_dpi)
        except OSError as e:
            bar.close()
            typer.echo(f"error: cannot write {e.filename or 'the output'}: {e.strerror}", err=True)
            raise typer.Exit(1) from e
    target.close()
    bar.close()
    if failed:
        raise typer.Exit(1)


def _choice(name: str, value: str, allowed: tuple[T, ...]) -> T:
    for choice in allowed:
        if value == choice:
            return choice
    raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=name)


def _file_dict(r: _FileResult, engine: Engines) -> dict[str, object]:
    if r.error is not None or r.doc is None or r.pages is None:
        err = r.error or OCRServeError("unknown failure")
        return {"file": str(r.path), "error": {"code": err.code, "message": err.message}}
    confs = [line.confidence for page in r.pages for line in page.lines]
    return {
        "file": str(r.path),
        "text": "\n\n".join(p.text for p in r.pages),
        "avg_confidence": round(sum(confs) / len(confs), 5) if confs else 0.0,
        "page_count": len(r.pages),
        "pages_total": r.doc.pages_total,
        "truncated": r.doc.truncated,
        "model": engine.model_version,
        "pages": [p.to_dict() for p in r.pages],
    }


class _Target:
    """Where ``ocr`` writes: stdout, one file, or a folder with a document per input."""

    def __init__(self, fmt: OutputFormat, output: Path | None, *, many: bool) -> None:
        self.fmt, self.output, self.many = fmt, output, many
        self.document = fmt in _DOCUMENT_FORMATS
        if output is None and fmt is OutputFormat.pdf and sys.stdout.isatty():
            raise typer.BadParameter(
                "a PDF is not written to a terminal: give --output FILE or redirect stdout",
                param_hint="--format",
            )
        if output is not None and many and self.document and not output.is_dir():
            raise typer.BadParameter(
                f"{output} is not a folder: several inputs as {fmt} need one (a file each)",
                param_hint="--output",
            )
        self._stream: TextIO | None = None
        if output is not None and not (many and self.document):
            if self.document:
                output.parent.mkdir(parents=True, exist_ok=True)
            else:
                self._stream = open(output, "w", encoding="utf-8")  # noqa: SIM115

    def progress(self, r: _FileResult) -> None:
        """Pages as they are read: JSON lines go out at once, so a long PDF shows its first
        pages in seconds and an interrupted run keeps what it read."""
        if self.fmt is OutputFormat.jsonl and r.pages:
            for page in r.pages[r.streamed :]:
                typer.echo(
                    json.dumps({"file": str(r.path), **page.to_dict()}, ensure_ascii=False),
                    file=self._stream,
                )
            r.streamed = len(r.pages)

    def emit(self, r: _FileResult, engine: Engines, dpi: int) -> None:
        if not self.document:
            _emit(r, self.fmt, engine, many=self.many, out=self._stream)
            return
        if r.pages is None or r.doc is None:
            return  # the error was reported; a document of nothing is not written
        from ocrserve.formats import FORMATS, Source

        writer = FORMATS[self.fmt.value]
        data = writer.write(
            r.pages,
            Source(data=r.path.read_bytes(), format=r.doc.format, filename=r.path.name, dpi=dpi),
            system=f"ocrserve {__version__} ({engine.model_version})",
        )
        if self.output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        elif self.many:
            (self.output / (r.path.stem + writer.extension)).write_bytes(data)
        else:
            self.output.write_bytes(data)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def _emit(
    r: _FileResult, fmt: OutputFormat, engine: Engines, *, many: bool, out: TextIO | None = None
) -> None:
    if fmt is OutputFormat.json:
        # One JSON document per file, one per line: a list would need every file first.
        typer.echo(json.dumps(_file_dict(r, engine), ensure_ascii=False), file=out)
    elif fmt is OutputFormat.jsonl:
        if r.pages is None:
            typer.echo(json.dumps(_file_dict(r, engine), ensure_ascii=False), file=out)
            return
        for page in r.pages[r.streamed :]:  # what _Target.progress has not written yet
            typer.echo(
                json.dumps({"file": str(r.path), **page.to_dict()}, ensure_ascii=False), file=out
            )
    elif r.pages is not None:
        if many:
            typer.echo(f"==> {r.path} <==", file=out)
        for i, page in enumerate(r.pages):
            if len(r.pages) > 1:
                typer.echo(
                    f"--- page {page.index} ---" if i == 0 else f"\n--- page {page.index} ---",
                    file=out,
                )
            typer.echo(page.text, file=out)


@app.command()
def models(
    precision: Annotated[str | None, typer.Option(help="Also prepare this precision.")] = None,
) -> None:
    """Verify the installed models and list the languages each engine reads."""
    from ocrserve.engine import Engines

    settings = _settings(precision=precision)
    try:
        engines = Engines.from_settings(settings)
    except OCRServeError as e:
        raise _fail(e) from e
    by_engine = engines.langs_by_engine()
    for name, engine in (("ppocr", engines.main), ("candidate", engines.candidate)):
        if engine is None:
            continue
        typer.echo(f"{name}: {engine.models.folder}")
        typer.echo(f"  version:   {engine.model_version}")
        for spec in engine.models.specs:
            langs = f"  ({', '.join(spec.langs)})" if spec.task == "det" and spec.langs else ""
            typer.echo(f"  {spec.task}:       {spec.file}  sha256 {spec.sha256[:16]}…  ok{langs}")
        typer.echo(f"  precision: {engine.precision}  providers: {', '.join(engine.providers)}")
        typer.echo(f"  languages: {', '.join(engine.langs)}")
    if engines.candidate is not None:
        typer.echo(f"  share:     {engines.share:.1%} of requests")
    if engines.second is None:
        typer.echo("tesseract: not installed (apt-get install tesseract-ocr tesseract-ocr-<lang>)")
    else:
        typer.echo(f"{engines.second.name}: {engines.second.model_version}")
        typer.echo(f"  languages: {', '.join(by_engine[engines.second.name])}")
        fallback = [code for code in engines.main.langs if engines.second.serves(code)]
        typer.echo(f"  fallback for: {', '.join(fallback)}")


@app.command()
def compare(
    folder: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Images and PDFs to read.")
    ],
    candidate: Annotated[
        Path | None,
        typer.Option(help="The candidate model folder; default OCRSERVE_CANDIDATE_MODEL_DIR."),
    ] = None,
    lang: Annotated[str | None, typer.Option(help="Language (default: OCRSERVE_LANG).")] = None,
    max_pages: Annotated[int | None, typer.Option(help="Pages read per document.")] = None,
    pdf_text: Annotated[
        str, typer.Option(help="PDF text layers: ocr (default here: compare the models), auto.")
    ] = "ocr",
) -> None:
    """Read every file of FOLDER with the stable and the candidate model sets; print each
    file's timings and the diff of their texts, then a summary. Exits 1 when a file failed."""
    from ocrserve.compare import compare_folder

    settings = _settings(max_pages=max_pages, candidate_model_dir=candidate)
    if settings.candidate_model_dir is None:
        raise typer.BadParameter(
            "no candidate: pass --candidate DIR or set OCRSERVE_CANDIDATE_MODEL_DIR"
        )
    try:
        failed = compare_folder(
            folder,
            settings,
            lang=lang,
            pdf_text=_choice("--pdf-text", pdf_text, PDF_TEXT_MODES),
            echo=typer.echo,
        )
    except OCRServeError as e:
        raise _fail(e) from e
    raise typer.Exit(1 if failed else 0)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Alembic lists its autogenerate plugins at INFO when imported, in every process at every
    # start; that says nothing about the database ("Running upgrade ..." lines still do).
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # pikepdf announces its logger bridge at INFO on the first PDF written (--format pdf).
    logging.getLogger("pikepdf._core").setLevel(logging.WARNING)
    app()
