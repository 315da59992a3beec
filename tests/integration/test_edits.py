"""Edits and "delete for everyone": sends that name an earlier seq, become a
MESSAGE_EDITED / MESSAGE_DELETED event with their own seq, and replace the
target's stored content (docs/PROTOCOL.md, "Edits and deletes")."""

import time

import pytest

import mqchat_harness as H
from mqchat_harness import pb

AB = H.dm("alice", "bob")
EDITED = pb.ConversationEvent.TYPE_MESSAGE_EDITED
DELETED = pb.ConversationEvent.TYPE_MESSAGE_DELETED


def history(dev, conv):
    return {m.seq: m for m in
            dev.request_ok(history=pb.HistoryRequest(conversation_id=conv)).history.messages}


def test_edit_own_message(broker, connect):
    alice, bob = connect("alice"), connect("bob")
    orig = alice.send_ok(AB, b"helo", content_type="text/plain")
    ack = alice.send_ok(AB, b"hello", content_type="text/plain", edit_seq=orig.seq)
    assert ack.seq == orig.seq + 1
    ev = bob.wait_event(lambda e: e.message.event.type == EDITED)
    m = ev.message
    assert m.seq == ack.seq and m.event.target_seq == orig.seq and m.body == b"hello"
    assert m.kind == pb.MESSAGE_KIND_EVENT and m.sender_user_id == "alice"
    h = history(bob, AB)
    assert h[orig.seq].body == b"hello" and h[orig.seq].edited
    assert h[orig.seq].kind == pb.MESSAGE_KIND_USER and h[orig.seq].sender_user_id == "alice"
    assert h[ack.seq].event.type == EDITED


def test_retried_edit_is_a_duplicate(broker, connect):
    alice = connect("alice")
    orig = alice.send_ok(AB, b"one")
    first = alice.send_ok(AB, b"two", client_msg_id="edit-1", edit_seq=orig.seq)
    again = alice.send_ok(AB, b"two", client_msg_id="edit-1", edit_seq=orig.seq)
    assert again.duplicate and again.seq == first.seq
    d1 = alice.send_ok(AB, client_msg_id="del-1", delete_seq=orig.seq)
    d2 = alice.send_ok(AB, client_msg_id="del-1", delete_seq=orig.seq)
    assert d2.duplicate and d2.seq == d1.seq
    assert len(history(alice, AB)) == 3


@pytest.mark.parametrize("fields,code", [
    ({"edit_seq": 1, "delete_seq": 1}, "INVALID_ARGUMENT"),
    ({"delete_seq": 1, "body": b"x"}, "INVALID_ARGUMENT"),
    ({"edit_seq": 1, "reply_to_seq": 1}, "INVALID_ARGUMENT"),
    ({"edit_seq": 99}, "NOT_FOUND"),
    ({"delete_seq": 99}, "NOT_FOUND"),
])
def test_bad_edits(broker, connect, fields, code):
    alice = connect("alice")
    alice.send_ok(AB, b"first")
    fields = dict(fields)
    body = fields.pop("body", b"" if "delete_seq" in fields else b"new")
    ack = alice.send(AB, body, **fields)
    assert H.is_error(ack, code), ack
    assert len(history(alice, AB)) == 1


def test_only_the_sender_edits_and_deletes(broker, connect):
    alice, bob = connect("alice"), connect("bob")
    orig = alice.send_ok(AB, b"mine")
    assert H.is_error(bob.send(AB, b"yours now", edit_seq=orig.seq), "PERMISSION_DENIED")
    assert H.is_error(bob.send(AB, delete_seq=orig.seq), "PERMISSION_DENIED")
    assert history(bob, AB)[orig.seq].body == b"mine"
    # events are history, not editable
    g = alice.request_ok(group_create=pb.GroupCreate(title="t", member_ids=["bob"])).group
    assert H.is_error(alice.send(g.conversation_id, b"x", edit_seq=1), "INVALID_ARGUMENT")


def test_windows(make_broker, connect):
    b = make_broker(opts={"edit_window_s": 1, "delete_window_s": 2})
    alice = connect("alice", broker=b)
    m = alice.send_ok(AB, b"quick")
    time.sleep(1.3)
    assert H.is_error(alice.send(AB, b"late", edit_seq=m.seq), "PERMISSION_DENIED")
    ok = alice.send_ok(AB, delete_seq=m.seq)  # still within the delete window
    assert ok.seq == m.seq + 1
    m2 = alice.send_ok(AB, b"slow")
    edit = alice.send_ok(AB, b"slower", client_msg_id="e-late", edit_seq=m2.seq)
    time.sleep(2.3)
    ack = alice.send(AB, delete_seq=m2.seq)
    assert H.is_error(ack, "PERMISSION_DENIED") and "window" in ack.error.message
    # a retry of the edit is still its duplicate, window or not
    again = alice.send_ok(AB, b"slower", client_msg_id="e-late", edit_seq=m2.seq)
    assert again.duplicate and again.seq == edit.seq


def test_group_admin_deletes_any_message(broker, connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    g = alice.request_ok(group_create=pb.GroupCreate(title="t", member_ids=["bob", "carol"]))
    conv = g.group.conversation_id
    spam = bob.send_ok(conv, b"spam")
    # a plain member may not delete someone else's message
    assert H.is_error(carol.send(conv, delete_seq=spam.seq), "PERMISSION_DENIED")
    d = alice.send_ok(conv, delete_seq=spam.seq)  # the owner moderates
    ev = carol.wait_event(lambda e: e.message.event.type == DELETED)
    assert ev.message.event.target_seq == spam.seq and ev.message.event.actor_user_id == "alice"
    assert ev.message.seq == d.seq
    t = history(carol, conv)[spam.seq]
    assert t.deleted and not t.body and t.sender_user_id == "bob"
    # deleted stays deleted: no edit, no second delete
    assert H.is_error(bob.send(conv, b"back", edit_seq=spam.seq), "INVALID_ARGUMENT")
    assert H.is_error(alice.send(conv, delete_seq=spam.seq), "INVALID_ARGUMENT")


def test_late_device_never_sees_the_old_body(broker, connect):
    alice = connect("alice")
    secret = alice.send_ok(AB, b"my secret body")
    alice.send_ok(AB, b"edited body", edit_seq=secret.seq)
    other = alice.send_ok(AB, b"second secret")
    alice.send_ok(AB, delete_seq=other.seq)
    # bob has never connected: his first sync is after the edit and the delete
    bob = connect("bob", "laptop")
    msgs = bob.sync_all()[0]
    bodies = [m.body for m in msgs]
    assert b"my secret body" not in bodies and b"second secret" not in bodies
    by_seq = {m.seq: m for m in msgs}
    assert by_seq[secret.seq].body == b"edited body" and by_seq[secret.seq].edited
    assert by_seq[other.seq].deleted and not by_seq[other.seq].body
    assert [m.event.type for m in msgs if m.kind == pb.MESSAGE_KIND_EVENT] == [EDITED, DELETED]


def test_edit_in_large_group(make_broker, connect):
    b = make_broker(opts={"large_group_members": 3, "small_group_members": 2})
    alice, bob, carol = (connect(u, broker=b) for u in ("alice", "bob", "carol"))
    g = alice.request_ok(group_create=pb.GroupCreate(title="big", member_ids=["bob", "carol"]))
    conv = g.group.conversation_id
    m = alice.send_ok(conv, b"v1")
    e = alice.send_ok(conv, b"v2", edit_seq=m.seq)
    ev = bob.wait_event(lambda x: x.message.event.type == EDITED)
    assert ev.message.seq == e.seq and ev.message.body == b"v2"
    pulled = bob.request_ok(pull=pb.ConversationPull(conversation_id=conv)).pull.messages
    by_seq = {x.seq: x for x in pulled}
    assert by_seq[m.seq].body == b"v2" and by_seq[m.seq].edited
    assert by_seq[e.seq].event.target_seq == m.seq
