"""ACL: a device publishes only to its own upstream topics and reads only its
own user's inbox and its own device topics."""

import time

import pytest

import mqchat_harness as H
from mqchat_harness import pb

BC = H.dm("bob", "carol")
AB = H.dm("alice", "bob")


def history_seqs(dev, conv):
    r = dev.request_ok(history=pb.HistoryRequest(conversation_id=conv))
    return [m.seq for m in r.history.messages]


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_publish_to_another_users_topics_is_dropped(broker, connect, v5):
    bob = connect("bob")
    carol = connect("carol")
    assert bob.send_ok(BC, b"genuine").seq == 1
    carol.wait_messages(1, BC)
    alice = connect("alice", v5=v5)
    p = broker.prefix

    forged = pb.SendRequest(client_msg_id="forged-1", conversation_id=BC, body=b"forged")
    targets = [
        (f"{p}/u/bob/d/phone/send", forged.SerializeToString()),
        (f"{p}/u/bob/d/tablet/send", forged.SerializeToString()),
        (f"{p}/u/bob/d/phone/req",
         pb.Request(request_id="x1", group_create=pb.GroupCreate(title="t", member_ids=["alice"]))
         .SerializeToString()),
        (f"{p}/u/bob/d/phone/receipt",
         pb.Receipt(conversation_id=BC, type=pb.RECEIPT_TYPE_READ, seq=1).SerializeToString()),
        (f"{p}/u/bob/d/phone/typing",
         pb.Typing(conversation_id=BC, typing=True).SerializeToString()),
        (f"{p}/u/bob/inbox",
         pb.ServerEvent(message=pb.Message(conversation_id=BC, seq=2, sender_user_id="carol",
                                           body=b"fake", inbox_seq=2)).SerializeToString()),
        (f"{p}/u/bob/d/phone/ack",
         pb.SendAck(client_msg_id="c1", conversation_id=BC, seq=9).SerializeToString()),
        (f"{p}/u/bob/d/phone/resp", pb.Response(request_id="r1").SerializeToString()),
        (f"{p}/u/carol/d/phone/send", forged.SerializeToString()),
    ]
    for topic, payload in targets:
        rc = alice.publish(topic, payload, qos=1)
        if v5:
            assert rc == 0x87, f"PUBACK for a publish to {topic}: {rc:#x}, expected 0x87"
    assert alice.connected, "a refused publish does not disconnect"

    # nothing stored, nothing delivered: the victims' conversation is unchanged
    time.sleep(0.4)
    assert [m.seq for m in carol.messages(BC)] == [1]
    assert [m.seq for m in bob.messages()] in ([], [1])  # bob's own message, if live
    assert bob.acks == [] and bob.responses == []
    assert carol.acks == [] and carol.responses == []
    assert alice.acks == [] and alice.responses == [] and alice.events == []
    assert history_seqs(bob, BC) == [1], "the forged message was stored"
    assert bob.send_ok(BC, b"next").seq == 2, "head moved"
    # the receipt and the group create did not happen either
    assert carol.events_of("receipt") == []
    r = bob.request_ok(list_conversations=pb.ListConversations())
    assert not any(c.conversation_id.startswith("g:") for c in r.conversations.conversations)
    # alice herself still works
    assert alice.send_ok(AB, b"mine").seq == 1


SUB_IN_NAMESPACE = [
    "mqchat/v1/u/bob/inbox",
    "mqchat/v1/#",
    "mqchat/v1/u/+/inbox",
    "mqchat/v1/u/bob/#",
    "mqchat/v1/u/bob/d/phone/ack",
    "mqchat/v1/u/bob/d/phone/resp",
    "mqchat/v1/u/bob/d/phone/#",
    "mqchat/v1/u/bob/d/+/ack",
    "mqchat/v1/u/+/d/+/send",
    "mqchat/v1/+/bob/inbox",
    "mqchat/v1/u/#",
]
# Filters that are not inside the namespace but match it: mosquitto (or the
# plugin) may grant them; READ ACL must still keep chat traffic away.
SUB_OVERLAPPING = ["#", "+/#", "mqchat/#", "+/v1/u/bob/inbox", "+/+/+/+/+/+"]


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_subscriptions_to_others_refused_and_silent(broker, connect, v5):
    alice = connect("alice")
    bob = connect("bob")
    eve = connect("eve", "laptop", v5=v5, subscribe_inbox=False)
    refused = 0x87 if v5 else 0x80
    for f in SUB_IN_NAMESPACE:
        codes = eve.subscribe(f)
        assert codes == [refused], f"SUBACK for {f}: {codes}, expected {refused:#x}"
    for f in SUB_OVERLAPPING:
        eve.subscribe(f)  # any answer; checked below by what arrives

    # traffic of every kind between alice and bob
    a1 = alice.send_ok(AB, b"secret 1")
    bob.wait_messages(1, AB)
    bob.send_ok(AB, b"secret 2")
    alice.typing(AB, True)
    bob.wait_event(lambda e: e.WhichOneof("body") == "typing", what="typing")
    bob.receipt(AB, pb.RECEIPT_TYPE_READ, 2)
    alice.wait_event(lambda e: e.WhichOneof("body") == "receipt", what="receipt")
    g = alice.request_ok(group_create=pb.GroupCreate(title="t", member_ids=["bob"]))
    bob.wait_event(lambda e: e.WhichOneof("body") == "message"
                   and e.message.conversation_id == g.group.conversation_id, what="CREATED")
    alice.sync_all()
    assert a1.seq == 1
    time.sleep(0.5)
    leaked = eve.events + eve.acks + eve.responses + eve.other + eve.bad
    assert leaked == [], f"eve received chat traffic: {[str(x)[:120] for x in leaked]}"
    assert eve.connected


def test_own_topics_may_be_subscribed(broker, connect):
    alice = connect("alice", v5=True)
    p = broker.prefix
    for f in (f"{p}/u/alice/inbox", f"{p}/u/alice/d/phone/ack", f"{p}/u/alice/d/phone/resp",
              f"{p}/u/alice/d/phone/#"):
        codes = alice.subscribe(f)
        assert codes[0] in (0, 1), f"SUBACK for own {f}: {codes}"
    ack = alice.send_ok(AB, b"x")
    alice.request_ok(sync=pb.SyncRequest())
    time.sleep(0.3)
    # upstream publishes are consumed, never relayed (even to a subscriber of
    # the device's own topics)
    relayed = [t for t, _ in alice.other if t.endswith(("/send", "/req", "/receipt", "/typing"))]
    assert relayed == [], relayed
    assert ack.seq == 1


def test_other_device_of_same_user_topics_refused(broker, connect):
    """A device publishes only to its own upstream topics, not those of its
    user's other devices (that would forge the sender device)."""
    phone = connect("alice", "phone", v5=True)
    tablet = connect("alice", "tablet")
    req = pb.SendRequest(client_msg_id="t-1", conversation_id=AB, body=b"as tablet")
    rc = phone.publish(f"{broker.prefix}/u/alice/d/tablet/send", req.SerializeToString())
    assert rc == 0x87
    time.sleep(0.3)
    assert tablet.acks == [] and phone.acks == []
    assert phone.send_ok(AB, b"as phone").seq == 1


def test_retain_flag_ignored_on_upstream(broker, connect):
    alice = connect("alice")
    rc = alice.publish("/send", alice.send_request(AB, b"retained?", client_msg_id="ret-1")
                       .SerializeToString(), retain=True)
    assert rc == 0
    assert alice.take_ack("ret-1").seq == 1
    # a later subscription that covers the send topic gets no retained copy
    alice.subscribe(alice.base + "/#")
    eve = connect("eve", subscribe_inbox=False)
    eve.subscribe("#")
    time.sleep(0.4)
    assert [t for t, _ in alice.other if t.endswith("/send")] == []
    assert eve.other == [] and eve.events == []


def test_outside_namespace_deferred_to_mosquitto(broker, connect):
    """Topics outside the prefix are left to mosquitto's other mechanisms;
    none is configured here, so mosquitto refuses them."""
    alice = connect("alice", v5=True)
    assert alice.publish("somewhere/else", b"x") == 0x87
    assert alice.subscribe("somewhere/else") == [0x87]
    assert alice.connected
    assert alice.send_ok(AB, b"still fine").seq == 1
