"""The server's store restored from a backup underneath a C SDK client (the
scripted driver, as test_sdk.py runs it).

docs/PROTOCOL.md, "A restored server", and docs/OPERATIONS.md, "Backups":
a checkpoint taken by the `backup` command carries a marker; the store that
opens it raises its inbox floor (offline-queue/src/restore.c), so new inbox
entries get seqs at or above the floor, above any cursor a device of the
old store holds, and SyncResponse.restore_floor tells devices. A copy
without the marker falls back on the older rule: an inbox_head below the
device's cursor, and the device lowers its cursor to it. Either way the
conversations' seqs restart from their restored heads, and the SDK sets the
handed seqs of its inbox conversations back to 0 (inbox_seq alone decides
what is new).

The scenario (restored()): bob's SDK client receives N messages from alice
in d:alice:bob; an operator takes a `backup` ($CONTROL); bob receives M
more (his cursor, on the device and on the server, passes the backup's);
the broker stops and a fresh one starts on a copy of the checkpoint on the
same port. Then K new messages (K > M) reach bob, in another conversation
or in d:alice:bob (reusing the seqs N+1..N+M of the lost ones); bob is
online through the restore (the SDK reconnects by itself) or offline until
after the new messages were sent.

What bob must see: every one of the K new messages handed to the app,
once, in order; the M lost ones not handed again and not retracted (the
app keeps its copies; the restored history has only what the checkpoint
held).

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


def state_meta(drv, k):
    """A value of the SDK's meta table, read from its state file (None: no row)."""
    path = drv.state_dir / f"{drv.user}.{drv.device}.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=H.WAIT)
    try:
        row = db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return row[0] if row else None
    finally:
        db.close()


def state_cursor(drv):
    """The SDK's committed inbox cursor."""
    return state_meta(drv, "cursor")


def send_all(dev, conv, prefix, n):
    """dev sends prefix0..prefix<n-1> one by one (each acknowledged): the acks."""
    return [dev.send_ok(conv, f"{prefix}{i}", client_msg_id=f"{prefix}{i}") for i in range(n)]


def since(drv, mark, kind):
    """drv's events of that kind from index mark on."""
    with drv.cv:
        return [e for e in drv.events[mark:] if e["ev"] == kind]


def restored(make_broker, connect, sdk, marked=True, online=True):
    """Runs the scenario up to the restore: (the restored broker, bob's driver,
    the index of bob's first event after the old broker stopped, the inbox
    seq before the first new entry). marked: the checkpoint keeps its marker
    (else it is removed: a copy made another way). online: bob's driver
    stays up through the restore (else it is stopped before, and the caller
    starts it again)."""
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
    if not online:
        bob.close()
    mark = len(bob.events)
    b.stop()
    if online:
        bob.wait(lambda evs: any(e["ev"] == "connection" and e["state"] == "disconnected"
                                 for e in evs[mark:]), "disconnected")
    r = control_broker(functools.partial(make_broker, port=b.port), start=False)
    shutil.copytree(backup["path"], r.store_dir)
    marker = r.store_dir / "MQSTORE-RESTORE"
    assert marker.exists(), "the backup command marks its checkpoints"
    if not marked:
        marker.unlink()
    r.start()
    assert not marker.exists()
    assert server_cursor(r, "bob", "phone") == N, "the checkpoint holds bob's cursor at N"
    # the floor, as any device sees it (restore.c: >= 2^40, >= the clock's ms x 1024)
    floor = connect("zed", broker=r).sync_page().restore_floor
    assert (floor >= 1 << 40) if marked else floor == 0, floor
    base = floor - 1 if marked else N
    if not online:
        return r, bob, mark, base

    # the SDK reconnects by itself and syncs
    bob.wait(lambda evs: any(e["ev"] == "connection" and e["state"] == "up_to_date"
                             for e in evs[mark:]), "up_to_date after the restore")
    assert since(bob, mark, "message") == [], "nothing on the restored server is new to bob"
    if marked:
        # the floor is above bob's cursor: it stays (and is acked: it is below the head)
        H.wait_until(lambda: state_meta(bob, "restore_floor") == floor,
                     what="the SDK's record of the restore floor")
        assert state_cursor(bob) == N + M
        wait_server_cursor(r, "bob", "phone", N + M)
    else:
        # inbox_head N < its cursor N+M: the SDK lowers it (committed right
        # after the sync page that brought UP_TO_DATE)
        H.wait_until(lambda: state_cursor(bob) == N,
                     what="the SDK's committed cursor lowered to the restored inbox head")
        assert server_cursor(r, "bob", "phone") == N
    return r, bob, mark, base


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


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
def test_new_messages_in_another_conversation(make_broker, connect, sdk, marked):
    r, bob, mark, base = restored(make_broker, connect, sdk, marked)
    carol = connect("carol", broker=r)
    conv = H.dm("bob", "carol")
    # the first one alone: the SDK acks the cursor from there on
    acks = send_all(carol, conv, "new", 1)
    wait_new(bob, mark, "new0")
    wait_server_cursor(r, "bob", "phone", base + 1)
    acks += [carol.send_ok(conv, f"new{i}", client_msg_id=f"new{i}") for i in range(1, K)]
    assert [a.seq for a in acks] == list(range(1, K + 1))
    new = wait_new(bob, mark, f"new{K - 1}")
    assert [(m["conv"], m["seq"], m["inbox_seq"], m["body"]) for m in new] == \
        [(conv, 1 + i, base + 1 + i, f"new{i}") for i in range(K)], \
        "every new message handed, once, in order"
    wait_server_cursor(r, "bob", "phone", base + K)
    assert state_cursor(bob) == base + K
    check_lost_not_back(bob, connect("alice", "tablet", broker=r), [])


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
def test_new_messages_reuse_the_lost_seqs(make_broker, connect, sdk, marked):
    r, bob, mark, base = restored(make_broker, connect, sdk, marked)
    alice = connect("alice", "tablet", broker=r)
    acks = send_all(alice, DM, "new", 1)
    wait_server_cursor(r, "bob", "phone", base + 1)
    acks += [alice.send_ok(DM, f"new{i}", client_msg_id=f"new{i}") for i in range(1, K)]
    assert [a.seq for a in acks] == list(range(N + 1, N + K + 1)), "seqs continue from the head"
    new = wait_new(bob, mark, f"new{K - 1}")
    wait_server_cursor(r, "bob", "phone", base + K)
    # each handed: once, in order, though their seqs are the lost ones'
    got = [(m["seq"], m["inbox_seq"], m["body"]) for m in new]
    want = [(N + 1 + i, base + 1 + i, f"new{i}") for i in range(K)]
    assert got == want, "every new message handed, once, in order (the lost seqs reused)"
    assert state_cursor(bob) == base + K
    # the app now holds two messages for each of seqs N+1..N+M: lost and new
    check_lost_not_back(bob, alice, [f"new{i}" for i in range(K)])


def test_device_offline_through_the_restore(make_broker, connect, sdk):
    """bob is offline from before the restore until after K new messages: his
    cursor N+M is above the restored head N, and the old rule (lower the
    cursor to inbox_head at the first sync) skipped min(K, M) of them. With
    the floor they are all above his cursor."""
    r, bob, _, base = restored(make_broker, connect, sdk, online=False)
    alice = connect("alice", "tablet", broker=r)
    acks = send_all(alice, DM, "new", K)
    assert [a.seq for a in acks] == list(range(N + 1, N + K + 1))
    bob.start()  # the same state file: cursor N+M, handed N+M in d:alice:bob
    new = wait_new(bob, 0, f"new{K - 1}")
    assert [(m["seq"], m["inbox_seq"], m["body"]) for m in new] == \
        [(N + 1 + i, base + 1 + i, f"new{i}") for i in range(K)]
    assert state_meta(bob, "restore_floor") == base + 1
    wait_server_cursor(r, "bob", "phone", base + K)
