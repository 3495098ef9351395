"""``ocrserve client ...``: the SDK on the command line (same retries, same errors).

ocrserve client ocr FILE... [--server URL] [--format text|json] [--lang en]
ocrserve client submit (--url URL | FILE) [--callback URL] [--metadata JSON] [--server URL]
ocrserve client wait TASK_ID [--server URL] [--timeout S]

Failures print ``error: [code] message`` on stderr and exit 1.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ocrserve.client.errors import OCRClientError
from ocrserve.client.protocol import DEFAULT_URL
from ocrserve.client.sync import Client
from ocrserve.errors import InputError, OCRServeError

client_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Call an ocrserve server (with retries)."
)

Server = Annotated[
    str, typer.Option("--server", envvar="OCRSERVE_URL", help="The server's base URL.")
]
APIKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="OCRSERVE_API_KEY", help="Sent as a Bearer token."),
]


class Format(StrEnum):
    text = "text"
    json = "json"


def _client(server: str, api_key: str | None) -> Client:
    return Client(server, api_key=api_key)


def _fail(e: OCRServeError, prefix: str = "") -> None:
    typer.echo(f"{prefix}error: [{e.code}] {e.message}", err=True)


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


@client_app.command()
def ocr(
    files: Annotated[list[Path], typer.Argument(help="Images or PDFs to send.")],
    server: Server = DEFAULT_URL,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
    lang: Annotated[str | None, typer.Option(help="Language of the text.")] = None,
    api_key: APIKey = None,
) -> None:
    """Read files on the server. A file the server refuses fails alone (exit 1 at the end);
    a server that cannot be reached stops the run."""
    failed = False
    try:
        with _client(server, api_key) as client:
            for path in files:
                try:
                    result = client.ocr(path, lang=lang)
                except (OCRClientError, InputError) as e:
                    _fail(e, f"{path}: ")
                    failed = True
                    continue
                if fmt is Format.json:
                    # One JSON document per file, one per line, as `ocrserve ocr -f json`.
                    typer.echo(_json({"file": str(path), **result.raw}))
                else:
                    if len(files) > 1:
                        typer.echo(f"==> {path} <==")
                    typer.echo(result.text)
    except OCRServeError as e:
        _fail(e)
        raise typer.Exit(1) from e
    if failed:
        raise typer.Exit(1)


@client_app.command()
def submit(
    file: Annotated[Path | None, typer.Argument(help="A file to send (or --url).")] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="An image URL the server fetches.")
    ] = None,
    callback: Annotated[
        str | None, typer.Option("--callback", help="POSTed the signed result when done.")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", help="A JSON object, echoed in the task.")
    ] = None,
    lang: Annotated[str | None, typer.Option(help="Language of the text.")] = None,
    server: Server = DEFAULT_URL,
    api_key: APIKey = None,
) -> None:
    """Queue an async task; prints the task as JSON (its task_id is what `wait` takes)."""
    if (file is None) == (url is None):
        raise typer.BadParameter("give exactly one of FILE or --url")
    meta: dict[str, Any] | None = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except ValueError as e:
            raise typer.BadParameter(f"--metadata is not JSON: {e}") from e
        if not isinstance(meta, dict):
            raise typer.BadParameter("--metadata must be a JSON object")
    try:
        with _client(server, api_key) as client:
            task = client.submit(
                image_url=url, file=file, callback_url=callback, metadata=meta, lang=lang
            )
    except OCRServeError as e:
        _fail(e)
        raise typer.Exit(1) from e
    typer.echo(_json(dict(task.raw)))


@client_app.command()
def wait(
    task_id: Annotated[str, typer.Argument(help="What `submit` printed as task_id.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 300.0,
    server: Server = DEFAULT_URL,
    api_key: APIKey = None,
) -> None:
    """Wait for a task to finish; prints the finished task as JSON (exit 1 if it failed)."""
    try:
        with _client(server, api_key) as client:
            task = client.wait(task_id, timeout=timeout)
    except OCRServeError as e:
        _fail(e)
        raise typer.Exit(1) from e
    typer.echo(_json(dict(task.raw)))
