"""``OPTIN_RATELIMIT_STORAGE_URL``, parsed: in-process counts, or which Redis holds them.

The per-IP rate limits (ops.ratelimits), the per-address mail cap and the
ActiveCampaign throttle all keep their counts there, so every URL the
limiter accepts is one the throttle can use. The forms are those of the
``limits`` package: ``memory://``, ``redis://host:port/db``, ``rediss://…``,
``redis+unix:///path/to/socket``, ``redis+sentinel://host:port[,host:port]/service``
and ``redis+cluster://host:port[,host:port]`` (``user:password@`` before the hosts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import SplitResult, unquote, urlsplit

SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")


class RedisKind(StrEnum):
    """How to reach the Redis that keeps the counts."""

    SERVER = "server"  # one server, by TCP (redis://, rediss://) or a socket (redis+unix://)
    SENTINEL = "sentinel"  # the master a group of sentinels names
    CLUSTER = "cluster"


@dataclass(frozen=True)
class SharedStorage:
    """A Redis-family storage. For ``SERVER``, ``url`` is what ``redis.Redis.from_url``
    takes; for the others, ``nodes`` are the sentinels or the cluster's seed nodes."""

    kind: RedisKind
    url: str = field(default="", repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_storage_url(url: str) -> SharedStorage | None:
    """None for ``memory://`` (counts of this process only), else where the shared counts are.

    ValueError says what is wrong, never the URL (it may carry a password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        others = ", ".join(f"{s}://" for s in SCHEMES[2:])
        raise ValueError(f"must start with memory:// or redis:// (or {others}), "
                         f"got {'a ' + scheme + ':// URL' if sep else 'no scheme'}")
    if scheme == "memory":
        return None
    if scheme in {"redis", "rediss"}:
        return SharedStorage(RedisKind.SERVER, url)
    if scheme == "redis+unix":
        if not urlsplit(url).path:
            raise ValueError("redis+unix:// must name the socket, e.g. redis+unix:///run/redis.sock")
        return SharedStorage(RedisKind.SERVER, "unix://" + rest)
    return _multi_node(scheme, urlsplit(url))


def _multi_node(scheme: str, parts: SplitResult) -> SharedStorage:
    nodes = _nodes(scheme, parts.netloc.rpartition("@")[2])
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if scheme == "redis+cluster":
        return SharedStorage(RedisKind.CLUSTER, nodes=nodes, username=username, password=password)
    service = parts.path.strip("/")
    if not service or "/" in service:
        raise ValueError("redis+sentinel:// must name the service after the sentinels, e.g. "
                         "redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster")
    return SharedStorage(RedisKind.SENTINEL, nodes=nodes, service_name=service,
                         username=username, password=password)


def _nodes(scheme: str, hosts: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for location in filter(None, (h.strip() for h in hosts.split(","))):
        try:
            parts = urlsplit(f"//{location}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host = port = None
        if not host or not port:
            raise ValueError(f"{scheme}:// hosts must look like host:port, got {location!r}")
        nodes.append((host, port))
    if not nodes:
        raise ValueError(f"{scheme}:// must name at least one host:port")
    return tuple(nodes)
