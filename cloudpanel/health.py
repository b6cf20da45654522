"""Heartbeats of the panel's own background processes (the event listener), read by /metrics.

Kept in Redis with a lifetime, where the processes are separate; embedded, where they share this process, in a
dictionary of it. A beat that can't be written is lost, never raised: the next one comes within a second.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time

import redis
from django.conf import settings

LIFETIME_SECONDS = 300
QUIET_SECONDS = 10.0  # after a write Redis refused: no beat is tried for this long (the process has work to do)
log = logging.getLogger(__name__)
_local: dict[str, dict[str, float]] = {}
_lock = threading.Lock()
_quiet_until = 0.0


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _key(name: str) -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "asgi")
    return f"{prefix}:health:{name}"


def beat(name: str, values: dict[str, float]) -> None:
    """Record a process's latest figures (numbers) under its name."""
    global _quiet_until
    if not settings.REDIS_URL:
        with _lock:
            _local[name] = dict(values)
        return
    if time.monotonic() < _quiet_until:
        return
    try:
        _client(settings.REDIS_URL).set(_key(name), json.dumps(values), ex=LIFETIME_SECONDS)
    except redis.RedisError as exc:
        log.debug("heartbeat %s not written: %s", name, exc)
        _quiet_until = time.monotonic() + QUIET_SECONDS


def read(kind: str) -> dict[str, dict[str, float]]:
    """The latest figures of each process whose name starts with `kind:` and that beat in the last
    LIFETIME_SECONDS (none when Redis is away)."""
    if not settings.REDIS_URL:
        with _lock:
            return {name: dict(values) for name, values in _local.items() if name.startswith(f"{kind}:")}
    client, prefix = _client(settings.REDIS_URL), _key("")
    try:
        keys = sorted(client.scan_iter(match=f"{prefix}{kind}:*", count=100))
        values = client.mget(keys) if keys else []
    except redis.RedisError:
        return {}
    return {key.decode()[len(prefix):]: json.loads(raw) for key, raw in zip(keys, values, strict=True) if raw}
