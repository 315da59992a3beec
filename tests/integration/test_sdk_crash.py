"""The C SDK across broker crashes under traffic: two SDK clients (the
scripted driver, clients/c-sdk/tests/sdk_driver.c, as test_sdk.py runs it)
exchange hundreds of messages in both directions while the broker is
killed with SIGKILL and restarted on the same store, twice.

What must hold (the SDK's promise, clients/c-sdk/README.md "Guarantees":
"Disconnects and broker restarts never cause a repeat or a loss"):
  - every message reaches the receiving app exactly once and in seq order,
    and seq order is the order the sender made them in;
  - every send is acknowledged exactly once (one SENT event per client
    message id, none refused) and the outbox ends empty;
  - the server stored each message once (history).

test_sdk.py covers a broker kill with no traffic in flight
(test_outbox_survives_app_kill_with_broker_down) and kills of the app; this
file adds the broker dying mid-stream. Every wait is bounded; the driver
processes and the broker are cleaned up by the fixtures."""

import os
import signal
import time

import pytest

import mqchat_harness as H
from test_sdk import DRIVER, sdk  # noqa: F401 (sdk is a fixture)

WAIT = H.WAIT
N = 300  # messages per direction

pytestmark = pytest.mark.skipif(not DRIVER, reason="MQCHAT_SDK_DRIVER is not set")


def queued_cmids(d):
    return [e["cmid"] for e in d.of("queued")]


def check_direction(sender, receiver, conv, prefix):
    """Exactly once and in order at the receiver, one ack per send."""
    want = [f"{prefix}{i}" for i in range(N)]
    cmids = queued_cmids(sender)
    assert len(cmids) == N and len(set(cmids)) == N, "every send queued with its own id"
    sender.wait(lambda evs: len({e["cmid"] for e in evs if e["ev"] == "sent"}) >= N,
                f"{N} sent", timeout=WAIT * 3)
    got = receiver.wait_messages(N, conv, timeout=WAIT * 3)
    time.sleep(0.5)  # a late duplicate would show up here
    got = receiver.messages(conv)
    bodies = [m["body"] for m in got]
    dups = sorted({b for b in bodies if bodies.count(b) > 1})
    assert not dups, f"{prefix}: handed more than once: {dups[:10]}"
    missing = sorted(set(want) - set(bodies))
    assert not missing, f"{prefix}: lost: {missing[:10]}"
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(set(seqs)), f"{prefix}: not handed in seq order: {seqs}"
    # One device's sends are stored in the order they were made, also across
    # the outage (README "Guarantees"): every session starts on a new paho
    # client, so a send made as the broker died cannot wait in paho's queue
    # and overtake the older ones the outbox resends.
    if bodies != want:
        i = next(i for i, (b, w) in enumerate(zip(bodies, want)) if b != w)
        pytest.fail(f"{prefix}: the server's order differs from the send order at "
                    f"{i}: {bodies[max(0, i - 2):i + 3]}")
    assert [m["cmid"] for m in got] == cmids, "the receiver sees the sender's ids, in order"

    sent = sender.of("sent")
    acked = [e["cmid"] for e in sent if e["conv"] == conv]
    assert sorted(acked) == sorted(cmids), \
        f"{prefix}: not exactly one SENT per send: {len(acked)} SENT for {len(cmids)} sends"
    failed = sender.of("send_failed")
    assert not failed, f"{prefix}: refused sends: {failed[:5]}"
    # the seq in SENT is the one the receiver got
    by_cmid = {m["cmid"]: m["seq"] for m in got}
    assert all(by_cmid[e["cmid"]] == e["seq"] for e in sent if e["conv"] == conv)
    assert sender.outbox() == 0


# The second case queues more than paho's default command-queue bound (100
# publishes): the SDK raises it (MQCHAT_PAHO_MAX_BUFFERED), else the resends
# beyond it and the SyncRequest behind them were dropped.
@pytest.mark.parametrize("offline", [20, 120], ids=["short-outage", "outbox-over-100"])
def test_broker_kill9_mid_exchange(broker, sdk, offline):  # noqa: F811
    alice = sdk(broker, "alice", v5=True)  # callback mode, MQTT 5
    bob = sdk(broker, "bob", poll=True)  # poll mode, MQTT 3.1.1
    alice.wait_up_to_date()
    bob.wait_up_to_date()
    conv = "d:alice:bob"
    online = (N - 2 * offline) // 3
    assert online > 0
    sent = {"a": 0, "b": 0}

    def burst(n):
        """n sends from each side, alternating, without waiting for acks."""
        for _ in range(n):
            for d, p in ((alice, "a"), (bob, "b")):
                d.send(conv, f"{p}{sent[p]}")
                sent[p] += 1

    for phase in range(3):
        burst(online if phase < 2 else N - sent["a"])
        if phase < 2:
            broker.kill9()  # with sends in flight and acks on the way
            burst(offline)  # into the outboxes
            broker.start()
            # back and synced before the next burst: the outbox at the
            # reconnect is what was in flight plus `offline`
            alice.wait_up_to_date(phase + 2)
            bob.wait_up_to_date(phase + 2)
    assert sent == {"a": N, "b": N}

    check_direction(alice, bob, conv, "a")
    check_direction(bob, alice, conv, "b")

    # Each side saw the broker go away and come back.
    for d in (alice, bob):
        states = [e["state"] for e in d.of("connection")]
        assert states.count("disconnected") >= 1, f"{d.user}: {states}"
        assert states[-1] in ("connected", "up_to_date"), f"{d.user}: {states}"

    # Stored once on the server: history holds 2 N messages, seqs 1..2N.
    # (pages of 200, the server's cap, newest first)
    seqs, before = [], 0
    for page in range(2 * N // 200 + 2):
        n_resp = len(alice.of("response"))
        alice.cmd(f"history {conv} {before} 200")
        r = alice.wait(lambda evs: [e for e in evs if e["ev"] == "response"][n_resp:],
                       "history")[0]
        assert r["ok"] == 1, r
        seqs += [m["seq"] for m in r["messages"]]
        if len(r["messages"]) < 200 or min(seqs) <= 1:
            break
        before = min(seqs)
    seqs.sort()
    assert seqs == list(range(1, 2 * N + 1)), f"stored more or less than once: {len(seqs)}"

    # Restarting the apps hands nothing again.
    for d in (alice, bob):
        d.close()
        d.start()
        d.wait_up_to_date()
    time.sleep(0.3)
    assert alice.messages() == [] and bob.messages() == []


def test_send_order_when_the_broker_dies_with_sends_unwritten(make_broker, sdk):  # noqa: F811
    """The broker stops reading (SIGSTOP) while the app sends 9 MB: the
    socket buffers fill, and the later sends are still in paho's command
    queue, unwritten, when the broker is killed. After the restart every
    send must be stored in the order it was made. (paho sends what it had
    queued first on its next connection, ahead of the outbox resend of the
    older sends: the SDK starts every session on a new paho client.)"""
    broker = make_broker(opts={"max_body": "65536"})
    alice = sdk(broker, "alice")
    alice.wait_up_to_date()
    conv = "d:alice:bob"
    filler = "x" * 60000
    k = 150  # 150 x 60 kB: more than loopback's socket buffers hold
    alice.send(conv, "first")
    alice.wait(lambda evs: [e for e in evs if e["ev"] == "sent"], "first sent")
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        for i in range(k):
            alice.send(conv, f"{i:04d}{filler}")
        alice.wait(lambda evs: len([e for e in evs if e["ev"] == "queued"]) >= k + 1,
                   f"{k} more queued")
        time.sleep(0.5)  # paho writes what fits
    finally:
        broker.kill9()  # a stopped process dies on SIGKILL too
    broker.start()
    cmids = queued_cmids(alice)
    alice.wait(lambda evs: len({e["cmid"] for e in evs if e["ev"] == "sent"}) >= k + 1,
               f"{k + 1} sent", timeout=WAIT * 3)
    seq = {e["cmid"]: e["seq"] for e in alice.of("sent")}
    seqs = [seq[c] for c in cmids]
    assert seqs == sorted(seqs), f"stored out of send order: {seqs}"
    assert seqs == list(range(1, k + 2)), f"not each once: {seqs}"
    assert not alice.of("send_failed")
