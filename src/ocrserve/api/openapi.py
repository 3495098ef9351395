"""What the OpenAPI document says about answers, declared once: the error statuses each route
really returns (with :class:`ErrorOut`), their headers, and ``X-Request-ID`` on every answer.

The fuzzer in tests/test_openapi_conformance.py holds the document to the service.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from ocrserve.api.schemas import ErrorOut, OCRJSONRequest, TaskJSONRequest

_DESCRIPTIONS = {
    401: "No API key, or a wrong one (`WWW-Authenticate: Bearer`)",
    404: "No such task (or another tenant's), or the route is off",
    409: "Conflict: an Idempotency-Key reused for another request, or the task is running",
    413: "Over a limit (body, file, pages, pixels); `limit` and `value` say which",
    406: "The Accept header takes none of the formats the route answers in",
    415: "Not a supported document format or request content type",
    422: "Invalid request: a bad option, field, URL or document",
    429: "Rate limited: wait `Retry-After` seconds",
    501: "Not served by this deployment's profile (the task routes under "
    "OCRSERVE_PROFILE=serverless): use the distributed mode",
    503: "Busy (queue full), storage unavailable, or shutting down: retry after `Retry-After`",
    504: "The request's deadline passed before its pages were read",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "required": True}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "required": True}},
}

#: What any route may answer before it runs: the body limit (413), and the drain (503).
ALWAYS = (413, 503)
#: What the API-key guard adds: a missing or wrong key, and the caller's rate limit.
GUARDED = (401, 429, *ALWAYS)

REQUEST_ID = {
    "X-Request-ID": {
        "description": "The request's id: the caller's, or one made here; in the logs too.",
        "schema": {"type": "string"},
        "required": True,
    }
}


def _multipart(files: dict[str, Any], required: str, **more: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": {
            "type": "object",
            "properties": {
                **files,
                "lang": {"type": "string"},
                "precision": {"type": "string", "enum": ["fp32", "int8"]},
                "cls": {"type": "boolean"},
                "max_pages": {"type": "integer", "minimum": 1},
                "pdf_text": {"type": "string", "enum": ["auto", "ocr", "pdf"]},
                "orientation": {"type": "string", "enum": ["auto", "off"]},
                **more,
            },
            "required": [required],
        }
    }


_FILE = {"type": "string", "format": "binary"}
_SOURCES = {
    "image_url": {"type": "string", "description": "Instead of `image`: fetched by the server"},
    "image_base64": {"type": "string", "description": "Instead of `image`"},
}


#: The options, also read from the query string when the body does not carry them.
_QUERY_OPTIONS = [
    {"name": name, "in": "query", "required": False, "schema": schema}
    for name, schema in (
        ("lang", {"type": "string"}),
        ("precision", {"type": "string", "enum": ["fp32", "int8"]}),
        ("cls", {"type": "boolean"}),
        ("max_pages", {"type": "integer", "minimum": 1}),
        ("pdf_text", {"type": "string", "enum": ["auto", "ocr", "pdf"]}),
        ("orientation", {"type": "string", "enum": ["auto", "off"]}),
    )
]
_FORMAT_SCHEMA = {"type": "string", "enum": ["json", "text", "hocr", "alto", "pdf"]}
_FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "schema": _FORMAT_SCHEMA,
    "description": "The answer's format, instead of the Accept header",
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The same key and request again: the same task (409 for another request).",
}


_MODEL_SET = {
    "name": "X-OCRServe-Model",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["stable", "candidate"]},
    "description": "Under a model rollout, the model set that reads this request; without it, "
    "a stable hash of the request picks (OCRSERVE_CANDIDATE_SHARE). 422 for 'candidate' when "
    "none is installed.",
}


def _body(content: dict[str, Any], *parameters: dict[str, Any]) -> dict[str, Any]:
    """An ``openapi_extra``: the routes read their requests themselves (one parser,
    api.parsing), so FastAPI cannot see them; this declares the body, the options in the
    query string, and the model-set header."""
    return {
        "requestBody": {"content": content, "required": True},
        "parameters": [*_QUERY_OPTIONS, _MODEL_SET, *parameters],
    }


#: ``POST /ocr``: one document as a file part, or JSON with ``image_base64`` or ``image_url``.
OCR_BODY = _body(
    {
        "multipart/form-data": _multipart(
            {"image": _FILE}, "image", **_SOURCES, format=_FORMAT_SCHEMA
        ),
        "application/json": {"schema": OCRJSONRequest.model_json_schema()},
    },
    _FORMAT,
)
#: ``POST /ocr``'s answer besides JSON, by the ``format`` option or the Accept header.
OCR_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The result: JSON, or as the `format` option or Accept header asks",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/vnd.hocr+html": {"schema": {"type": "string"}},
            "application/alto+xml": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
#: ``POST /ocr/batch``: file parts only.
BATCH_BODY = _body(
    {"multipart/form-data": _multipart({"images": {"type": "array", "items": _FILE}}, "images")}
)
#: ``POST /ocr/async``: ``/ocr``'s body, and what a task keeps (metadata, callback_url).
TASK_BODY = _body(
    {
        "multipart/form-data": _multipart(
            {"image": _FILE},
            "image",
            **_SOURCES,
            metadata={"type": "string", "description": "A JSON object, at most 16 KiB"},
            callback_url={"type": "string", "description": "HTTPS"},
        ),
        "application/json": {"schema": TaskJSONRequest.model_json_schema()},
    },
    _IDEMPOTENCY_KEY,
)


def error_responses(
    *statuses: int, model: type[BaseModel] = ErrorOut
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that answers these error statuses, each a ``model``
    (``ErrorOut``, or the error shape of a compatibility dialect)."""
    return {
        status: {
            "model": model,
            "description": _DESCRIPTIONS[status],
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status in sorted(set(statuses))
    }


def install(app: FastAPI) -> None:
    """Serve the document with ``X-Request-ID`` declared on every answer (the middleware adds
    it to every one)."""

    build = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build()  # FastAPI's, built once and kept; the update below is idempotent
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    response.setdefault("headers", {}).update(REQUEST_ID)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
