"""The server's store restored from a backup underneath a running C SDK
client (the scripted driver, as test_sdk.py runs it).

docs/PROTOCOL.md, "Receiving and syncing": `SyncResponse.inbox_head` below
the device's cursor means the store was restored from a backup; what the
device has after `inbox_head` is no longer on the server; it sets its
cursor to `inbox_head` and goes on, and new messages get inbox seqs from
there. docs/OPERATIONS.md, "Backups": messages written after the checkpoint
are gone with it. The SDK implements the rule in clients/c-sdk/src/deliver.c
(on_sync).

The scenario (restored()): bob's SDK client receives N messages from alice
in d:alice:bob; an operator takes a `backup` ($CONTROL); bob receives M
more (his cursor, on the device and on the server, passes the backup's
inbox head); the broker stops and a fresh one starts on a copy of the
checkpoint on the same port, so the SDK reconnects by itself. After the
restore's sync, K new messages (K > M) reach bob; they reuse the inbox
seqs N+1.. of the M lost ones.

What bob must see, from the rule:
  - after the reconnect, the SDK's committed cursor is the restored inbox
    head N, and the server's cursor for the device is N too (no CursorAck
    above the head, which the server would refuse);
  - every one of the K new messages is handed to the app (MESSAGE), once,
    in order, with inbox seqs N+1..N+K, none dropped as a duplicate of what
    the device had before the restore; the cursor then moves on (CursorAck
    N+K accepted);
  - the M lost messages are not handed again and nothing retracts them: the
    app keeps the copies it was given (PROTOCOL.md: "no longer on the
    server"; the device is not told which ones), and the restored server's
    history no longer has them.

test_new_messages_in_another_conversation: the K new ones come from carol
in d:bob:carol (fresh conversation seqs), which isolates the inbox-cursor
rule. test_new_messages_reuse_the_lost_seqs: they come from alice in
d:alice:bob, so they also reuse the conversation seqs N+1..N+M of the lost
ones: the SDK sets the handed seqs of inbox conversations back to 0 when
it sees the restore, so inbox_seq alone decides what is new.

Every wait is bounded (H.WAIT); brokers and drivers are cleaned up by the
fixtures."""

import functools
import shutil
import sqlite3
import time

import pytest

import mqchat_harness as H
from mqchat_harness import pb
from test_control import control_broker, ok
from test_sdk import DRIVER, sdk  # noqa: F401 (sdk is a fixture)

pytestmark = pytest.mark.skipif(not DRIVER, reason="MQCHAT_SDK_DRIVER is not set")

DM = H.dm("alice", "bob")
N, M, K = 5, 3, 5  # before the backup, after it (lost), after the restore (K > M on purpose)


def server_cursor(broker, user, device):
    devs = {d["device"]: d for d in ok(broker, "listDevices", user=user)["devices"]}
    return devs[device]["cursor"] if device in devs else None


def wait_server_cursor(broker, user, device, want):
    H.wait_until(lambda: server_cursor(broker, user, device) == want,
                 what=f"{user}:{device}'s cursor {want} on the server")


def state_cursor(drv):
    """The SDK's committed inbox cursor, read from its state file."""
    path = drv.state_dir / f"{drv.user}.{drv.device}.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=H.WAIT)
    try:
        return db.execute("SELECT v FROM meta WHERE k = 'cursor'").fetchone()[0]
    finally:
        db.close()


def send_all(dev, conv, prefix, n):
    """dev sends prefix0..prefix<n-1> one by one (each acknowledged): the acks."""
    return [dev.send_ok(conv, f"{prefix}{i}", client_msg_id=f"{prefix}{i}") for i in range(n)]


def since(drv, mark, kind):
    """drv's events of that kind from index mark on."""
    with drv.cv:
        return [e for e in drv.events[mark:] if e["ev"] == kind]


def restored(make_broker, connect, sdk):
    """Runs the scenario up to the restore's sync: (the restored broker, bob's
    driver, the index of bob's first event after the old broker stopped)."""
    b = control_broker(make_broker, start=False)
    b.opts["backup_dir"] = str(b.dir / "backups")
    b.start()
    bob = sdk(b, "bob")
    bob.wait_up_to_date()
    alice = connect("alice", broker=b)

    # N messages, all handed and acked by bob's SDK, then the backup
    acks = send_all(alice, DM, "before", N)
    assert [a.seq for a in acks] == list(range(1, N + 1))
    got = bob.wait_messages(N, DM)
    assert [m["body"] for m in got] == [f"before{i}" for i in range(N)]
    wait_server_cursor(b, "bob", "phone", N)
    backup = ok(b, "backup", name="under-sdk")
    assert backup["path"] == str(b.dir / "backups" / "under-sdk")

    # M more after the backup: bob's cursor passes the backup's inbox head
    acks = send_all(alice, DM, "lost", M)
    assert [a.seq for a in acks] == list(range(N + 1, N + M + 1))
    got = bob.wait_messages(N + M, DM)
    assert [m["body"] for m in got[N:]] == [f"lost{i}" for i in range(M)]
    assert [m["inbox_seq"] for m in got] == list(range(1, N + M + 1))
    wait_server_cursor(b, "bob", "phone", N + M)
    assert state_cursor(bob) == N + M
    alice.close()

    # restore: the broker stops, a fresh one on a copy of the checkpoint, same port
    mark = len(bob.events)
    b.stop()
    bob.wait(lambda evs: any(e["ev"] == "connection" and e["state"] == "disconnected"
                             for e in evs[mark:]), "disconnected")
    r = control_broker(functools.partial(make_broker, port=b.port), start=False)
    shutil.copytree(backup["path"], r.store_dir)
    r.start()
    assert server_cursor(r, "bob", "phone") == N, "the checkpoint holds bob's cursor at N"

    # the SDK reconnects by itself and syncs: inbox_head N < its cursor N+M
    bob.wait(lambda evs: any(e["ev"] == "connection" and e["state"] == "up_to_date"
                             for e in evs[mark:]), "up_to_date after the restore")
    assert since(bob, mark, "message") == [], "nothing on the restored server is new to bob"
    # (committed right after the sync page that brought UP_TO_DATE)
    H.wait_until(lambda: state_cursor(bob) == N,
                 what="the SDK's committed cursor lowered to the restored inbox head")
    assert server_cursor(r, "bob", "phone") == N
    return r, bob, mark


def wait_new(bob, mark, last_body):
    """Bounded wait for the last new message, then a moment for late or
    repeated ones: the MESSAGE events since mark. The last one is above every
    seq bob had, so it arrives even if others were dropped, and the caller's
    assertion, not a timeout, says what went wrong."""
    bob.wait(lambda evs: any(e["ev"] == "message" and e["body"] == last_body
                             for e in evs[mark:]), last_body)
    time.sleep(0.3)
    return since(bob, mark, "message")


def check_lost_not_back(bob, reader, after):
    """The lost messages: gone from the restored server's history (where the
    seqs after N hold `after`, the new messages of d:alice:bob), not handed
    again, not retracted (bob's app keeps the copies it got before)."""
    allm = bob.messages(DM)
    assert [m["body"] for m in allm] == \
        [f"before{i}" for i in range(N)] + [f"lost{i}" for i in range(M)] + after
    hist = reader.request_ok(history=pb.HistoryRequest(conversation_id=DM, limit=200))
    want = [(i + 1, f"before{i}") for i in range(N)] + \
        [(N + 1 + i, body) for i, body in enumerate(after)]
    assert sorted((m.seq, m.body.decode()) for m in hist.history.messages) == want


def test_new_messages_in_another_conversation(make_broker, connect, sdk):
    r, bob, mark = restored(make_broker, connect, sdk)
    carol = connect("carol", broker=r)
    conv = H.dm("bob", "carol")
    # the first one alone: the SDK acks the cursor from the restored head on
    acks = send_all(carol, conv, "new", 1)
    wait_new(bob, mark, "new0")
    wait_server_cursor(r, "bob", "phone", N + 1)
    acks += [carol.send_ok(conv, f"new{i}", client_msg_id=f"new{i}") for i in range(1, K)]
    assert [a.seq for a in acks] == list(range(1, K + 1))
    new = wait_new(bob, mark, f"new{K - 1}")
    assert [(m["conv"], m["seq"], m["inbox_seq"], m["body"]) for m in new] == \
        [(conv, 1 + i, N + 1 + i, f"new{i}") for i in range(K)], \
        "every new message handed, once, in order, from the restored inbox head on"
    wait_server_cursor(r, "bob", "phone", N + K)
    assert state_cursor(bob) == N + K
    check_lost_not_back(bob, connect("alice", "tablet", broker=r), [])


def test_new_messages_reuse_the_lost_seqs(make_broker, connect, sdk):
    r, bob, mark = restored(make_broker, connect, sdk)
    alice = connect("alice", "tablet", broker=r)
    # the first one alone: the SDK takes it as the next inbox arrival (its
    # cursor moves to N+1 and is acked: the server counts it delivered)...
    acks = send_all(alice, DM, "new", 1)
    wait_server_cursor(r, "bob", "phone", N + 1)
    acks += [alice.send_ok(DM, f"new{i}", client_msg_id=f"new{i}") for i in range(1, K)]
    assert [a.seq for a in acks] == list(range(N + 1, N + K + 1)), "seqs continue from the head"
    new = wait_new(bob, mark, f"new{K - 1}")
    wait_server_cursor(r, "bob", "phone", N + K)
    # ...so each must have been handed: once, in order, from the restored head on
    got = [(m["seq"], m["inbox_seq"], m["body"]) for m in new]
    want = [(N + 1 + i, N + 1 + i, f"new{i}") for i in range(K)]
    assert got == want, "every new message handed, once, in order (the lost seqs reused)"
    assert state_cursor(bob) == N + K
    # the app now holds two messages for each of seqs N+1..N+M: lost and new
    check_lost_not_back(bob, alice, [f"new{i}" for i in range(K)])
