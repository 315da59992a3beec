"""1:1 messaging: live delivery, offline sync, several devices, dedup,
history, receipts, typing."""

import socket
import time

import pytest

import mqchat_harness as H
from mqchat_harness import pb

AB = H.dm("alice", "bob")
USER = pb.MESSAGE_KIND_USER
DELIVERED = pb.RECEIPT_TYPE_DELIVERED
READ = pb.RECEIPT_TYPE_READ


def quiet(seconds=0.4):
    time.sleep(seconds)


@pytest.mark.parametrize("durability", ["sync", "os"])
def test_one_to_one_online(broker, connect, durability):
    alice = connect("alice")
    bob = connect("bob")
    t0 = int(time.time() * 1000)
    ack = alice.send_ok(AB, b"hello bob", content_type="text/plain")
    t1 = int(time.time() * 1000)
    assert ack.client_msg_id and ack.conversation_id == AB
    assert ack.seq == 1
    assert ack.inbox_seq == 1, "first entry in alice's own inbox"
    assert not ack.duplicate
    assert t0 - 5000 <= ack.server_time_ms <= t1 + 5000

    [m] = bob.wait_messages(1, AB)
    assert m.conversation_id == AB
    assert m.seq == 1
    assert m.kind == USER
    assert m.sender_user_id == "alice" and m.sender_device_id == "phone"
    assert m.client_msg_id == ack.client_msg_id
    assert m.server_time_ms == ack.server_time_ms
    assert m.body == b"hello bob" and m.content_type == "text/plain"
    assert m.inbox_seq == 1, "first entry in bob's inbox"

    # a second message: seq and inbox seqs advance by one
    ack2 = alice.send_ok(AB, b"second")
    assert (ack2.seq, ack2.inbox_seq) == (2, 2)
    msgs = bob.wait_messages(2, AB)
    assert [(x.seq, x.inbox_seq) for x in msgs] == [(1, 1), (2, 2)]

    # bob answers: same conversation, seq 3
    back = bob.send_ok(AB, b"hi alice")
    assert back.seq == 3 and back.inbox_seq == 3

    # alice's own inbox has her messages too (and bob's answer)
    mine, _ = alice.sync_all()
    assert [(x.seq, x.sender_user_id, x.body) for x in mine] == \
        [(1, "alice", b"hello bob"), (2, "alice", b"second"), (3, "bob", b"hi alice")]
    assert [x.inbox_seq for x in mine] == [1, 2, 3]
    assert mine[0].inbox_seq == ack.inbox_seq


def test_offline_then_sync(broker, connect):
    alice = connect("alice")
    acks = alice.send_many(AB, [f"msg {i}".encode() for i in range(30)])
    assert [a.seq for a in acks] == list(range(1, 31))

    bob = connect("bob")
    msgs, pages = bob.sync_all(after=0, limit=7)
    assert [m.seq for m in msgs] == list(range(1, 31)), "all 30, in order"
    assert [m.inbox_seq for m in msgs] == list(range(1, 31))
    assert [m.body for m in msgs] == [f"msg {i}".encode() for i in range(30)]
    assert all(m.sender_user_id == "alice" and m.conversation_id == AB for m in msgs)
    assert [len(p.messages) for p in pages] == [7, 7, 7, 7, 2]
    assert [p.more for p in pages] == [True, True, True, True, False]
    assert all(p.inbox_head == 30 for p in pages)
    assert bob.messages() == [], "bob was offline: nothing live"

    r = bob.request(cursor_ack=pb.CursorAck(inbox_seq=30))
    assert r.WhichOneof("body") == "ok", H.describe(r)
    page = bob.sync_page(after=30)
    assert list(page.messages) == [] and not page.more
    assert page.inbox_head == 30

    # cursor above the head
    r = bob.request(cursor_ack=pb.CursorAck(inbox_seq=31))
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)
    # default limit: one page holds all 30
    page = bob.sync_page(after=0)
    # entries may have been trimmed after the cursor ack of the only device;
    # whatever is returned must be ascending and within the range
    assert [m.inbox_seq for m in page.messages] == sorted(m.inbox_seq for m in page.messages)
    assert all(1 <= m.inbox_seq <= 30 for m in page.messages)


def test_sync_cap_and_more(broker, connect):
    alice = connect("alice")
    alice.send_many(AB, [b"x"] * 12)
    bob = connect("bob")
    page = bob.sync_page(after=0, limit=5)
    assert [m.inbox_seq for m in page.messages] == [1, 2, 3, 4, 5] and page.more
    page = bob.sync_page(after=10, limit=5)
    assert [m.inbox_seq for m in page.messages] == [11, 12] and not page.more
    page = bob.sync_page(after=12, limit=5)
    assert not page.messages and not page.more


def test_two_devices_per_user(broker, connect):
    alice_phone = connect("alice", "phone")
    alice_laptop = connect("alice", "laptop", v5=True)
    bob_phone = connect("bob", "phone")
    bob_tablet = connect("bob", "tablet", v5=True)
    ack = alice_phone.send_ok(AB, b"to both of bob's devices")
    for d in (bob_phone, bob_tablet):
        [m] = d.wait_messages(1, AB)
        assert (m.seq, m.body, m.sender_user_id) == (1, b"to both of bob's devices", "alice")
        assert m.inbox_seq == 1
    # alice's other device gets alice's own message, matching by client_msg_id
    [m] = alice_laptop.wait_messages(1, AB)
    assert m.sender_user_id == "alice" and m.sender_device_id == "phone"
    assert m.client_msg_id == ack.client_msg_id and m.seq == ack.seq
    assert m.inbox_seq == ack.inbox_seq
    # the ACK went to the sending device only, and the sending device gets
    # no echo of its own message (the ACK carries its inbox_seq)
    quiet(0.3)
    assert alice_laptop.acks == [] and bob_phone.acks == [] and bob_tablet.acks == []
    assert alice_phone.messages() == []

    # a reply from bob's tablet reaches bob's phone and both of alice's devices
    back = bob_tablet.send_ok(AB, b"reply")
    assert back.seq == 2
    for d in (bob_phone, alice_phone, alice_laptop):
        ev = d.wait_event(lambda e: e.WhichOneof("body") == "message" and e.message.seq == 2,
                          what="bob's reply (seq 2)")
        assert ev.message.sender_user_id == "bob"
        assert ev.message.sender_device_id == "tablet"
    # a third device connecting later catches up by sync
    alice_watch = connect("alice", "watch")
    msgs, _ = alice_watch.sync_all()
    assert [m.seq for m in msgs] == [1, 2]


def test_dedup_of_retried_send(broker, connect):
    alice = connect("alice")
    bob = connect("bob")
    first = alice.send_ok(AB, b"once", client_msg_id="retry-1")
    assert not first.duplicate
    again = alice.send_ok(AB, b"once", client_msg_id="retry-1")
    assert again.duplicate, "a retry must be flagged duplicate"
    assert (again.seq, again.inbox_seq, again.conversation_id) == \
        (first.seq, first.inbox_seq, first.conversation_id)
    assert again.server_time_ms == first.server_time_ms
    third = alice.send_ok(AB, b"once", client_msg_id="retry-1")
    assert third.duplicate and third.seq == first.seq

    nxt = alice.send_ok(AB, b"next")
    assert nxt.seq == first.seq + 1, "the retries stored nothing"
    bob.wait_messages(2, AB)
    quiet()
    got = bob.messages(AB)
    assert [m.seq for m in got] == [1, 2], "the recipient gets exactly one copy"
    msgs, _ = bob.sync_all()
    assert [(m.seq, m.client_msg_id) for m in msgs] == [(1, "retry-1"), (2, nxt.client_msg_id)]

    # the dedup key includes the device: alice's other device may reuse the id
    laptop = connect("alice", "laptop")
    other = laptop.send_ok(AB, b"other device", client_msg_id="retry-1")
    assert not other.duplicate and other.seq == 3


def test_history_paging_backwards(broker, connect):
    alice = connect("alice")
    acks = alice.send_many(AB, [f"h{i}".encode() for i in range(1, 26)])
    assert [a.seq for a in acks] == list(range(1, 26))
    bob = connect("bob")
    seen = []
    before = 0
    pages = []
    for _ in range(10):
        r = bob.request_ok(history=pb.HistoryRequest(conversation_id=AB, before_seq=before,
                                                     limit=10))
        h = r.history
        assert h.conversation_id == AB
        pages.append(([m.seq for m in h.messages], h.more))
        for m in h.messages:
            assert m.inbox_seq == 0, "history messages carry inbox_seq 0"
            assert m.body == f"h{m.seq}".encode()
        seen.extend(m.seq for m in h.messages)
        if not h.more:
            break
        before = h.messages[-1].seq
    assert pages == [(list(range(25, 15, -1)), True), (list(range(15, 5, -1)), True),
                     ([5, 4, 3, 2, 1], False)]
    assert seen == list(range(25, 0, -1))

    r = bob.request_ok(history=pb.HistoryRequest(conversation_id=AB))
    assert [m.seq for m in r.history.messages] == list(range(25, 0, -1))
    assert not r.history.more
    r = bob.request_ok(history=pb.HistoryRequest(conversation_id=AB, before_seq=1))
    assert list(r.history.messages) == [] and not r.history.more

    carol = connect("carol")
    r = carol.request(history=pb.HistoryRequest(conversation_id=AB))
    assert H.is_error(r, "NOT_MEMBER"), H.describe(r)


def test_receipts(broker, connect):
    alice = connect("alice")
    bob = connect("bob")
    alice.send_many(AB, [f"r{i}".encode() for i in range(5)])
    bob.wait_messages(5, AB)

    def next_receipt(start):
        alice.wait_event(lambda e: e.WhichOneof("body") == "receipt",
                         what="a ReceiptUpdate", start=start)
        for i in range(start, len(alice.events)):
            if alice.events[i].WhichOneof("body") == "receipt":
                return i, alice.events[i].receipt

    start = len(alice.events)
    bob.receipt(AB, DELIVERED, 2)
    i, r = next_receipt(start)
    assert (r.conversation_id, r.user_id) == (AB, "bob")
    assert (r.delivered_seq, r.read_seq) == (2, 0)
    assert r.server_time_ms > 0

    bob.receipt(AB, READ, 4)
    i, r = next_receipt(i + 1)
    assert (r.delivered_seq, r.read_seq) == (4, 4), "READ implies DELIVERED"

    # lower watermarks change nothing: the next update is the one for READ 5
    bob.receipt(AB, READ, 3)
    bob.receipt(AB, DELIVERED, 3)
    bob.receipt(AB, READ, 5)
    i, r = next_receipt(i + 1)
    assert (r.delivered_seq, r.read_seq) == (5, 5), "watermarks are monotonic"

    # above the head: INVALID_ARGUMENT on bob's resp topic
    bob.receipt(AB, READ, 6)
    resp = bob.take_any_response(what="the error answer to a receipt above the head")
    assert H.is_error(resp, "INVALID_ARGUMENT"), H.describe(resp)
    bob.receipt(AB, pb.RECEIPT_TYPE_UNSPECIFIED, 1)
    resp = bob.take_any_response(what="the error answer to a receipt without a type")
    assert H.is_error(resp, "INVALID_ARGUMENT"), H.describe(resp)
    # not a member
    carol = connect("carol")
    carol.receipt(AB, READ, 1)
    resp = carol.take_any_response(what="the error answer to a non-member's receipt")
    assert H.is_error(resp, "NOT_MEMBER"), H.describe(resp)

    quiet()
    ups = alice.events_of("receipt")
    assert [(u.delivered_seq, u.read_seq) for u in ups] == [(2, 0), (4, 4), (5, 5)]
    # successful receipts are not answered
    assert bob.responses == []


def test_typing(broker, connect):
    alice = connect("alice")
    bob = connect("bob")
    carol = connect("carol")
    alice.send_ok(AB, b"hi")
    bob.wait_messages(1, AB)
    alice.typing(AB, True, user_id="mallory")  # user_id from devices is ignored
    ev = bob.wait_event(lambda e: e.WhichOneof("body") == "typing", what="a Typing event")
    assert ev.typing.conversation_id == AB
    assert ev.typing.user_id == "alice"
    assert ev.typing.typing
    alice.typing(AB, False, qos=1)
    bob.wait_event(lambda e: e.WhichOneof("body") == "typing" and not e.typing.typing,
                   what="a Typing(false) event")
    quiet()
    assert alice.events_of("typing") == [], "the sender does not get its own typing"
    assert carol.events == [], "a non-member gets nothing"
    assert alice.responses == []
    # typing is never stored
    msgs, _ = bob.sync_all()
    assert [m.seq for m in msgs] == [1]


def test_fresh_one_to_one_exists_implicitly(broker, connect):
    """docs: a 1:1 conversation "exists implicitly for any pair". Before its
    first message, typing reaches the other side and history is empty."""
    alice = connect("alice")
    bob = connect("bob")
    wrong = []
    r = bob.request(history=pb.HistoryRequest(conversation_id=AB))
    if r.WhichOneof("body") != "history" or list(r.history.messages) or r.history.more:
        wrong.append(f"history before the first message: {H.describe(r)}")
    alice.typing(AB, True, qos=1)
    try:
        ev = bob.wait_event(lambda e: e.WhichOneof("body") == "typing", what="a Typing event",
                            timeout=H.WAIT * 0.3)
        assert ev.typing.user_id == "alice"
    except AssertionError:
        wrong.append("typing before the first message did not reach bob; alice got "
                     f"{[H.describe(x) for x in alice.responses]}")
    assert not wrong, "\n  ".join(wrong)


def test_media_and_reply_round_trip(broker, connect):
    alice = connect("alice")
    bob = connect("bob", v5=True)
    first = alice.send_ok(AB, b"look")
    media = [pb.MediaRef(url="https://blobs.invalid/1", mime_type="image/jpeg", size=1234,
                         sha256=bytes(range(32)), width=640, height=480, key=b"k" * 32,
                         thumbnail=b"\x89PNG..."),
             pb.MediaRef(url="https://blobs.invalid/2", mime_type="audio/ogg", duration_ms=4100)]
    ack = alice.send_ok(AB, b"\x00\x01binary\xff", content_type="app/x-photo", media=media,
                        reply_to_seq=first.seq)
    m = bob.wait_event(lambda e: e.WhichOneof("body") == "message" and e.message.seq == ack.seq,
                       what="the media message").message
    assert m.body == b"\x00\x01binary\xff" and m.content_type == "app/x-photo"
    assert list(m.media) == media
    assert m.reply_to_seq == first.seq
    msgs, _ = bob.sync_all()
    assert list(msgs[-1].media) == media and msgs[-1].reply_to_seq == first.seq


def test_reconnect_syncs_from_cursor(broker, connect):
    """The SDK flow: apply live messages, remember the cursor, go offline,
    reconnect and sync after the cursor: exactly the missed messages."""
    alice = connect("alice")
    bob = connect("bob")
    alice.send_many(AB, [b"a1", b"a2", b"a3"])
    live = bob.wait_messages(3, AB)
    cursor = live[-1].inbox_seq
    assert cursor == 3
    assert bob.request(cursor_ack=pb.CursorAck(inbox_seq=cursor)).WhichOneof("body") == "ok"
    bob.close()
    alice.send_many(AB, [b"b1", b"b2", b"b3", b"b4"])
    bob2 = connect("bob")
    msgs, _ = bob2.sync_all(after=cursor)
    assert [(m.seq, m.body) for m in msgs] == [(4, b"b1"), (5, b"b2"), (6, b"b3"), (7, b"b4")]
    assert [m.inbox_seq for m in msgs] == [4, 5, 6, 7]
    # live again after the sync
    alice.send_ok(AB, b"c1")
    [m] = bob2.wait_messages(1, AB)
    assert (m.seq, m.inbox_seq) == (8, 8)


def test_sync_and_history_page_caps(broker, connect):
    alice = connect("alice")
    for k in range(0, 600, 100):
        alice.send_many(AB, [f"{i}".encode() for i in range(k, k + 100)])
    bob = connect("bob")
    page = bob.sync_page(after=0)
    assert len(page.messages) == 100 and page.more, "default sync limit is 100"
    page = bob.sync_page(after=0, limit=10000)
    assert len(page.messages) == 500 and page.more, "sync limit is capped at 500"
    assert page.inbox_head == 600
    msgs, pages = bob.sync_all(limit=10000)
    assert [m.seq for m in msgs] == list(range(1, 601)) and len(pages) == 2
    r = bob.request_ok(history=pb.HistoryRequest(conversation_id=AB))
    assert [m.seq for m in r.history.messages] == list(range(600, 550, -1)), "default 50"
    assert r.history.more
    r = bob.request_ok(history=pb.HistoryRequest(conversation_id=AB, limit=10000))
    assert [m.seq for m in r.history.messages] == list(range(600, 400, -1)), "capped at 200"


def test_session_takeover_same_device(broker, connect):
    """A second connection with the same client id takes over; the new one
    works and the old one is disconnected (state is per connection)."""
    old = connect("alice")
    bob = connect("bob")
    old.send_nowait(AB, b"in flight", client_msg_id="inflight-1")
    new = connect("alice")
    old._wait(lambda: not old.connected, H.WAIT, "the old connection to be taken over")
    ack = new.send_ok(AB, b"from the new connection")
    msgs = bob.wait_messages(ack.seq, AB)
    assert [m.seq for m in msgs] == list(range(1, ack.seq + 1))
    # retrying the in-flight send from the new connection is safe
    again = new.send_ok(AB, b"in flight", client_msg_id="inflight-1")
    assert again.seq in (1, ack.seq + 1)
    r = new.request_ok(sync=pb.SyncRequest())
    assert [m.client_msg_id for m in r.sync.messages].count("inflight-1") == 1


def test_abrupt_disconnects_with_work_pending(broker, connect):
    """Clients that vanish with sends and requests in flight: the replies go
    nowhere, the broker keeps serving, the sends are stored once."""
    alice = connect("alice")
    for round_ in range(5):
        d = connect("bob", f"flaky{round_}")
        for i in range(20):
            d.send_nowait(AB, b"x", client_msg_id=f"f{round_}-{i}")
            d.request_nowait(sync=pb.SyncRequest(limit=500))
        d.client.socket().shutdown(socket.SHUT_RDWR)  # no DISCONNECT packet
        d.close()
    time.sleep(0.3)
    assert broker.alive()
    ack = alice.send_ok(AB, b"after")
    msgs, _ = alice.sync_all(limit=500)
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(1, ack.seq + 1))
    cm = [m.client_msg_id for m in msgs]
    assert len(cm) == len(set(cm))


def test_rate_limited(make_broker, connect):
    b = make_broker(opts={"rate_msgs_per_s": "5", "rate_burst": "10"})
    alice = connect("alice", broker=b, v5=True)
    cmids = [alice.send_nowait(AB, b"x", client_msg_id=f"rl-{i}")[0] for i in range(30)]
    acks = [alice.take_ack(c) for c in cmids]
    ok = [a for a in acks if not a.HasField("error")]
    limited = [a for a in acks if H.is_error(a, "RATE_LIMITED")]
    assert len(ok) + len(limited) == 30, [H.describe(a) for a in acks]
    assert 10 <= len(ok) < 30, f"{len(ok)} accepted of 30 with burst 10"
    assert all(a.error.retry_after_ms > 0 for a in limited)
    assert all(a.seq == 0 for a in limited)
    assert [a.seq for a in ok] == list(range(1, len(ok) + 1)), "refused sends take no seq"
    time.sleep(max(a.error.retry_after_ms for a in limited) / 1000 + 0.3)
    assert alice.send_ok(AB, b"after the pause").seq == len(ok) + 1


def test_cursor_ack_does_not_trim_for_other_devices(broker, connect):
    """cursor_ack trims only what every device has acked: a device of the same
    user that connected and synced before, but has not acked, still gets
    everything when it syncs later."""
    tablet = connect("bob", "tablet")
    msgs, _ = tablet.sync_all()
    assert msgs == []
    tablet.close()
    alice = connect("alice")
    alice.send_many(AB, [f"t{i}".encode() for i in range(10)])
    phone = connect("bob", "phone")
    msgs, _ = phone.sync_all()
    assert len(msgs) == 10
    r = phone.request(cursor_ack=pb.CursorAck(inbox_seq=10))
    assert r.WhichOneof("body") == "ok", H.describe(r)
    tablet2 = connect("bob", "tablet")
    msgs, _ = tablet2.sync_all(after=0)
    assert [m.seq for m in msgs] == list(range(1, 11)), \
        "entries the tablet had not acked were trimmed"
    # a lower cursor ack later is not an error and does not move the cursor back
    r = phone.request(cursor_ack=pb.CursorAck(inbox_seq=3))
    assert r.WhichOneof("body") == "ok", H.describe(r)
