"""Broker start-up, configuration errors, restart on the same store."""

import pytest

import mqchat_harness as H


@pytest.mark.parametrize("opt,value,needle", [
    ("bogus", "1", "bogus"),                  # unknown option
    ("durability", "fast", "durability"),     # invalid value
    ("max_body", "lots", "max_body"),         # not a number
    ("group_max_members", "0", "group_max_members"),  # out of range
])
def test_bad_option_refuses_to_start(make_broker, opt, value, needle):
    b = make_broker(opts={opt: value}, start=False)
    b.start(wait=False)
    rc = b.wait_exit(H.WAIT)
    assert rc is not None, f"mosquitto still running {H.WAIT} s after start with " \
                           f"plugin_opt_{opt} {value}"
    assert rc != 0, f"mosquitto exited 0 with plugin_opt_{opt} {value}"
    log = b.log_text()
    assert needle in log, f"the log does not name the option {needle!r}:\n{b.log_tail()}"


def test_starts_and_stops_cleanly(broker, connect):
    a = connect("alice")
    ack = a.send_ok(H.dm("alice", "bob"), b"hi")
    assert ack.seq == 1
    a.close()
    # stop (SIGTERM) is checked at teardown: exit 0, no hang, no sanitizer report


def test_restart_keeps_store(broker, connect):
    conv = H.dm("alice", "bob")
    a = connect("alice")
    seqs = [x.seq for x in a.send_many(conv, [b"m0", b"m1", b"m2"])]
    assert seqs == [1, 2, 3]
    a.close()
    broker.stop()
    broker.start()
    a2 = connect("alice", "tablet")
    ack = a2.send_ok(conv, b"after restart")
    assert ack.seq == 4, "seq must continue after a clean restart"
    broker.restart()  # kill -9 and start on the same store and port
    b = connect("bob")
    msgs, _ = b.sync_all()
    assert [m.seq for m in msgs if m.conversation_id == conv] == [1, 2, 3, 4]


def test_topic_prefix_option(make_broker, connect):
    b = make_broker(opts={"topic_prefix": "chat/v9"})
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    assert alice.inbox_topic == "chat/v9/u/alice/inbox"
    ack = alice.send_ok(H.dm("alice", "bob"), b"prefixed")
    [m] = bob.wait_messages(1)
    assert m.seq == ack.seq == 1
    # the default prefix is now outside the namespace: nothing answers there
    eve = connect("eve", broker=b, v5=True, subscribe_inbox=False)
    rc = eve.publish("mqchat/v1/u/eve/d/phone/send",
                     eve.send_request(H.dm("eve", "bob"), b"x").SerializeToString())
    assert rc == 0x87  # deferred to mosquitto, which has no other mechanism here
