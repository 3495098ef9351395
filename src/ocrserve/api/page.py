"""The page to try the service in a browser: ``GET /``, its script and style under ``/page/``,
and ``GET /languages``, the languages it offers.

The page is three static files shipped in the package (``api/page_assets/``): no build step,
no framework, nothing from a CDN, so it works where the service runs with no network. It needs
no API key to load; it calls ``POST /ocr`` with the key its user types.

Its Content-Security-Policy allows scripts, styles and requests from this origin only (no
inline script), and images from ``blob:``: the page draws the uploaded image from an object
URL. Every file carries an ETag and ``Cache-Control: no-cache``: a browser asks again each
time and gets a 304 until the package changes, so an upgrade is never hidden by a stale copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ocrserve.api.openapi import ALWAYS, error_responses
from ocrserve.api.schemas import Languages
from ocrserve.api.service import service_of

#: Where the browser fetches the page's script and style.
ASSET_PREFIX: Final = "/page"
#: The page's files in the package, and their media types.
ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "form-action 'none'",  # the form is sent by the script, never by the browser
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
#: On every file: no MIME sniffing, and no key-bearing URL ever leaks in a Referer.
_COMMON_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def load(cls, name: str) -> _Asset:
        body = resources.files("ocrserve.api").joinpath("page_assets", name).read_bytes()
        return cls(body, ASSETS[name], f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def response(self, request: Request, headers: dict[str, str] | None = None) -> Response:
        all_headers = {**_COMMON_HEADERS, "ETag": self.etag, **(headers or {})}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=all_headers)
        return Response(self.body, media_type=self.media_type, headers=all_headers)


def router() -> APIRouter:
    """The page's routes. The files are read once, here, when the app is built.

    >>> app.include_router(router())  # doctest: +SKIP
    """
    assets = {name: _Asset.load(name) for name in ASSETS}
    page = assets.pop("index.html")
    r = APIRouter()

    @r.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        return page.response(request, {"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @r.get(ASSET_PREFIX + "/{name}", include_in_schema=False)
    async def asset(request: Request, name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "Not Found")  # the API's JSON 404, as for any other path
        return assets[name].response(request)

    @r.get(
        "/languages",
        response_model=Languages,
        responses=error_responses(*ALWAYS),
        summary="The languages the server reads, for the lang option",
    )
    async def languages(request: Request) -> Languages:
        engine = service_of(request).engine
        models = {"stable": engine.model_version}
        if engine.candidate is not None:
            models["candidate"] = engine.candidate.model_version
        if engine.second is not None:
            models[engine.second.name] = engine.second.model_version
        return Languages(
            langs=list(engine.langs),
            default=engine.defaults.lang,
            engines={name: list(langs) for name, langs in engine.langs_by_engine().items()},
            models=models,
            candidate_share=engine.share,
        )

    return r
