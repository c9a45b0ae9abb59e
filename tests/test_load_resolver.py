"""The driver's resolver (harness.load.resolver): IP literals without gevent's threadpool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.load.resolver import is_ip_literal

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", b"127.0.0.1", "fe80::1%eth0", "10.1.2.3"])
def test_ip_literals(host: object) -> None:
    assert is_ip_literal(host)


@pytest.mark.parametrize("host", ["localhost", "example.com", "", None, b"localhost",
                                  "127.0.0.1.nip.io", "[::1]"])
def test_names_are_not_literals(host: object) -> None:
    assert not is_ip_literal(host)


_CHECK = """
import gevent.monkey; gevent.monkey.patch_all()
import json, socket, gevent
from harness.load import resolver
installed = resolver.install()
hub = gevent.get_hub()
kind = type(hub.resolver).__name__
sent = []
class Counting:  # what the thread resolver hands its threadpool
    def __init__(self, pool):
        self.pool = pool
    def apply(self, func, *args, **kwargs):
        sent.append(func.__name__)
        return self.pool.apply(func, *args, **kwargs)
if hasattr(hub.resolver, "pool"):
    hub.resolver.pool = Counting(hub.resolver.pool)
got = [socket.getaddrinfo(h, 8080, 0, socket.SOCK_STREAM, socket.SOL_TCP)[0][4][0]
       for h in ("127.0.0.1", "::1")]
after_literals = list(sent)
name = socket.getaddrinfo("localhost", 8080, 0, socket.SOCK_STREAM)[0][4][0]
print(json.dumps([installed, kind, got, after_literals, name, sent]))
"""


def _check(env: dict[str, str]) -> list:
    import json

    out = subprocess.run([sys.executable, "-c", _CHECK], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_literals_are_answered_without_the_threadpool_and_names_with_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GEVENT_RESOLVER"}
    installed, kind, got, after_literals, name, sent = _check(env)
    assert installed and kind == "LiteralFirstResolver"
    assert got == ["127.0.0.1", "::1"]
    # no thread was asked for a literal; a name still goes to a thread (a DNS lookup in
    # the hub would stall every user while it waits)
    assert after_literals == [] and sent == ["getaddrinfo"]
    assert name in ("127.0.0.1", "::1")


def test_a_resolver_the_user_chose_is_kept() -> None:
    installed, kind, *_ = _check({**os.environ, "GEVENT_RESOLVER": "block"})
    assert not installed and kind == "Resolver"
