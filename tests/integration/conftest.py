"""pytest fixtures for the mqchat integration tests.

Environment:
  MQCHAT_PLUGIN             absolute path of mqchat.so (required; tests skip without it)
  MQCHAT_BROKER_LD_PRELOAD  LD_PRELOAD for the mosquitto process only (sanitizer
                            builds); then ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
                            is given to the broker and any sanitizer report in its
                            log/stderr fails the test at teardown
  MQCHAT_IT_TIMEOUT         seconds every wait is bounded by (default 10)
  MQCHAT_IT_KEEP=1          keep the brokers' temp dirs (default: always removed)

Fixtures:
  broker          a started broker with the default test config
                  (durability from the `durability` fixture, "sync" unless a
                  test parametrizes it)
  make_broker     factory: make_broker(opts={...}, start=True, extra_conf=[...])
  connect         factory: connect(user, device="phone", broker=None, **Device kw)
  durability      "sync" (parametrize it to change)
  redis           a started redis-server (mqchat_harness.Redis) on a free
                  loopback port, no persistence; stopped at teardown (after
                  the brokers), failing the test if it died on its own

The helpers (Device, Broker, tokens, pb) live in mqchat_harness.py.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import mqchat_harness as H


def _plugin_path():
    p = os.environ.get("MQCHAT_PLUGIN")
    if not p:
        pytest.skip("MQCHAT_PLUGIN is not set (absolute path of the built mqchat.so)")
    if not os.path.isabs(p) or not os.path.isfile(p):
        pytest.fail(f"MQCHAT_PLUGIN={p!r} is not an absolute path of an existing file")
    return p


@pytest.fixture(scope="session")
def plugin_path():
    return _plugin_path()


@pytest.fixture
def durability():
    return "sync"


@pytest.fixture
def make_broker(request, plugin_path):
    root = Path(tempfile.mkdtemp(prefix="mqchat-it-"))
    brokers = []
    request.node._mqchat_brokers = brokers

    def make(opts=None, start=True, extra_conf=(), port=None, name=None):
        d = root / (name or f"b{len(brokers)}")
        b = H.Broker(d, plugin_path, opts=opts, port=port, extra_conf=extra_conf)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    problems = []
    for b in brokers:
        b.stop()
        for p in b.problems:
            problems.append(f"[{b.dir.name} port {b.port}] {p}")
        for line in b.sanitizer_reports():
            problems.append(f"[{b.dir.name} port {b.port}] sanitizer: {line}")
    tails = "\n".join(b.log_tail(80) for b in brokers) if problems else ""
    if os.environ.get("MQCHAT_IT_KEEP") == "1":
        print(f"broker dirs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("broker problems:\n  " + "\n  ".join(problems) + "\n" + tails,
                    pytrace=False)


@pytest.fixture
def broker(make_broker, durability):
    return make_broker(opts={"durability": durability})


@pytest.fixture
def connect(request, make_broker):
    devices = []

    def conn(user, device="phone", broker=None, **kw):
        b = broker if broker is not None else request.getfixturevalue("broker")
        d = H.Device(b, user, device, **kw)
        devices.append(d)
        return d

    conn.devices = devices
    yield conn

    H.close_all(devices)
    bad = [(d, x) for d in devices for x in d.bad]
    if bad:
        pytest.fail("payloads from the server that did not parse:\n  " +
                    "\n  ".join(f"{d}: {x[0]} {x[1][:64]!r} {x[2]}" for d, x in bad),
                    pytrace=False)


@pytest.fixture
def redis(request):
    root = Path(tempfile.mkdtemp(prefix="mqchat-it-redis-"))
    r = H.Redis(root)
    request.node._mqchat_redis = [r]
    try:
        r.start()
    except BaseException:
        r.kill9()
        shutil.rmtree(root, ignore_errors=True)
        raise
    yield r
    r.stop()
    problems = list(r.problems)
    tail = r.log_tail(40) if problems else ""
    if os.environ.get("MQCHAT_IT_KEEP") == "1":
        print(f"redis dir kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("redis problems:\n  " + "\n  ".join(problems) + "\n" + tail,
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for b in getattr(item, "_mqchat_brokers", []):
            rep.sections.append((f"broker {b.dir.name} (port {b.port}, {b.status()})",
                                 b.log_tail(80)))
        for r in getattr(item, "_mqchat_redis", []):
            rep.sections.append((f"redis (port {r.port}, {r.status()})", r.log_tail(30)))
