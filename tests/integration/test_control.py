"""The operator API on $CONTROL/mqchat/v1, driven the way operators drive it:
with mosquitto_rr (real mosquitto tooling) as an admin whose password is in
a mosquitto password_file, beside chat devices logged in with JWTs."""

import json
import shutil
import subprocess
import threading
import time

import pytest

import mqchat_harness as H
from mqchat_harness import pb

OPS_PASSWORD = "ops-password-1"
TOPIC = "$CONTROL/mqchat/v1"
RESP = "$CONTROL/mqchat/v1/response"


def password_file(broker, users):
    path = broker.dir / "passwd"
    path.write_text("")
    for u, p in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), u, p], check=True,
                       capture_output=True)
    return path


def control_broker(make_broker, opts=None, start=True):
    o = {"foreign_users": "defer", "admin_users": "ops,ops2"}
    o.update(opts or {})
    b = make_broker(opts=o, start=False)
    pw = password_file(b, {"ops": OPS_PASSWORD, "guest": "guest-password"})
    b.extra_conf = [f"password_file {pw}"]
    if start:
        b.start()
    return b


def rr(broker, payload, user="ops", password=OPS_PASSWORD, timeout=H.WAIT):
    """One request with mosquitto_rr; the parsed reply (or None on timeout)."""
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    p = subprocess.run(
        ["mosquitto_rr", "-h", "127.0.0.1", "-p", str(broker.port), "-u", user, "-P", password,
         "-t", TOPIC, "-e", RESP, "-m", payload, "-W", str(int(timeout))],
        capture_output=True, timeout=timeout + 5)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    return json.loads(p.stdout)


def cmd(broker, name, /, **args):
    """One command; its response object."""
    reply = rr(broker, {"commands": [dict(command=name, correlationData="c1", **args)]})
    assert reply is not None, f"no reply to {name}: {broker.log_tail(20)}"
    (r,) = reply["responses"]
    assert r["command"] == name and r.get("correlationData") == "c1", r
    return r


def ok(broker, name, /, **args):
    r = cmd(broker, name, **args)
    assert "error" not in r, r
    return r["data"]


def err(broker, name, /, **args):
    r = cmd(broker, name, **args)
    assert "error" in r and "data" not in r, r
    return r["error"]


# ---------------------------------------------------------------------------
# Envelope, validation, who may
# ---------------------------------------------------------------------------

def test_stats_and_envelope(make_broker, connect):
    b = control_broker(make_broker)
    a = connect("alice", broker=b)
    a.send_ok(H.dm("alice", "bob"), b"hi")
    reply = rr(b, {"commands": [{"command": "getStats", "correlationData": {"n": 1}},
                                {"command": "getStats"}]})
    r1, r2 = reply["responses"]
    assert r1["correlationData"] == {"n": 1} and "correlationData" not in r2
    d = r1["data"]
    assert d["connectedDevices"] == 1 and d["connectedUsers"] == 1
    assert d["store"]["writes"] >= 1 and d["store"]["writable"] is True
    assert d["store"]["durableTicket"] <= d["store"]["lastTicket"]
    assert d["messages"]["stored"] == 1 and d["presence"]["on"] is False


@pytest.mark.parametrize("payload,why", [
    (b"not json", "not JSON"),
    (b'{"commands": []}', "1..100"),
    (b'{"commands": {}}', "1..100"),
    (b'[1,2]', "1..100"),
    (json.dumps({"commands": [{"command": "getStats"}] * 101}), "1..100"),
])
def test_malformed_requests(make_broker, payload, why):
    b = control_broker(make_broker)
    reply = rr(b, payload)
    (r,) = reply["responses"]
    assert why in r["error"]
    assert b.alive()


def test_command_validation(make_broker):
    b = control_broker(make_broker)
    reply = rr(b, {"commands": [
        "getStats",
        {"command": 7},
        {"command": "noSuchCommand"},
        {"command": "getStats", "typo": 1},
        {"command": "getConversation"},
        {"command": "getConversation", "conversation": "g:bad id"},
        {"command": "getConversation", "conversation": 5},
        {"command": "listDevices", "user": "a", "limit": -1},
        {"command": "listDevices", "user": "a", "limit": 1.5},
        {"command": "createGroup", "owner": "alice", "members": ["bob", "bob"]},
        {"command": "createGroup", "owner": "alice", "members": []},
        {"command": "setGroupRole", "conversation": "g:abc", "users": ["bob"], "role": "owner"},
        {"command": "backup", "name": "../etc"},
        {"command": "getStats"},
    ]})
    errors = [r.get("error", "") for r in reply["responses"]]
    assert "must be an object" in errors[0]
    assert "needs \"command\"" in errors[1]
    assert "unknown command 'noSuchCommand'" in errors[2]
    assert "unknown argument 'typo'" in errors[3]
    assert "missing argument 'conversation'" in errors[4]
    assert "conversation id" in errors[5] and "must be a string" in errors[6]
    assert "integer" in errors[7] and "integer" in errors[8]
    assert "listed twice" in errors[9] and "1.." in errors[10]
    assert "\"member\" or \"admin\"" in errors[11]
    assert "[A-Za-z0-9._-]" in errors[12]
    assert errors[13] == "" and "data" in reply["responses"][13]
    assert b.alive()


def test_oversized_request(make_broker):
    b = control_broker(make_broker, opts={"control_max_bytes": 2048})
    big = json.dumps({"commands": [{"command": "getStats", "correlationData": "x" * 4000}]})
    (r,) = rr(b, big)["responses"]
    assert "control_max_bytes" in r["error"]
    assert "data" in cmd(b, "getStats")


def test_only_admins(make_broker, connect):
    b = control_broker(make_broker)
    # a password user who is not an admin: the broker refuses the SUBSCRIBE and
    # the PUBLISH (mosquitto_rr gets no reply), nothing runs
    assert rr(b, {"commands": [{"command": "getStats"}]}, user="guest",
              password="guest-password", timeout=2) is None
    guest = connect("guest", "x", broker=b, token="guest-password", username="guest",
                    client_id="guest-1", subscribe_inbox=False, v5=True)
    assert guest.subscribe(RESP)[0] >= 0x80
    mid = guest.publish(TOPIC, json.dumps({"commands": [{"command": "createGroup",
                                                          "owner": "guest"}]}), wait=False)
    assert guest.wait_puback(mid) == 0x87
    # a chat device (JWT) is no admin either, whatever its user id
    a = connect("alice", broker=b, v5=True)
    assert a.subscribe(RESP)[0] >= 0x80
    mid = a.publish(TOPIC, b'{"commands":[{"command":"getStats"}]}', wait=False)
    assert a.wait_puback(mid) == 0x87
    assert ok(b, "listConversations", user="guest")["conversations"] == []
    assert "mqchat: control: createGroup" not in b.log_text()


def test_admin_via_chat_jwt_when_listed(make_broker, connect):
    """admin_users names usernames, however they logged in: a JWT user listed
    there is an admin (docs/OPERATIONS.md says to pick names the token service
    never issues)."""
    b = control_broker(make_broker, opts={"admin_users": "opsbot"})
    d = connect("opsbot", broker=b, v5=True)
    assert d.subscribe(RESP)[0] in (0, 1)
    d.publish(TOPIC, b'{"commands":[{"command":"getStats"}]}')
    H.wait_until(lambda: any(t == RESP for t, _ in d.other), what="a control reply")


# ---------------------------------------------------------------------------
# Conversations and groups
# ---------------------------------------------------------------------------

def test_groups_by_operator(make_broker, connect):
    b = control_broker(make_broker)
    alice, bob, carol = (connect(u, broker=b) for u in ("alice", "bob", "carol"))
    g = ok(b, "createGroup", owner="alice", title="ops-made", members=["bob"])
    conv = g["conversation"]
    assert conv.startswith("g:") and g["seq"] == 1
    ev = bob.wait_event(lambda e: e.message.event.type == pb.ConversationEvent.TYPE_CREATED)
    assert ev.message.event.actor_user_id == "alice" and ev.message.event.title == "ops-made"

    info = ok(b, "getConversation", conversation=conv)
    assert info["members"] == 2 and info["head"] == 1 and info["mode"] == "small"
    assert info["posting"] == "everyone" and info["deleted"] is False

    assert ok(b, "addGroupMembers", conversation=conv, users=["carol"])["seq"] == 2
    carol.wait_event(lambda e: e.message.event.type == pb.ConversationEvent.TYPE_MEMBERS_ADDED)
    assert ok(b, "setGroupRole", conversation=conv, users=["bob"], role="admin")["seq"] == 3
    m = ok(b, "listMembers", conversation=conv)
    assert [(x["user"], x["role"]) for x in m["members"]] == [
        ("alice", "owner"), ("bob", "admin"), ("carol", "member")]
    assert ok(b, "removeGroupMembers", conversation=conv, users=["carol"])["seq"] == 4
    removed = carol.wait_event(
        lambda e: e.message.event.type == pb.ConversationEvent.TYPE_MEMBERS_REMOVED)
    assert removed.message.event.actor_user_id == "ops"
    # the rules still hold for operators: nobody removes the owner
    assert "PERMISSION_DENIED" in err(b, "removeGroupMembers", conversation=conv, users=["alice"])
    assert "NOT_FOUND" in err(b, "removeGroupMembers", conversation=conv, users=["zed"])
    assert "UNKNOWN_CONVERSATION" in err(b, "addGroupMembers", conversation="g:nosuch",
                                         users=["bob"])

    bob.send_ok(conv, b"hello")
    lc = ok(b, "listConversations", user="alice", order="activity")
    (s,) = lc["conversations"]
    assert s["conversation"] == conv and s["role"] == "owner" and s["head"] == 5
    assert s["title"] == "ops-made"
    assert s["unread"] == 4 and lc["more"] is False


def test_delete_group(make_broker, connect):
    b = control_broker(make_broker)
    alice, bob = connect("alice", broker=b), connect("bob", broker=b)
    conv = ok(b, "createGroup", owner="alice", members=["bob"])["conversation"]
    alice.send_ok(conv, b"secret plans")
    d = ok(b, "deleteGroup", conversation=conv)
    assert d["seq"] == 3
    ev = bob.wait_event(lambda e: e.message.event.type == pb.ConversationEvent.TYPE_GROUP_DELETED)
    assert ev.message.seq == 3
    info = ok(b, "getConversation", conversation=conv)
    assert info["deleted"] is True and info["members"] == 0 and info["head"] == 3
    ack = alice.send(conv, b"anyone?")
    assert ack.error.code in (pb.ERROR_CODE_NOT_MEMBER, pb.ERROR_CODE_UNKNOWN_CONVERSATION)
    # a device that syncs later sees the event and never the deleted message's body
    late = connect("bob", "tablet", broker=b)
    msgs = [m for m in late.sync_all()[0] if m.conversation_id == conv]
    assert all(b"secret" not in m.body for m in msgs)
    assert any(m.event.type == pb.ConversationEvent.TYPE_GROUP_DELETED for m in msgs)
    assert "not a group" in err(b, "deleteGroup", conversation="d:alice:bob")


# ---------------------------------------------------------------------------
# Users and devices
# ---------------------------------------------------------------------------

def test_devices_disconnect_and_revoke(make_broker, connect, redis):
    b = control_broker(make_broker, opts={"redis": redis.address})
    phone = connect("alice", "phone", broker=b)
    tablet = connect("alice", "tablet", broker=b)
    phone.request_ok(push_register=pb.PushTokenRegister(
        platform=pb.PUSH_PLATFORM_FCM, token="fcm-token-1", app_id="app"))
    phone.send_ok(H.dm("alice", "bob"), b"x")
    head = phone.sync_page().inbox_head
    phone.request_ok(cursor_ack=pb.CursorAck(inbox_seq=head))

    d = ok(b, "listDevices", user="alice")
    devs = {x["device"]: x for x in d["devices"]}
    assert set(devs) == {"phone", "tablet"} and d["more"] is False
    assert devs["phone"]["cursor"] == head and devs["tablet"]["cursor"] == 0
    assert devs["phone"]["connected"] and devs["tablet"]["connected"]
    assert devs["phone"]["push"]["platform"] == "fcm"
    assert devs["phone"]["push"]["token"] == "fcm-token-1" and "push" not in devs["tablet"]
    assert devs["phone"]["lastSeenMs"] > 0

    assert ok(b, "disconnectDevice", user="alice", device="tablet")["disconnected"] == 1
    H.wait_until(lambda: tablet.disconnected, what="the tablet kicked")
    assert phone.connected
    assert "not connected" in err(b, "disconnectDevice", user="alice", device="tablet")
    assert "not connected" in err(b, "disconnectDevice", user="nobody", device="x")

    r = ok(b, "revokeTokens", user="alice")
    assert r["disconnected"] == 1
    H.wait_until(lambda: phone.disconnected, what="the phone kicked")
    with pytest.raises(H.ConnectRefused):
        connect("alice", "phone", broker=b, token=phone.token)
    time.sleep(1.1)  # iat has one-second resolution
    fresh = connect("alice", "phone", broker=b)
    assert fresh.connected
    assert ok(b, "listDevices", user="alice")["tokensRevokedBeforeMs"] == r["beforeMs"]
    # the revocation survives a restart (it is stored)
    b.restart()
    with pytest.raises(H.ConnectRefused):
        connect("alice", "phone", broker=b, token=phone.token)


def test_erase_user(make_broker, connect):
    b = control_broker(make_broker)
    alice, bob = connect("alice", broker=b), connect("bob", broker=b)
    dm = H.dm("alice", "bob")
    conv = ok(b, "createGroup", owner="bob", members=["alice"])["conversation"]
    bob.send_ok(dm, b"bob private 1")
    bob.send_ok(conv, b"bob private 2")
    alice.send_ok(dm, b"alice stays")
    r = ok(b, "eraseUser", user="bob")
    assert r["conversationsLeft"] == 2 and r["messagesErased"] == 2 and r["disconnected"] == 1
    H.wait_until(lambda: bob.disconnected, what="bob kicked")
    with pytest.raises(H.ConnectRefused):
        connect("bob", "phone", broker=b, token=bob.token)
    # alice still has her conversations, with bob's bodies gone
    for c in (dm, conv):
        hist = alice.request_ok(history=pb.HistoryRequest(conversation_id=c)).history.messages
        assert not any(b"bob private" in m.body for m in hist)
        mine = [m for m in hist if m.kind == pb.MESSAGE_KIND_USER and m.sender_user_id == "bob"]
        assert mine and all(m.deleted and not m.body for m in mine)
    hist = alice.request_ok(history=pb.HistoryRequest(conversation_id=dm)).history.messages
    assert any(m.body == b"alice stays" for m in hist)
    assert ok(b, "listConversations", user="bob")["conversations"] == []
    assert ok(b, "listDevices", user="bob")["devices"] == []


# ---------------------------------------------------------------------------
# Store operations
# ---------------------------------------------------------------------------

def test_backup_under_load_and_restore(make_broker, connect):
    b = control_broker(make_broker, opts={"backup_dir": None})
    alice = connect("alice", broker=b)
    bob_phone = connect("bob", broker=b)
    dm = H.dm("alice", "bob")
    acked = []
    stop = threading.Event()

    def loop():
        i = 0
        while not stop.is_set() and i < 5000:
            ack = alice.send(dm, f"m{i}".encode())
            assert not ack.HasField("error"), ack
            acked.append((time.monotonic(), ack.seq, f"m{i}".encode()))
            i += 1

    t = threading.Thread(target=loop)
    t.start()
    try:
        H.wait_until(lambda: len(acked) >= 50, what="50 acked sends")
        started = time.monotonic()
        d = ok(b, "backup", name="nightly")
        assert d["path"].endswith("/nightly")
        assert "exists already" in err(b, "backup", name="nightly")
        H.wait_until(lambda: acked and acked[-1][0] > started + 0.2, what="sends after the backup")
    finally:
        stop.set()
        t.join(30)
    head = bob_phone.sync_page().inbox_head
    bob_phone.request_ok(cursor_ack=pb.CursorAck(inbox_seq=head // 2))
    before = [(s, body) for (at, s, body) in acked if at < started]

    # restore: a fresh broker on a copy of the checkpoint
    r = make_broker(opts={"foreign_users": "defer"}, start=False)
    shutil.copytree(d["path"], r.store_dir)
    r.start()
    a2 = connect("alice", "phone", broker=r)
    hist = []
    before_seq = 0
    for _ in range(200):
        h = a2.request_ok(history=pb.HistoryRequest(conversation_id=dm, before_seq=before_seq,
                                                    limit=200)).history
        hist.extend(h.messages)
        if not h.more:
            break
        before_seq = h.messages[-1].seq
    have = {m.seq: m.body for m in hist}
    for s, body in before:
        assert have.get(s) == body, f"seq {s} missing from the restored store"
    seqs = sorted(have)
    assert seqs == list(range(1, len(seqs) + 1))  # no hole
    # and it takes new writes after what it holds
    assert a2.send_ok(dm, b"after restore").seq == seqs[-1] + 1


def test_resume_and_compact_when_healthy(make_broker):
    b = control_broker(make_broker)
    d = ok(b, "resumeStore")
    assert d["writable"] is True and d["failures"] == 0
    d = ok(b, "compactStore")
    assert d["writable"] is True


def test_retention_by_operator(make_broker, connect):
    b = control_broker(make_broker)
    alice = connect("alice", broker=b)
    conv = ok(b, "createGroup", owner="alice")["conversation"]
    for i in range(10):
        alice.send_ok(conv, f"old {i}".encode())
    ok(b, "setRetention", conversation=conv, maxCount=3)
    got = ok(b, "getConversation", conversation=conv)["retention"]
    assert got["maxCount"] == 3
    ok(b, "compactStore")
    hist = alice.request_ok(history=pb.HistoryRequest(conversation_id=conv)).history.messages
    live = [m for m in hist if not m.expired]
    assert [m.seq for m in live] == [11, 10, 9]
    assert all(not m.body for m in hist if m.expired)
    # the head survives: seqs continue
    assert alice.send_ok(conv, b"new").seq == 12
    assert "no such conversation" in err(b, "setRetention", conversation="g:nosuch", maxCount=1)


def test_garbage_never_crashes(make_broker, connect):
    """Random mutations of valid requests, sent as fast as the admin can:
    every one is answered (an error or data), the broker stays up."""
    import random
    b = control_broker(make_broker)
    connect("alice", broker=b)
    admin = connect("ops", "x", broker=b, token=OPS_PASSWORD, username="ops",
                    client_id="ops-fuzz", subscribe_inbox=False, v5=True)
    assert admin.subscribe(RESP)[0] in (0, 1)
    seeds = [
        {"commands": [{"command": "getStats"}]},
        {"commands": [{"command": "createGroup", "owner": "alice", "members": ["bob"],
                       "title": "t", "posting": "admins"}]},
        {"commands": [{"command": "listDevices", "user": "alice", "limit": 5}]},
        {"commands": [{"command": "setRetention", "conversation": "g:abc", "maxCount": 3}]},
        {"commands": [{"command": "listConversations", "user": "alice", "order": "activity"}]},
    ]
    rnd = random.Random(1234)
    values = [None, True, 0, -1, 1e300, 2 ** 64, "", "a" * 300, "g:" + "x" * 70, [], {}, ["a"] * 3,
              "d:b:a", "\u00e9", [1, 2], {"a": {"b": [None]}}]
    sent = 0
    for i in range(300):
        req = json.loads(json.dumps(rnd.choice(seeds)))
        c = req["commands"][0]
        for _ in range(rnd.randint(1, 3)):
            k = rnd.choice(list(c.keys()) + ["extra"])
            c[k] = rnd.choice(values)
        raw = json.dumps(req).encode()
        if rnd.random() < 0.3:
            cut = rnd.randrange(len(raw))
            raw = raw[:cut] + bytes([rnd.randrange(256)]) + raw[cut + 1:]
        admin.publish(TOPIC, raw, qos=1)
        sent += 1
    H.wait_until(lambda: sum(t == RESP for t, _ in admin.other) >= sent, timeout=30,
                 what="an answer to every request")
    for t, payload in admin.other:
        if t == RESP:
            for r in json.loads(payload)["responses"]:
                assert ("error" in r) != ("data" in r), r
    assert b.alive()
    assert "data" in cmd(b, "getStats")
