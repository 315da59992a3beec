"""pytest fixtures for pushd's end-to-end tests (see pushd_harness.py).

  creds   throw-away CA / server cert / APNs key / FCM service account (session)
  fake    a fake_push.js (all roles) for the session; rules and records are
          reset before each test
  redis   a fresh redis-server per test
  make_pushd  factory: make_pushd(name="pushd", start=True, **config overrides);
          at teardown every pushd still running gets SIGTERM and must exit
          0, and every log is checked for sanitizer reports
Environment: PUSHD_BIN (the pushd binary, set by ctest), PUSHD_TEST_KEEP=1
keeps the temp dir."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import pushd_harness as H


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="pushd-test-"))
    yield d
    if os.environ.get("PUSHD_TEST_KEEP") != "1":
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"kept {d}")


@pytest.fixture(scope="session")
def creds(workdir):
    return H.Creds(workdir / "creds")


@pytest.fixture(scope="session")
def fake_session(creds, workdir):
    f = H.Fake(creds, workdir / "fake")
    yield f
    f.stop()


@pytest.fixture
def fake(fake_session):
    fake_session.reset()
    fake_session.behaviour([])
    return fake_session


@pytest.fixture
def redis(workdir, request):
    r = H.Redis(workdir / f"redis-{request.node.name}"[:200]).start()
    yield r
    r.stop()


@pytest.fixture
def make_pushd(workdir, redis, fake, request):
    procs = []

    def make(name="pushd", start=True, redis_=None, fake_=None, **conf):
        d = workdir / f"p-{request.node.name}"[:200]
        p = H.Pushd(d, redis_ or redis, fake_ or fake, name=name, **conf)
        procs.append(p)
        if start:
            p.start()
        return p

    yield make
    # Every pushd still running must stop cleanly on SIGTERM (exit 0; in a
    # sanitizer build that includes LeakSanitizer's check at exit).
    problems = []
    for p in procs:
        if p.alive():
            try:
                rc = p.stop()
            except Exception as e:  # noqa: BLE001 - report, then kill
                rc = repr(e)
            if rc != 0:
                problems.append(f"{p.name}: exit status {rc} after SIGTERM\n{p.log()[-3000:]}")
        p.kill9()
        problems += [f"{p.name}: {ln}" for ln in p.sanitizer_reports()]
    assert not problems, "\n".join(problems)
