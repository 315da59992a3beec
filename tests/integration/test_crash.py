"""kill -9 of the broker during a send loop: no ACKed message is lost, none is
duplicated, seqs stay contiguous; retries after the restart are deduplicated."""

import os
import random
import threading
import time

import pytest

import mqchat_harness as H

AB = H.dm("alice", "bob")
WINDOW = 64          # in-flight sends
MAX_SENDS = 4000     # below rate_burst, so no RATE_LIMITED
MAX_LOOP_S = 8.0


def body_of(cmid):
    return f"payload of {cmid}".encode()


@pytest.mark.parametrize("durability", ["sync", "os"])
def test_kill9_during_send_loop(broker, connect, durability):
    seed = int(os.environ.get("MQCHAT_IT_SEED", str(time.time_ns() % 1_000_000)))
    rnd = random.Random(seed)
    print(f"seed {seed} (MQCHAT_IT_SEED to repeat)")

    alice = connect("alice", "phone")
    bob_live = connect("bob", "phone")
    # warm up: the path works before the crash
    assert alice.send_ok(AB, b"warm-up", client_msg_id="warm").seq == 1

    delay = rnd.uniform(0.3, 1.5)
    killer = threading.Timer(delay, broker.kill9)
    sent = []
    t_end = time.monotonic() + MAX_LOOP_S
    killer.start()
    try:
        i = 0
        while alice.connected and i < MAX_SENDS and time.monotonic() < t_end:
            with alice.cv:
                alice.cv.wait_for(lambda: len(sent) - len(alice.acks) < WINDOW
                                  or not alice.connected, 1.0)
            if not alice.connected:
                break
            if len(sent) - len(alice.acks) >= WINDOW:
                continue
            cmid = f"m{i:05d}"
            try:
                alice.send_nowait(AB, body_of(cmid), client_msg_id=cmid)
            except AssertionError:
                break  # the connection went away between the check and the publish
            sent.append(cmid)
            i += 1
        if alice.connected:
            # the loop ran out of sends before the kill: wait for it
            killer.join(H.WAIT)
    finally:
        killer.cancel()
        killer.join(H.WAIT)
    alice.close()
    bob_live.close()
    assert not broker.alive(), "the broker should have been killed"

    acks = list(alice.acks)
    refused = [a for a in acks if a.HasField("error")]
    assert not refused, f"refused sends: {[H.describe(a) for a in refused[:5]]}"
    acked = {a.client_msg_id: a for a in acks}
    assert len(acked) == len(acks), "an ACK arrived twice"
    assert set(acked) <= set(sent)
    print(f"kill after {delay:.2f} s: {len(sent)} sent, {len(acked)} ACKed")
    assert len(acked) > 0, "no ACK before the kill: the test proved nothing"

    broker.start()  # same store dir and port
    fresh = connect("bob", "fresh")
    msgs, _ = fresh.sync_all(limit=500)
    conv_msgs = [m for m in msgs if m.conversation_id == AB]
    seqs = [m.seq for m in conv_msgs]
    assert seqs == list(range(1, len(seqs) + 1)), "seqs not contiguous from 1 / not in order"
    assert [m.inbox_seq for m in msgs] == list(range(1, len(msgs) + 1)), \
        "bob's inbox seqs not contiguous"
    by_cmid = {}
    for m in conv_msgs:
        assert m.client_msg_id not in by_cmid, f"{m.client_msg_id} stored twice"
        by_cmid[m.client_msg_id] = m
    lost = [c for c in acked if c not in by_cmid]
    assert not lost, f"{len(lost)} ACKed messages lost, e.g. {lost[:5]}"
    for c, a in acked.items():
        m = by_cmid[c]
        assert m.seq == a.seq, f"{c}: ACK said seq {a.seq}, the store has {m.seq}"
        assert m.body == body_of(c) and m.sender_user_id == "alice"
        assert m.server_time_ms == a.server_time_ms
    stored_unacked = [c for c in sent if c in by_cmid and c not in acked]
    print(f"{len(stored_unacked)} stored without an ACK before the kill")
    # sent order is seq order (one connection, in-order processing)
    order = [by_cmid[c].seq for c in sent if c in by_cmid]
    assert order == sorted(order), "per-sender order not preserved"
    head = len(seqs)

    # the sender retries everything it has no ACK for, with the same ids
    alice2 = connect("alice", "phone")
    retry = [c for c in sent if c not in acked]
    for k in range(0, len(retry), WINDOW):
        chunk = retry[k:k + WINDOW]
        for c in chunk:
            alice2.send_nowait(AB, body_of(c), client_msg_id=c)
        for c in chunk:
            a = alice2.take_ack(c)
            assert not a.HasField("error"), H.describe(a)
            if c in by_cmid:
                assert a.duplicate and a.seq == by_cmid[c].seq, \
                    f"{c}: stored as seq {by_cmid[c].seq}, retry got {H.describe(a)}"
            else:
                assert not a.duplicate and a.seq > head
    # a retry of an ACKed one is a duplicate too
    some = rnd.choice(sorted(acked))
    a = alice2.send_ok(AB, body_of(some), client_msg_id=some)
    assert a.duplicate and a.seq == acked[some].seq

    fresh2 = connect("bob", "fresh2")
    msgs, _ = fresh2.sync_all(limit=500)
    conv_msgs = [m for m in msgs if m.conversation_id == AB]
    assert [m.seq for m in conv_msgs] == list(range(1, len(conv_msgs) + 1))
    cmids = [m.client_msg_id for m in conv_msgs]
    assert len(cmids) == len(set(cmids)), "a retry created a duplicate"
    assert set(cmids) == set(sent) | {"warm"}, "every sent message is there exactly once"
