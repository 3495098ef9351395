"""Fetching documents from ``image_url`` inputs, safely.

A URL given by a client makes the server open a connection, so it is checked first (SSRF):
only http(s), and no private, loopback, link-local, multicast or reserved address unless
``allow_private`` (``OCRSERVE_ALLOW_PRIVATE_URLS``). Every address the host resolves to is
checked, and every redirect hop again. The body is streamed and cut at ``max_bytes``; the whole
fetch has one time limit. Decoding never touches the network: it gets the bytes from here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from ocrserve.errors import FileTooLargeError, URLFetchError, URLNotAllowedError

MAX_REDIRECTS = 5


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_url(url: str, *, allow_private: bool, require_https: bool = False) -> None:
    """Raise :class:`URLNotAllowedError` unless the server may connect to ``url``."""
    parts = urlsplit(url)
    allowed = ("https",) if require_https and not allow_private else ("http", "https")
    if parts.scheme not in allowed:
        raise URLNotAllowedError(
            f"URL scheme must be {' or '.join(allowed)}, got {parts.scheme or 'none'!r}", url=url
        )
    host = parts.hostname
    if not host:
        raise URLNotAllowedError("URL has no host", url=url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError as e:
        raise URLFetchError(f"cannot resolve {host}: {e}", url=url) from e
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            raise URLNotAllowedError(
                f"{host} resolves to {address}, a private, loopback or link-local address; "
                "set OCRSERVE_ALLOW_PRIVATE_URLS=1 to allow it",
                url=url,
            )


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """Download ``url`` within the limits; raises a typed error, never hangs.

    >>> data = await fetch_url("https://example.com/a.png", max_bytes=10**7, timeout=15,
    ...                        allow_private=False)  # doctest: +SKIP
    """
    own = client is None
    http = client or httpx.AsyncClient(follow_redirects=False)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(http, url, max_bytes=max_bytes, allow_private=allow_private)
    except TimeoutError:
        raise URLFetchError(f"fetching {url} took longer than {timeout:g} s", url=url) from None
    finally:
        if own:
            await http.aclose()


async def _fetch(
    http: httpx.AsyncClient, url: str, *, max_bytes: int, allow_private: bool
) -> bytes:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        await check_url(current, allow_private=allow_private)
        try:
            async with http.stream("GET", current, follow_redirects=False) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    current = urljoin(current, location)
                    continue
                if response.status_code >= 400:
                    raise URLFetchError(
                        f"fetching {url} answered HTTP {response.status_code}",
                        url=url,
                        status=response.status_code,
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FileTooLargeError(limit=max_bytes, value=int(declared))
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FileTooLargeError(limit=max_bytes, value=len(body))
                return bytes(body)
        except httpx.HTTPError as e:
            raise URLFetchError(f"fetching {url} failed: {e}", url=url) from e
    raise URLFetchError(f"fetching {url}: more than {MAX_REDIRECTS} redirects", url=url)
