"""What every route shares: the service object built at start-up, the guard, and the
reading of uploads and options from requests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated

import httpx
from fastapi import Depends, Request

from ocrserve.api.metrics import Metrics
from ocrserve.api.security import AdminCheck, KeyCheck, TokenBuckets, address_bucket
from ocrserve.batcher import Batcher
from ocrserve.cache import ResultCache
from ocrserve.config import Settings
from ocrserve.engine import Engines
from ocrserve.errors import (
    AuthError,
    OCRServeError,
)
from ocrserve.types import OCROptions

REQUEST_ID_HEADER = "x-request-id"
CACHE_HEADER = "X-Cache"
#: Forces the model set of one request under a rollout: ``stable`` or ``candidate``.
MODEL_HEADER = "X-OCRServe-Model"


@dataclass
class Service:
    """Everything a request needs, built once at start-up."""

    settings: Settings
    engine: Engines
    batcher: Batcher
    cache: ResultCache | None
    metrics: Metrics
    keys: KeyCheck
    admin: AdminCheck
    buckets: TokenBuckets
    http: httpx.AsyncClient
    #: The async-task backend (api.tasks.TaskBackend); typed loosely to keep imports one-way.
    tasks: object | None = None
    ready: bool = False


def choose_models(
    service: Service,
    forced: str | None,
    documents: Sequence[bytes | str],
    options: OCROptions,
    tenant: str,
) -> OCROptions:
    """``options`` with the model set this request reads under a rollout: ``forced`` (the
    ``X-OCRServe-Model`` header's), or one by the hash of the tenant and the request's
    documents (bytes, or a URL), so a retry reads the same set (``Engines.choose``)."""
    if service.engine.candidate is None and forced is None:
        return options
    key = hashlib.sha256(tenant.encode())
    for doc in documents:
        key.update(hashlib.sha256(doc.encode() if isinstance(doc, str) else doc).digest())
    return replace(options, models=service.engine.choose(key.digest(), forced))


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def guard(request: Request) -> Service:
    """Dependency of every OCR route: API key, then the caller's rate limit. The caller's
    tenant goes on ``request.state.tenant``: for :func:`caller`, and the access log."""
    service = service_of(request)
    try:
        who = service.keys.identify(request)
    except AuthError:
        # A missing or wrong key pays from its address's bucket: a key guesser runs into
        # the rate limit (429) after the burst, as any caller does.
        _rate_limit(service, address_bucket(request))
        raise
    request.state.tenant = service.keys.tenant(request)
    _rate_limit(service, who)
    return service


def _rate_limit(service: Service, who: str) -> None:
    try:
        service.buckets.take(who)
    except OCRServeError:
        service.metrics.rejections.labels("rate_limited").inc()
        raise


Guarded = Annotated[Service, Depends(guard)]


@dataclass(frozen=True)
class Caller:
    """Who calls (``tenant``: its key's name; one tenant when keys are off) and the service.
    Routes that read or write a tenant's things (tasks, cached results) take this."""

    service: Service
    tenant: str


def caller(request: Request, service: Guarded) -> Caller:
    return Caller(service, request.state.tenant)


Authorized = Annotated[Caller, Depends(caller)]


def admin_guard(request: Request) -> Service:
    """Dependency of the /admin routes: the admin key (404 when none is configured)."""
    service = service_of(request)
    try:
        service.admin.check(request)
    except AuthError:  # guessing the admin key pays from the address's bucket, as for clients
        _rate_limit(service, address_bucket(request))
        raise
    return service


AdminGuarded = Annotated[Service, Depends(admin_guard)]
