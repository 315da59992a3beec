"""Hardening: chat client ids belong to their JWT, what happens to topics
outside the namespace with each auth set-up, reply byte budgets, log floods,
group id errors and notes to self."""

import base64
import hashlib
import json
import os
import subprocess
import time

import pytest

import mqchat_harness as H
from mqchat_harness import pb

AB = H.dm("alice", "bob")
OPS_PASSWORD = "ops-password-1"


def plain(broker, connect, username, password=OPS_PASSWORD, client_id=None, v5=True):
    """A non-chat MQTT client (password login) as a harness Device."""
    return connect(username, "x", broker=broker, token=password, username=username,
                   client_id=client_id or f"{username}-1", subscribe_inbox=False, v5=v5)


def password_file(broker, users):
    path = broker.dir / "passwd"
    broker.dir.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    for u, p in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), u, p], check=True,
                       capture_output=True)
    return path


def dynsec_config(broker, username, password, topic):
    """A dynamic-security config file with one client whose role may use `topic`."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    acls = [{"acltype": t, "topic": topic, "allow": True}
            for t in ("publishClientSend", "publishClientReceive", "subscribePattern",
                      "unsubscribePattern")]
    conf = {
        "defaultACLAccess": [
            {"acltype": "publishClientSend", "allow": False},
            {"acltype": "publishClientReceive", "allow": True},
            {"acltype": "subscribe", "allow": False},
            {"acltype": "unsubscribe", "allow": True},
        ],
        "clients": [{"username": username, "salt": base64.b64encode(salt).decode(),
                     "password": base64.b64encode(digest).decode(), "iterations": 101,
                     "roles": [{"rolename": "sensors"}]}],
        "groups": [],
        "roles": [{"rolename": "sensors", "acls": acls}],
    }
    broker.dir.mkdir(parents=True, exist_ok=True)
    path = broker.dir / "dynsec.json"
    path.write_text(json.dumps(conf))
    return path


def can_use(dev, topic, timeout=1.0):
    """(SUBACK ok, a message published by dev to topic came back to it)."""
    codes = dev.subscribe(topic, qos=1)
    sub_ok = codes[0] in (0, 1)
    before = len(dev.other)
    dev.publish(topic, b"reading", qos=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(t == topic for t, _ in dev.other[before:]):
            return sub_ok, True
        time.sleep(0.02)
    return sub_ok, False


# ---------------------------------------------------------------------------
# 1. A chat client id belongs to that device's JWT login only
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("v5", [False, True], ids=["mqtt311", "mqtt5"])
def test_password_login_cannot_take_a_chat_client_id(make_broker, connect, v5):
    b = make_broker(start=False, opts={"foreign_users": "defer"})
    pw = password_file(b, {"ops": OPS_PASSWORD})
    b.extra_conf = [f"password_file {pw}", f"acl_file {b.dir / 'acl'}"]
    (b.dir / "acl").write_text("user ops\ntopic readwrite sensors/#\n")
    b.start()
    bob = connect("bob", "phone", broker=b)
    ops = plain(b, connect, "ops")  # the account itself works
    assert ops.connected
    for cid in ("bob:phone", "bob:tablet", "alice:phone"):
        with pytest.raises(H.ConnectRefused) as ei:
            plain(b, connect, "ops", client_id=cid, v5=v5)
        assert ei.value.rc in ((0x86, 0x87) if v5 else (4, 5)), ei.value.rc
    # the real device was never taken over
    time.sleep(0.3)
    assert bob.connected and not bob.disconnected
    assert bob.send_ok(AB, b"still here").seq == 1
    assert "needs that device's JWT" in b.log_text()


def test_jwt_of_another_device_cannot_take_a_client_id(broker, connect):
    bob = connect("bob", "phone")
    with pytest.raises(H.ConnectRefused):
        connect("alice", "phone", client_id="bob:phone")
    time.sleep(0.3)
    assert bob.connected and not bob.disconnected


# ---------------------------------------------------------------------------
# 3. Topics outside the namespace, per auth set-up
# ---------------------------------------------------------------------------

def test_mqchat_alone_defer_denies_outside_topics_and_says_so(make_broker, connect):
    b = make_broker()
    alice = connect("alice", broker=b, v5=True)
    sub_ok, delivered = can_use(alice, "sensors/x")
    assert not sub_ok and not delivered
    log = b.log_text()
    assert "outside_namespace defer" in log and "denies them to everyone" in log


def test_outside_allow_lets_chat_devices_use_other_topics(make_broker, connect):
    b = make_broker(opts={"outside_namespace": "allow"})
    alice = connect("alice", broker=b, v5=True)
    assert can_use(alice, "sensors/x") == (True, True)
    # the namespace itself is still mqchat's alone
    assert alice.subscribe(f"{b.prefix}/u/bob/inbox")[0] >= 0x80
    assert "outside_namespace allow" in b.log_text()


def test_outside_deny(make_broker, connect):
    b = make_broker(start=False, opts={"outside_namespace": "deny", "foreign_users": "defer"})
    pw = password_file(b, {"ops": OPS_PASSWORD})
    b.extra_conf = [f"password_file {pw}", f"acl_file {b.dir / 'acl'}"]
    (b.dir / "acl").write_text("user ops\ntopic readwrite sensors/#\n")
    b.start()
    ops = plain(b, connect, "ops")
    assert can_use(ops, "sensors/x") == (False, False)  # deny wins over acl_file


def test_password_file_with_acl_file(make_broker, connect):
    b = make_broker(start=False, opts={"foreign_users": "defer"})
    pw = password_file(b, {"ops": OPS_PASSWORD, "guest": "guest-password"})
    b.extra_conf = [f"password_file {pw}", f"acl_file {b.dir / 'acl'}"]
    (b.dir / "acl").write_text("user ops\ntopic readwrite sensors/#\n")
    b.start()
    ops = plain(b, connect, "ops")
    assert can_use(ops, "sensors/x") == (True, True)
    guest = plain(b, connect, "guest", password="guest-password")
    assert can_use(guest, "sensors/x")[1] is False  # acl_file grants guest nothing
    # a password account gets nothing inside the namespace
    assert ops.subscribe(f"{b.prefix}/u/alice/inbox")[0] >= 0x80
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    assert alice.send_ok(AB, b"chat beside sensors").seq == 1
    bob.wait_messages(1, AB)
    assert ops.other == [] or all(not t.startswith(b.prefix) for t, _ in ops.other)


def test_dynamic_security_after_mqchat(make_broker, connect):
    b = make_broker(start=False, opts={"foreign_users": "defer"})
    conf = dynsec_config(b, "ops", OPS_PASSWORD, "sensors/#")
    b.extra_conf = ["plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
                    f"plugin_opt_config_file {conf}"]
    b.start()
    ops = plain(b, connect, "ops")
    assert can_use(ops, "sensors/x") == (True, True)
    assert can_use(ops, "other/x") == (False, False)
    alice = connect("alice", broker=b, v5=True)
    # dynamic-security does not know chat devices: it defers, so denied
    assert can_use(alice, "sensors/x") == (False, False)
    bob = connect("bob", broker=b)
    assert alice.send_ok(AB, b"hi").seq == 1
    bob.wait_messages(1, AB)
    with pytest.raises(H.ConnectRefused):
        plain(b, connect, "ops", client_id="bob:laptop")


# ---------------------------------------------------------------------------
# 2. Every reply fits the byte budget and says `more`
# ---------------------------------------------------------------------------

BUDGET = 140000  # just above max_body + the envelope slack + the reply slack


def test_history_and_sync_pages_fit_the_budget(make_broker, connect):
    b = make_broker(opts={"reply_max_bytes": BUDGET, "max_body": 60000})
    alice = connect("alice", broker=b, v5=True)
    bob = connect("bob", broker=b, v5=True, subscribe_inbox=False)
    body = os.urandom(50000)
    for i in range(6):
        alice.send_ok(AB, body)
    r = bob.request_ok(history=pb.HistoryRequest(conversation_id=AB, limit=50))
    assert len(r.SerializeToString()) <= BUDGET
    assert 1 <= len(r.history.messages) <= 2 and r.history.more
    seqs = [m.seq for m in r.history.messages]
    while r.history.more:
        r = bob.request_ok(history=pb.HistoryRequest(conversation_id=AB, limit=50,
                                                     before_seq=seqs[-1]))
        assert len(r.SerializeToString()) <= BUDGET and r.history.messages
        seqs += [m.seq for m in r.history.messages]
    assert seqs == [6, 5, 4, 3, 2, 1]
    # sync: the same budget, and paging by `more` reaches everything
    got, after = [], 0
    for _ in range(20):
        r = bob.request_ok(sync=pb.SyncRequest(after_inbox_seq=after, limit=100))
        assert len(r.SerializeToString()) <= BUDGET
        got += [m.seq for m in r.sync.messages]
        if not r.sync.more:
            break
        after = r.sync.messages[-1].inbox_seq
    assert got == [1, 2, 3, 4, 5, 6]


def test_reply_budget_below_one_message_is_refused_at_start(make_broker):
    b = make_broker(start=False, opts={"reply_max_bytes": 50000})
    b.start(wait=False)
    assert b.wait_exit() not in (None, 0)
    assert "plugin_opt_reply_max_bytes" in b.log_text()


def test_member_list_pages(make_broker, connect):
    b = make_broker()
    alice = connect("alice", broker=b)
    users = [f"u{i:02d}" for i in range(12)]
    g = alice.request_ok(group_create=pb.GroupCreate(title="t", member_ids=users)).group
    seen, after = [], ""
    for _ in range(10):
        r = alice.request_ok(list_members=pb.ListMembers(conversation_id=g.conversation_id,
                                                         after_user_id=after, limit=5))
        page = [m.user_id for m in r.members.members]
        assert 1 <= len(page) <= 5
        seen += page
        if not r.members.more:
            break
        after = page[-1]
    assert seen == sorted(["alice"] + users)
    bad = alice.request(list_members=pb.ListMembers(conversation_id=g.conversation_id,
                                                    after_user_id="no/slash"))
    assert H.is_error(bad, "INVALID_ARGUMENT")


# ---------------------------------------------------------------------------
# 4. A client cannot flood the log
# ---------------------------------------------------------------------------

def test_refusals_are_logged_once_then_summed(make_broker, connect):
    b = make_broker(opts={"log_summary_interval_s": 1, "rate_burst": 1000,
                          "rate_msgs_per_s": 1000})
    alice = connect("alice", broker=b)
    n = 300
    for i in range(n):
        alice.publish("/send", b"\xff garbage", qos=1, wait=(i == n - 1))
    # the device got a refusal for each (ACKs carry the error)
    alice._wait(lambda: len(alice.acks) >= n, H.WAIT, f"{n} refusal ACKs")
    time.sleep(2.5)  # a summary interval or two
    log = b.log_text()
    lines = [ln for ln in log.splitlines() if "mqchat:" in ln and "alice:phone" in ln]
    firsts = [ln for ln in lines if "refused send" in ln]
    sums = [ln for ln in lines if "more refusals" in ln]
    assert len(firsts) == 1, lines[:5]
    assert sums, lines[:5]
    counted = sum(int(ln.split("alice:phone: ")[1].split(" ")[0]) for ln in sums)
    assert counted == n - 1
    assert "MALFORMED" in sums[0]
    assert len(lines) < 10


def test_refused_connections_are_bounded(make_broker, connect):
    b = make_broker(opts={"log_summary_interval_s": 1})
    for i in range(40):
        with pytest.raises(H.ConnectRefused):
            connect("alice", f"d{i}", broker=b, token="not-a-jwt")
    time.sleep(1.5)
    log = b.log_text()
    assert log.count("mqchat: refused alice from") == 20
    assert "20 more refused connections" in log


# ---------------------------------------------------------------------------
# 5. Group ids: malformed vs unknown
# ---------------------------------------------------------------------------

def test_unknown_group_ids_answer_unknown_conversation(broker, connect):
    alice = connect("alice")
    for conv in ("g:doesnotexist", "g:0", "g:" + "Z" * 64):
        assert H.is_error(alice.send(conv, b"x"), "UNKNOWN_CONVERSATION"), conv
        for body in ({"history": pb.HistoryRequest(conversation_id=conv)},
                     {"list_members": pb.ListMembers(conversation_id=conv)},
                     {"group_add": pb.GroupAddMembers(conversation_id=conv, user_ids=["bob"])},
                     {"group_leave": pb.GroupLeave(conversation_id=conv)}):
            assert H.is_error(alice.request(**body), "UNKNOWN_CONVERSATION"), (conv, body)
    for conv in ("g:nope-nope", "g:a.b", "g:", "g:" + "Z" * 65):
        ack = alice.send(conv, b"x")
        assert H.is_error(ack, "INVALID_ARGUMENT"), conv
        assert "letters and digits" in ack.error.message


# ---------------------------------------------------------------------------
# 6. Notes to self
# ---------------------------------------------------------------------------

def test_notes_to_self_sync_across_own_devices(broker, connect):
    me = H.dm("alice", "alice")
    assert me == "d:alice:alice"
    phone = connect("alice", "phone")
    laptop = connect("alice", "laptop")
    ack = phone.send_ok(me, b"buy milk")
    assert ack.seq == 1
    laptop.wait_messages(1, me)
    assert [m.body for m in laptop.messages(me)] == [b"buy milk"]
    assert phone.messages(me) == []  # the sender has its SendAck
    tablet = connect("alice", "tablet", subscribe_inbox=False)
    msgs, _ = tablet.sync_all()
    assert [m.body for m in msgs if m.conversation_id == me] == [b"buy milk"]
    r = tablet.request_ok(list_members=pb.ListMembers(conversation_id=me))
    assert [m.user_id for m in r.members.members] == ["alice"]
    bob = connect("bob")
    assert H.is_error(bob.send(me, b"let me in"), "NOT_MEMBER")
    assert H.is_error(bob.request(history=pb.HistoryRequest(conversation_id=me)), "NOT_MEMBER")
