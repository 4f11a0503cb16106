"""Who may ask what: the API key's form and how it travels, the ``Host`` names a server answers, and which
routes are writes (they need the key) and which are reads."""

import re
from collections.abc import Sequence

from colbert_az_pylate.errors import InvalidArgumentError

__all__ = [
    "API_KEY_PATTERN",
    "LOCAL_HOSTS",
    "READ_ROUTES",
    "RERANK_PATHS",
    "WRITE_ROUTES",
    "AllowedHosts",
    "bearer_token",
    "check_api_key",
    "host_of",
]

WRITE_ROUTES = frozenset({("POST", "/documents"), ("DELETE", "/documents"), ("POST", "/compact")})
RERANK_PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")  # Cohere v1 (and Jina), Infinity, Cohere v2
READ_ROUTES = frozenset(
    {("POST", "/search"), ("POST", "/v1/embeddings"), ("GET", "/health"), ("GET", "/openapi.json")}
    | {("POST", path) for path in RERANK_PATHS}
)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
API_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a Bearer token (RFC 6750) may hold


def check_api_key(key: str, source: str = "api_key") -> str:
    """``key`` stripped, or a one-line error when it cannot travel in an ``Authorization: Bearer`` header
    (visible ASCII without spaces, as RFC 6750 has it; the error never shows the key).

    Examples
    --------
    >>> check_api_key("  s3cret-key ")
    's3cret-key'
    >>> check_api_key("açar-ğüşıöçə")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    colbert_az_pylate.errors.InvalidArgumentError: api_key must be visible ASCII without spaces ...
    """
    if not isinstance(key, str) or not key.strip():
        raise InvalidArgumentError(f"{source} must be a non-empty text (or None for no key)")
    if not API_KEY_PATTERN.fullmatch(key.strip()):
        raise InvalidArgumentError(
            f"{source} must be visible ASCII without spaces (HTTP headers carry nothing else); "
            'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return key.strip()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header; ``None`` for no header or another scheme."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def host_of(header: str) -> str:
    """The host name of a ``Host`` header, lower case, without its port, brackets or final dot.

    Examples
    --------
    >>> host_of("LocalHost:8000"), host_of("[::1]:8000"), host_of("example.az."), host_of("::1")
    ('localhost', '::1', 'example.az', '::1')
    """
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class AllowedHosts:
    """The ``Host`` names a server answers (Starlette's ``TrustedHostMiddleware`` rule, IPv6 literals included):
    exact names, ``*.example.az`` for any subdomain, ``*`` for any host. A browser page on another site can reach
    a server on localhost through its own DNS name (DNS rebinding); the name it sends in ``Host`` gives it away.

    Examples
    --------
    >>> hosts = AllowedHosts(["localhost", "*.example.az"])
    >>> hosts.allows("localhost:8000"), hosts.allows("api.example.az"), hosts.allows("evil.example")
    (True, True, False)
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [host_of(pattern) if pattern != "*" else "*" for pattern in patterns]
        for pattern in self.patterns:
            name = pattern[2:] if pattern.startswith("*.") else pattern
            if pattern != "*" and (not name or "*" in name):
                raise InvalidArgumentError(f"allowed host {pattern!r} must be a name, *.domain or *")
        self.any = "*" in self.patterns

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        host = host_of(header or "")
        return bool(host) and any(
            host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])) for pattern in self.patterns
        )
