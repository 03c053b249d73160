"""Addresses, TLS and tokens: how both clients reach the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    host_port: str
    tls: bool


def parse_target(target: str, tls: bool | None, default_port: int) -> Target:
    """``host:port``, ``http://host:port`` (plaintext) or ``https://host:port`` (TLS)."""
    if not isinstance(target, str) or not target:
        raise ValueError(f"the server address must be a non-empty string, got {target!r}")
    scheme = None
    rest = target
    if "://" in target:
        parts = urlsplit(target)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https", "grpc", "grpcs"):
            raise ValueError(f"{target}: the scheme must be http:// or https://")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{target}: a gRPC address has no path")
        rest = parts.netloc
    if scheme in ("https", "grpcs") and tls is False:
        raise ValueError(f"{target}: an https:// address with tls=False")
    use_tls = bool(tls) or scheme in ("https", "grpcs")
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest = f"{rest}:{default_port}"
    return Target(rest, use_tls)


def read_certificates(value: bytes | str | Path | None) -> bytes | None:
    """PEM certificates given as bytes, or as the path of a file."""
    if value is None or isinstance(value, bytes):
        return value
    path = Path(value)
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the CA certificate {path}: {error.strerror}") from error


def check_token(token: str | None) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or not token or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("the token must be visible ASCII without spaces (the value after 'Bearer ')")
    return token
