"""Push end to end: a real broker with the plugin, real Redis, a real pushd
and the fake APNs (tests/fakes/, HTTP/2 over TLS) — what a phone would get.

The pieces are tested alone elsewhere (test_push.py: the broker's jobs;
tests/pushd/: pushd against jobs it is handed); here they run together:
an offline device's message reaches the fake APNs once, with the right
headers and no plaintext; an online device gets none; a token APNs calls
Unregistered (410) is gone from the broker's store; a broker killed right
after the ACK still gets the push out after its restart."""
import os
import sys
import time
from pathlib import Path

import pytest

import mqchat_harness as H
from mqchat_harness import pb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pushd"))
import pushd_harness as P  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
if not os.environ.get("PUSHD_BIN"):
    os.environ["PUSHD_BIN"] = str(REPO / "build" / "pushd" / "pushd")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = tmp_path_factory.mktemp("push-e2e")
    f = P.Fake(P.Creds(d / "creds"), d / "fake")
    yield f
    f.stop()


@pytest.fixture
def stack(fake, redis, make_broker, tmp_path):
    fake.reset()
    b = make_broker(opts={"redis": redis.address, "durability": "sync"})
    pd = P.Pushd(tmp_path / "pushd", redis, fake, name="e2e")
    pd.start()
    yield b, pd
    pd.stop()
    assert not pd.sanitizer_reports(), pd.log()


def register(dev, token):
    r = dev.request(push_register=pb.PushTokenRegister(platform=pb.PUSH_PLATFORM_APNS,
                                                       token=token, app_id=P.TOPIC))
    assert r.WhichOneof("body") == "ok", H.describe(r)


def apns_requests(fake, token):
    return [r for r in fake.requests("apns") if token in r.get("path", "")]


def test_offline_device_gets_one_push_online_none(stack, fake, connect):
    b, _ = stack
    off_tok, on_tok = P.apns_token(1), P.apns_token(2)
    bob = connect("bob", "phone", broker=b)
    register(bob, off_tok)
    bob.close()
    carol = connect("carol", "phone", broker=b)
    register(carol, on_tok)  # carol stays connected
    alice = connect("alice", "phone", broker=b)
    ack = alice.send(H.dm("alice", "bob"), b"secret text", content_type="text/plain")
    alice.send(H.dm("alice", "carol"), b"hello carol", content_type="text/plain")
    H.wait_until(lambda: len(apns_requests(fake, off_tok)) >= 1, timeout=10,
                 what="bob's push at the fake APNs")
    time.sleep(1.0)  # a second push, or one to carol, would be here by now
    got = apns_requests(fake, off_tok)
    assert len(got) == 1, got
    req = got[0]
    h = req["headers"]
    assert h["apns-topic"] == P.TOPIC
    assert h["apns-push-type"] == "alert"
    assert h["apns-collapse-id"] == H.dm("alice", "bob")
    assert h.get("apns-priority") == "10"
    assert req["status"] == 200
    assert "secret text" not in str(req.get("body")), req
    assert req["body"]["conv"] == H.dm("alice", "bob")
    assert str(req["body"]["seq"]) == str(ack.seq)
    assert apns_requests(fake, on_tok) == []


def test_unregistered_token_is_removed_from_the_store(stack, fake, redis, connect):
    b, _ = stack
    tok = P.apns_token(3)
    fake.behaviour([{"role": "apns", "token": tok, "status": 410}])
    bob = connect("bob", "tablet", broker=b)
    register(bob, tok)
    bob.close()
    alice = connect("alice", "phone", broker=b)
    alice.send(H.dm("alice", "bob"), b"one")
    H.wait_until(lambda: len(apns_requests(fake, tok)) == 1, timeout=10, what="the 410")
    # pushd reports it; the broker's drain reads feedback every 5 s and
    # deletes the token: then a message writes no job for that device.
    H.wait_until(lambda: redis.cmd("XLEN", "mqchat:push:feedback") >= 1, timeout=10,
                 what="pushd's feedback entry")
    # Probe until a message to bob makes no APNs request: each probe made
    # before the token was deleted gets another 410.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        n = len(apns_requests(fake, tok))
        alice.send(H.dm("alice", "bob"), b"probe")
        time.sleep(2.0)
        if len(apns_requests(fake, tok)) == n:
            return
    pytest.fail(f"the token still gets pushes: {len(apns_requests(fake, tok))} requests")


def test_broker_kill9_after_ack_push_still_goes_out(stack, fake, connect):
    b, _ = stack
    tok = P.apns_token(4)
    bob = connect("bob", "phone", broker=b)
    register(bob, tok)
    bob.close()
    alice = connect("alice", "phone", broker=b)
    alice.send(H.dm("alice", "bob"), b"before the crash")
    b.kill9()  # right after the durable ACK: the job is in the store's outbox
    b.start()
    H.wait_until(lambda: len(apns_requests(fake, tok)) >= 1, timeout=15,
                 what="the push after the broker's restart")
