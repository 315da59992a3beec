"""Bad input gets a clear error reply (SendAck.error / Response.error, and
PUBACK 0x87 for a refused send on MQTT 5), stores nothing, and the broker
keeps serving: after every case a normal send/ack round trip works."""

import time

import pytest

import mqchat_harness as H
from mqchat_harness import pb

AB = H.dm("alice", "bob")

# Bytes that are not a protobuf of any message type.
GARBAGE = [
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # over-long varint tag
    b"\x0a\x05ab",                                      # length 5, 2 bytes follow
    b"\x0a",                                            # field 1, length missing
    b"\x07\x01",                                        # wire type 7 does not exist
]


@pytest.fixture
def pair(broker, connect):
    alice = connect("alice", v5=True)
    bob = connect("bob")
    return alice, bob


def still_serves(alice, bob, expect_seq=1):
    """A normal round trip; expect_seq checks that nothing was stored before."""
    ack = alice.send_ok(AB, b"round trip")
    assert ack.seq == expect_seq, f"seq {ack.seq}: the refused input stored something"
    assert alice.last_puback is not None and alice.last_puback < 0x80, \
        f"PUBACK {alice.last_puback!r} for a good send (0x00 or 0x10 expected)"
    ev = bob.wait_event(lambda e: e.WhichOneof("body") == "message"
                        and e.message.client_msg_id == ack.client_msg_id,
                        what="the round-trip message")
    assert ev.message.seq == ack.seq
    r = alice.request_ok(sync=pb.SyncRequest())
    assert r.sync.inbox_head == ack.inbox_seq


def refused_send(alice, ack, code, cmid):
    assert H.is_error(ack, code), f"expected {code}, got {H.describe(ack)}"
    assert ack.client_msg_id == cmid
    assert ack.seq == 0 and ack.inbox_seq == 0
    assert ack.error.request_id == cmid
    assert alice.last_puback == 0x87, \
        f"PUBACK for a refused send: {alice.last_puback!r}, expected 0x87"


@pytest.mark.parametrize("garbage", GARBAGE, ids=["varint", "short", "nolen", "wiretype"])
def test_garbage_on_send(pair, garbage):
    alice, bob = pair
    rc = alice.publish("/send", garbage)
    assert rc == 0x87, f"PUBACK {rc:#x} for garbage on send"
    ack = _any_ack(alice)
    assert H.is_error(ack, "MALFORMED"), H.describe(ack)
    assert ack.seq == 0
    still_serves(alice, bob)


def _any_ack(dev):
    dev._wait(lambda: len(dev.acks) > 0, H.WAIT, "a SendAck for the malformed send")
    with dev.cv:
        return dev.acks.pop(0)


@pytest.mark.parametrize("topic", ["req", "receipt", "typing"])
@pytest.mark.parametrize("garbage", GARBAGE[:2], ids=["varint", "short"])
def test_garbage_on_req_receipt_typing(pair, topic, garbage):
    alice, bob = pair
    alice.publish("/" + topic, garbage, qos=1)
    r = alice.take_any_response(what=f"the MALFORMED answer on resp for garbage on {topic}")
    assert H.is_error(r, "MALFORMED"), H.describe(r)
    assert alice.connected
    still_serves(alice, bob)


def test_missing_client_msg_id(pair):
    alice, bob = pair
    ack = alice.send(AB, b"x", client_msg_id="")
    refused_send(alice, ack, "INVALID_ARGUMENT", "")
    still_serves(alice, bob)


@pytest.mark.parametrize("cmid", ["has space", "x" * 129, "slash/no", "caf\u00e9"],
                         ids=["space", "too_long", "slash", "non_ascii"])
def test_bad_client_msg_id(pair, cmid):
    """The server need not echo an invalid id: the ACK may carry it or ""."""
    alice, bob = pair
    alice.send_nowait(AB, b"x", client_msg_id=cmid)
    ack = _any_ack(alice)
    assert H.is_error(ack, "INVALID_ARGUMENT"), H.describe(ack)
    assert ack.client_msg_id in (cmid, ""), ack.client_msg_id
    assert ack.seq == 0 and ack.inbox_seq == 0
    still_serves(alice, bob)


@pytest.mark.parametrize("conv", ["", "zzz", "d:alice", "d:alice:b@b", "d:bob:alice",
                                  "d:alice:bob:carol", "x:alice:bob", "d:alice:" + "b" * 129],
                         ids=["empty", "noprefix", "one_user", "bad_char", "unordered",
                              "three_users", "bad_kind", "too_long"])
def test_bad_conversation_id(pair, conv):
    """Reading chosen: a d: id that is not "d:<a>:<b>" with a < b and valid
    user ids is a malformed id (INVALID_ARGUMENT), not NOT_MEMBER."""
    alice, bob = pair
    ack = alice.send(conv, b"x", client_msg_id="bad-conv")
    refused_send(alice, ack, "INVALID_ARGUMENT", "bad-conv")
    still_serves(alice, bob)


def test_body_too_large(pair):
    alice, bob = pair
    ack = alice.send(AB, b"x" * 4097, client_msg_id="big")
    refused_send(alice, ack, "BODY_TOO_LARGE", "big")
    # inline thumbnails count toward the limit
    ack = alice.send(AB, b"x" * 4000, client_msg_id="big-thumb",
                     media=[pb.MediaRef(url="https://example.invalid/a", thumbnail=b"t" * 200)])
    refused_send(alice, ack, "BODY_TOO_LARGE", "big-thumb")
    still_serves(alice, bob)
    # exactly max_body is fine
    ack = alice.send_ok(AB, b"y" * 4096)
    assert ack.seq == 2
    m = bob.wait_event(lambda e: e.WhichOneof("body") == "message" and e.message.seq == 2,
                       what="the 4096-byte message").message
    assert m.body == b"y" * 4096


def test_content_type_and_media_limits(pair):
    alice, bob = pair
    ack = alice.send(AB, b"x", client_msg_id="ct", content_type="t" * 65)
    refused_send(alice, ack, "INVALID_ARGUMENT", "ct")
    ack = alice.send(AB, b"x", client_msg_id="media",
                     media=[pb.MediaRef(url=f"https://example.invalid/{i}") for i in range(17)])
    refused_send(alice, ack, "INVALID_ARGUMENT", "media")
    still_serves(alice, bob)
    ack = alice.send_ok(AB, b"x", content_type="t" * 64,
                        media=[pb.MediaRef(url=f"https://example.invalid/{i}") for i in range(16)])
    assert ack.seq == 2


def test_unknown_group(pair):
    alice, bob = pair
    ack = alice.send("g:nope", b"x", client_msg_id="nope")
    refused_send(alice, ack, "UNKNOWN_CONVERSATION", "nope")
    r = alice.request(history=pb.HistoryRequest(conversation_id="g:nope"))
    assert H.is_error(r, "UNKNOWN_CONVERSATION"), H.describe(r)
    still_serves(alice, bob)


def test_not_member_of_other_pair(pair, connect):
    """d:carol:dave exists implicitly (docs: "Exists implicitly for any pair"),
    so everything alice tries on it is NOT_MEMBER, whether or not carol and
    dave have talked (answering differently would reveal that they have)."""
    alice, bob = pair
    carol = connect("carol")
    dave = connect("dave")
    wrong = []
    for talked in (False, True):
        if talked:
            carol.send_ok("d:carol:dave", b"private")
            dave.wait_messages(1, "d:carol:dave")
        ack = alice.send("d:carol:dave", b"x", client_msg_id=f"intrude-{talked}")
        if not H.is_error(ack, "NOT_MEMBER"):
            wrong.append(f"send (talked={talked}): {H.describe(ack)}")
        r = alice.request(history=pb.HistoryRequest(conversation_id="d:carol:dave"))
        if not H.is_error(r, "NOT_MEMBER"):
            wrong.append(f"history (talked={talked}): {H.describe(r)}")
        alice.typing("d:carol:dave", True, qos=1)
        r = alice.take_any_response(what="the NOT_MEMBER answer to typing")
        if not H.is_error(r, "NOT_MEMBER"):
            wrong.append(f"typing (talked={talked}): {H.describe(r)}")
        alice.receipt("d:carol:dave", pb.RECEIPT_TYPE_READ, 1)
        r = alice.take_any_response(what="the NOT_MEMBER answer to a receipt")
        if not H.is_error(r, "NOT_MEMBER"):
            wrong.append(f"receipt (talked={talked}): {H.describe(r)}")
    time.sleep(0.3)
    for d in (carol, dave):
        # nothing but carol's own message (which carol's device may get live)
        other = [e for e in d.events if not (e.WhichOneof("body") == "message"
                                             and e.message.client_msg_id != ""
                                             and e.message.sender_user_id == "carol"
                                             and e.message.seq == 1)]
        assert other == [], f"{d} got {other}"
    still_serves(alice, bob)
    assert not wrong, "expected NOT_MEMBER:\n  " + "\n  ".join(wrong)


def test_bad_topic(pair, broker):
    alice, bob = pair
    alice.publish(f"{broker.prefix}/u/alice/d/phone/bogus", b"\x0a\x01x", qos=1)
    r = alice.take_any_response(what="the BAD_TOPIC answer")
    assert H.is_error(r, "BAD_TOPIC"), H.describe(r)
    still_serves(alice, bob)


def test_bad_topic_below_upstream_topic(pair, broker):
    """{p}/u/<self>/d/<self>/send/extra is an unknown topic under the device's
    own prefix too: BAD_TOPIC on resp."""
    alice, bob = pair
    alice.publish(f"{broker.prefix}/u/alice/d/phone/send/extra", b"", qos=1)
    r = alice.take_any_response(what="the BAD_TOPIC answer for send/extra",
                                timeout=H.WAIT * 0.3)
    assert H.is_error(r, "BAD_TOPIC"), H.describe(r)
    still_serves(alice, bob)


def test_request_without_body(pair):
    alice, bob = pair
    r = alice.request(request_id="empty-1")
    assert r.request_id == "empty-1"
    assert H.is_error(r, "UNSUPPORTED"), H.describe(r)
    assert r.error.request_id == "empty-1"
    still_serves(alice, bob)


def test_request_of_unknown_type(pair):
    """A newer client's request type (an unknown oneof field) is UNSUPPORTED."""
    alice, bob = pair
    tag = 99 << 3 | 2                     # field 99, length-delimited
    raw = (pb.Request(request_id="new-1").SerializeToString() +
           bytes([0x80 | (tag & 0x7F), tag >> 7, 0]))
    alice.publish("/req", raw)
    r = alice.take_response("new-1")
    assert H.is_error(r, "UNSUPPORTED"), H.describe(r)
    still_serves(alice, bob)


@pytest.mark.parametrize("body", ["presence_watch", "presence_settings", "push_register",
                                  "push_unregister"])
def test_presence_and_push_off_without_redis(pair, body):
    """Without plugin_opt_redis presence and push are off: UNSUPPORTED."""
    alice, bob = pair
    msg = {"presence_watch": pb.PresenceWatch(user_ids=["bob"]),
           "presence_settings": pb.PresenceSettings(hide_last_seen=True),
           "push_register": pb.PushTokenRegister(platform=pb.PUSH_PLATFORM_FCM, token="t"),
           "push_unregister": pb.PushTokenUnregister()}[body]
    r = alice.request(**{body: msg})
    assert H.is_error(r, "UNSUPPORTED"), H.describe(r)
    still_serves(alice, bob)


@pytest.mark.parametrize("rid", ["", "has space", "r" * 129], ids=["empty", "space", "too_long"])
def test_bad_request_id(pair, rid):
    """Reading chosen: a missing or malformed request_id is INVALID_ARGUMENT,
    answered with the request_id as sent (possibly empty)."""
    alice, bob = pair
    alice.request_nowait(request_id=rid, sync=pb.SyncRequest())
    r = alice.take_any_response(what="the answer to a bad request_id")
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)
    still_serves(alice, bob)


def test_sync_limit_cap_and_history_of_unknown(pair):
    alice, bob = pair
    r = alice.request(history=pb.HistoryRequest(conversation_id=""))
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)
    r = alice.request(list_members=pb.ListMembers(conversation_id="nonsense"))
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)
    still_serves(alice, bob)


def test_many_bad_inputs_in_a_row(pair, broker):
    """A burst of every kind of bad input on one connection; the broker
    survives and the store is intact."""
    alice, bob = pair
    for g in GARBAGE * 5:
        for t in ("send", "req", "receipt", "typing", "bogus"):
            alice.publish("/" + t, g, qos=1, wait=False)
    for i in range(20):
        alice.send_nowait("g:nope", b"x", client_msg_id=f"bad-{i}")
        alice.send_nowait(AB, b"x" * 5000, client_msg_id=f"big-{i}")
    time.sleep(0.5)
    assert broker.alive()
    still_serves(alice, bob)
