"""Requests the server makes to URLs its clients give (``image_url``, callbacks), safely.

A URL given by a client makes the server open a connection, so it is checked (SSRF):

- :func:`checked_url` parses it once, with the parser httpx connects with, and refuses what is
  no URL we can use (a bad port, host, label or IDNA name: :class:`InvalidURLError`), a scheme
  other than http(s), and an address literal :func:`is_public_address` refuses.
- Every connection goes through :class:`PinnedBackend`: it resolves the host once, checks
  every address it got, and connects to a checked one. Nothing resolves the name a second
  time, so a name that answers a public address to the check and a private one to the
  connection (DNS rebinding) cannot slip through. TLS (SNI, certificate) and the Host header
  keep the name. Each redirect hop is a new request, checked the same way.
- :func:`server_client` is the only client these requests go through: pinned, and blind to
  the environment (``trust_env=False``: an ``HTTPS_PROXY`` there would connect for us, to
  anything, and ``.netrc`` would add credentials).

With ``allow_private`` (``OCRSERVE_ALLOW_PRIVATE_URLS``) every address is allowed. The body is
streamed and cut at ``max_bytes``; the whole fetch has one time limit. Decoding never touches
the network: it gets the bytes from here. URLs in messages are :func:`redact_url`'s.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from ocrserve.errors import FileTooLargeError, InvalidURLError, URLFetchError, URLNotAllowedError
from ocrserve.urls import redact_url

MAX_REDIRECTS = 5
#: Presigned URLs run to a couple of kilobytes; nothing legitimate comes near this.
MAX_URL_CHARS = 8192
#: DNS limits (RFC 1035): a name of at most 253 characters, in labels of 1 to 63.
MAX_HOST_CHARS = 253
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)
#: A last label like this makes the host an IPv4 number to inet_aton and getaddrinfo
#: (``127.1``, ``0x7f.1``, ``2130706433``): only the dotted quad is accepted as an address.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)

#: IPv6 ranges that are not public although Python's ``is_global`` says so in some versions
#: (site-local fec0::/10 is still routed inside some networks), or that are local by RFC.
#: 64:ff9b:1::/48 is local-use NAT64 (RFC 8215): where its IPv4 sits depends on the prefix
#: length its operator chose, so it cannot be judged by its IPv4, and is refused.
_NOT_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "fec0::/10", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20",
        "5f00::/16", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # ::ffff:a.b.c.d
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d (SIIT)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d (deprecated; also :: and ::1)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # 64:ff9b::a.b.c.d (RFC 6052)
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")

#: ``(host, port) -> addresses``: how :class:`PinnedBackend` resolves (tests pass a stub).
Resolver = Callable[[str, int], Awaitable[list[str]]]


def is_public_address(address: str) -> bool:
    """Whether the server may connect to ``address`` when private targets are not allowed:
    public unicast only. Every IPv6 form that carries an IPv4 address (mapped, compatible,
    SIIT, NAT64, 6to4, Teredo) is judged by that IPv4, as that is where packets end up.

    This is the one address policy, of ``image_url`` fetches and callbacks alike.

    >>> is_public_address("93.184.216.34"), is_public_address("64:ff9b::10.0.0.1")
    (True, False)
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is no part
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_v4(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return all(_public_v4(v4) for v4 in embedded)
    if any(ip in net for net in _NOT_PUBLIC_V6):
        return False
    return ip.is_global and not ip.is_multicast


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not ip.is_multicast


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _COMPATIBLE or ip in _NAT64:
        return (low32,)
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip in _TEREDO and ip.teredo is not None:
        return ip.teredo  # (server, client): the packets go through both
    return None


def checked_url(url: str, *, allow_private: bool, require_https: bool = False) -> httpx.URL:
    """``url`` parsed as httpx will request it, or :class:`InvalidURLError` /
    :class:`URLNotAllowedError`. Resolves nothing: names are checked as they are connected to.

    >>> checked_url("https://example.com/a.png", allow_private=False).host
    'example.com'
    """
    shown = redact_url(url)
    if len(url) > MAX_URL_CHARS:
        raise InvalidURLError(f"URL longer than {MAX_URL_CHARS} characters", url=shown)
    if any(c <= " " or c == "\x7f" for c in url):
        # urlsplit drops tabs and newlines silently; httpx may not: refuse rather than guess.
        raise InvalidURLError("URL contains spaces or control characters", url=shown)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as e:  # idna.IDNAError is a ValueError
        raise InvalidURLError(f"invalid URL {shown}: {e}", url=shown) from None
    allowed = ("https",) if require_https and not allow_private else ("http", "https")
    if parsed.scheme not in allowed:
        raise URLNotAllowedError(
            f"URL scheme must be {' or '.join(allowed)}, got {parsed.scheme or 'none'!r}",
            url=shown,
        )
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise InvalidURLError(f"invalid URL {shown}: port {parsed.port} out of range", url=shown)
    # IDNA-encoded by httpx; anything else left fails the label check below.
    host = parsed.raw_host.decode("ascii", errors="replace")
    if not host:
        raise InvalidURLError(f"invalid URL {shown}: no host", url=shown)
    if "%" in host:  # an IPv6 zone (an interface of this machine) or a percent-encoded name
        raise InvalidURLError(f"invalid URL {shown}: '%' in the host", url=shown)
    literal = _address_literal(host)
    if literal is None:
        _check_hostname(host, shown)
    elif not allow_private and not is_public_address(literal):
        raise URLNotAllowedError(_refusal(host, literal), url=shown)
    return parsed


def _address_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _check_hostname(host: str, shown: str) -> None:
    name = host.removesuffix(".")  # a fully qualified "example.com." is the same name
    labels = name.split(".")
    problem = None
    if len(name) > MAX_HOST_CHARS:
        problem = f"host name longer than {MAX_HOST_CHARS} characters"
    elif "" in labels:
        problem = "host name has an empty label"
    elif bad := next((label for label in labels if not _LABEL.fullmatch(label)), None):
        problem = f"host name label {bad[:70]!r} is not 1-63 letters, digits, '-' or '_'"
    elif _NUMERIC_LABEL.fullmatch(labels[-1]):
        problem = f"{host!r} is no dotted-quad IPv4 address and no host name"
    if problem:
        raise InvalidURLError(f"invalid URL {shown}: {problem}", url=shown)


def _refusal(host: str, address: str) -> str:
    what = host if host == address else f"{host} resolves to {address}, which"
    return (
        f"{what} is not a public address (private, loopback, link-local or reserved); "
        "set OCRSERVE_ALLOW_PRIVATE_URLS=1 to allow it"
    )


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the system resolver's order, once each."""
    if (literal := _address_literal(host)) is not None:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_url(url: str, *, allow_private: bool, require_https: bool = False) -> None:
    """:func:`checked_url`, and the name resolved now and every address checked: a request
    that would be refused is refused when it is made (a task's URLs at submission), not later.
    Not the guard itself: :class:`PinnedBackend` checks again where it connects.
    """
    parsed = checked_url(url, allow_private=allow_private, require_https=require_https)
    if allow_private:
        return
    host = parsed.raw_host.decode("ascii")  # checked_url made sure of it
    try:
        addresses = await resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except (OSError, UnicodeError) as e:
        raise URLFetchError(f"cannot resolve {host}: {e}", url=redact_url(url)) from e
    for address in addresses:
        if not is_public_address(address):
            raise URLNotAllowedError(_refusal(host, address), url=redact_url(url))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves once, checks, and connects to what it checked.

    httpcore hands it the URL's host; it resolves it with ``resolver``, refuses the connection
    (:class:`URLNotAllowedError`) if any address fails :func:`is_public_address` (unless
    ``allow_private``), then connects ``inner`` to those addresses in turn. httpcore starts
    TLS on the returned stream with the host name, so SNI and certificate checks are the name's.

    >>> client = httpx.AsyncClient(transport=...)  # see server_client()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except (OSError, UnicodeError) as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        if not self.allow_private:
            for address in addresses:
                if not is_public_address(address):
                    raise URLNotAllowedError(_refusal(host, address), url=host)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
            except httpcore.ConnectError as e:  # the next checked address may answer
                failure = e
        assert failure is not None
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx takes no network backend: its pool is replaced by the same pool over ours
        # (same settings as httpx's defaults), and httpx still maps httpcore's errors to its own.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


def server_client(
    *,
    allow_private: bool,
    resolver: Resolver = resolve,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """The client of every request the server makes to a URL a client gave: connections
    pinned by :class:`PinnedBackend`, no proxy, ``.netrc`` or CA settings from the environment,
    no redirects followed (:func:`fetch_url` checks each hop).

    >>> async with server_client(allow_private=False) as http:  # doctest: +SKIP
    ...     data = await fetch_url(url, max_bytes=10**7, timeout=15, allow_private=False,
    ...                            client=http)
    """
    backend = PinnedBackend(allow_private=allow_private, resolver=resolver, inner=network_backend)
    return httpx.AsyncClient(
        transport=_PinnedTransport(backend), trust_env=False, follow_redirects=False
    )


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """Download ``url`` within the limits; raises a typed error, never hangs. ``client``
    should be a :func:`server_client`: it is what checks the addresses of names.

    >>> data = await fetch_url("https://example.com/a.png", max_bytes=10**7, timeout=15,
    ...                        allow_private=False)  # doctest: +SKIP
    """
    own = client is None
    http = client or server_client(allow_private=allow_private)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(http, url, max_bytes=max_bytes, allow_private=allow_private)
    except TimeoutError:
        shown = redact_url(url)
        raise URLFetchError(f"fetching {shown} took longer than {timeout:g} s", url=shown) from None
    finally:
        if own:
            await http.aclose()


async def _fetch(
    http: httpx.AsyncClient, url: str, *, max_bytes: int, allow_private: bool
) -> bytes:
    shown = redact_url(url)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        target = checked_url(current, allow_private=allow_private)
        try:
            async with http.stream("GET", target, follow_redirects=False) as response:
                if response.is_redirect:
                    # httpx has parsed the Location already: one it cannot is an HTTPError.
                    current = str(target.join(response.headers["location"]))
                    continue
                if response.status_code >= 400:
                    raise URLFetchError(
                        f"fetching {shown} answered HTTP {response.status_code}",
                        url=shown,
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
            raise URLFetchError(f"fetching {shown} failed: {e}", url=shown) from e
    raise URLFetchError(f"fetching {shown}: more than {MAX_REDIRECTS} redirects", url=shown)
