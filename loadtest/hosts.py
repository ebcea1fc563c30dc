"""The loopback guard every load tool here applies: a typo must not load somebody else's server.

Standard library only, so the stand-alone scripts (locust, perf_analyzer wrappers) can use it from any venv.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class NotLoopbackError(ValueError):
    """The target is not this machine."""


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a DNS name other than localhost
        return False


def split_target(url: str) -> tuple[str, int | None]:
    """(host, port) of `http://host:port/...` or of a bare `host:port` (perf_analyzer's -u form)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    return parts.hostname, parts.port


def require_loopback(url: str, *, allow_remote: bool = False) -> str:
    """Return `url` if its host is a loopback address (or `allow_remote`); refuse anything else."""
    host, _ = split_target(url)
    if not allow_remote and not is_loopback_host(host):
        raise NotLoopbackError(f"refusing to load a non-loopback host: {host}")
    return url
