"""Push notifications, broker side (docs/PUSH.md), against a real
redis-server: token registration and its validation, the jobs a message
writes into {prefix}push (every field), previews, the pushseen keys, large
groups (one collapsed job per interval, pushpend), pushd's feedback
stream, Redis down or frozen, a broker killed with -9 after the SendAck,
and push_outbox_max.

No pushd runs here: the tests read the job stream with XRANGE and write
feedback entries as pushd would.

"No job was written" is shown with a barrier: the drain thread moves
device jobs to Redis in outbox order, so once the job of a later message
(to the sentinel user below) is in the stream, any job an earlier message
wrote is there too. In large groups the sentinel is a member whose
pushpend key the test deletes, so every expansion pushes it; it sorts last
among the members, so its entry is the last of the expansion's."""

import re
import secrets
import time

import mqchat_harness as H
from mqchat_harness import pb

KEY = "mqchat:"               # the default redis_prefix
STREAM = KEY + "push"
FEEDBACK = KEY + "push:feedback"
NODE = "n1"

APNS = pb.PUSH_PLATFORM_APNS
SANDBOX = pb.PUSH_PLATFORM_APNS_SANDBOX
FCM = pb.PUSH_PLATFORM_FCM
UNSPECIFIED = pb.PUSH_PLATFORM_UNSPECIFIED

SENTINEL = "zsent"            # sorts after every other user id used here
SCALE = max(1.0, H.WAIT / 10)

# Every field of a job (docs/PUSH.md, "The job stream"); preview only with
# push_preview=1 and plain text.
FIELDS = {"v", "job", "platform", "token", "app", "user", "device", "conv", "seq",
          "sender", "collapse", "badge", "ts", "prio"}


def popts(redis, **kw):
    o = {"redis": redis.address, "node_id": NODE, "presence_debounce_ms": 0}
    o.update(kw)
    return o


def now_ms():
    return int(time.time() * 1000)


def apns_token(n=32):
    return secrets.token_hex(n)


def fcm_token():
    return "fcm-" + secrets.token_urlsafe(24).replace("-", "_") + ":APA91b.x-y"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def register(dev, platform, token, app=""):
    return dev.request(push_register=pb.PushTokenRegister(platform=platform, token=token,
                                                          app_id=app))


def register_ok(dev, platform, token, app=""):
    r = register(dev, platform, token, app)
    assert r.WhichOneof("body") == "ok", f"{dev}: push_register answered {H.describe(r)}"


def unregister(dev):
    return dev.request(push_unregister=pb.PushTokenUnregister())


def sess_of(redis, user, device):
    return redis.cmd("HGET", f"{KEY}sess:{user}", device)


def pushseen(redis, user, device):
    v = redis.cmd("GET", f"{KEY}pushseen:{user}:{device}")
    return int(v) if v is not None else None


def wait_online(dev, redis):
    """Waits until Redis has the device's session (its connect was written)."""
    H.wait_until(lambda: sess_of(redis, dev.user, dev.device) is not None,
                 what=f"{dev.user}:{dev.device} in {KEY}sess:{dev.user}")


def go_offline(dev, redis):
    """Closes the device and waits until the broker and Redis know it left
    (session gone, pushseen at the close minus 1 ms). Returns the close time."""
    wait_online(dev, redis)
    t = now_ms()
    dev.close()
    H.wait_until(lambda: sess_of(redis, dev.user, dev.device) is None
                 and (pushseen(redis, dev.user, dev.device) or 0) >= t - 1,
                 what=f"{dev.user}:{dev.device} gone from Redis, pushseen >= {t}")
    return t


def with_token(connect, b, redis, user, device, platform, token, app="", stay=False):
    """Connects user:device, registers the token, and (unless stay) leaves."""
    d = connect(user, device, broker=b)
    register_ok(d, platform, token, app)
    if not stay:
        go_offline(d, redis)
    return d


def entries(redis, key=STREAM):
    """The stream's entries as dicts (field -> value, plus '_id'); a field
    given twice is recorded in '_dup'."""
    out = []
    for eid, flat in redis.cmd("XRANGE", key, "-", "+") or []:
        e = {"_id": eid}
        dup = []
        for k, v in zip(flat[0::2], flat[1::2]):
            if k in e:
                dup.append(k)
            e[k] = v
        if dup:
            e["_dup"] = dup
        out.append(e)
    return out


def of(es, user, device=None):
    return [e for e in es if e.get("user") == user and (device is None or e.get("device") == device)]


def summ(es):
    return [f"{e.get('user')}:{e.get('device')} conv={e.get('conv')} seq={e.get('seq')} "
            f"job={e.get('job')}" for e in es]


def wait_entry(redis, pred, what, timeout=H.WAIT):
    """Waits for a stream entry matching pred; returns the entries then."""
    def find():
        es = entries(redis)
        return es if any(pred(e) for e in es) else None
    return H.wait_until(find, timeout=timeout, interval=0.03, what=what)


def sentinel(connect, b, redis):
    """The sentinel user's device: an FCM token, offline."""
    with_token(connect, b, redis, SENTINEL, "s1", FCM, fcm_token())


def barrier(sender, redis):
    """A message to the sentinel; returns the stream's entries once its job
    is in (so every job written before it is too)."""
    conv = H.dm(sender.user, SENTINEL)
    ack = sender.send_ok(conv, b"barrier")
    return wait_entry(redis, lambda e: e.get("user") == SENTINEL and e.get("conv") == conv
                      and e.get("seq") == str(ack.seq), f"the barrier job (seq {ack.seq})")


def not_sentinel(es):
    return [e for e in es if e.get("user") != SENTINEL]


def check_job(e, *, platform, token, app, user, device, conv, ack, sender, preview=None,
              job_re=rf"{NODE}:[0-9]+"):
    """Every field of one job as docs/PUSH.md has it."""
    assert "_dup" not in e, f"fields given twice: {e['_dup']} in {e}"
    want = FIELDS | ({"preview"} if preview is not None else set())
    assert set(e) - {"_id"} == want, \
        f"fields {sorted(set(e) - {'_id'})}, expected {sorted(want)}"
    assert e["v"] == "1"
    assert re.fullmatch(job_re, e["job"]), f"job id {e['job']!r}"
    assert (e["platform"], e["token"], e["app"]) == (platform, token, app), e
    assert (e["user"], e["device"]) == (user, device), e
    assert (e["conv"], e["seq"], e["sender"]) == (conv, str(ack.seq), sender), \
        f"{e} vs SendAck seq {ack.seq}"
    assert len(e["collapse"]) <= 64 and e["collapse"].isascii() and e["collapse"].isprintable()
    if len(conv) <= 64:
        assert e["collapse"] == conv, e
    assert e["badge"] == "" or (e["badge"].isdigit() and int(e["badge"]) < 2 ** 31), e
    assert e["ts"] == str(ack.server_time_ms), f"ts {e['ts']} vs SendAck {ack.server_time_ms}"
    assert e["prio"] in ("high", "normal"), e
    if preview is not None:
        assert e["preview"] == preview, f"preview {e['preview']!r}, expected {preview!r}"


def log_has(b, text):
    return text in b.log_text()


# ---------------------------------------------------------------------------
# 1. Tokens
# ---------------------------------------------------------------------------

def test_token_registration_validation_refresh_unregister(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    sentinel(connect, b, redis)
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)

    # accepted: every platform, with and without an app id
    register_ok(bob, APNS, apns_token(), "com.example.chat")
    register_ok(bob, SANDBOX, apns_token(100).upper())            # 200 hex digits
    register_ok(bob, FCM, "a" * 4096)
    register_ok(bob, FCM, fcm_token(), "app_1.x-y")

    refused = {
        "APNs not hex": (APNS, "g" * 64, ""),
        "APNs too short": (APNS, apns_token(31), ""),             # 62 digits
        "APNs odd length": (APNS, apns_token(32) + "a", ""),
        "APNs too long": (APNS, apns_token(101), ""),             # 202 digits
        "sandbox not hex": (SANDBOX, "0x" + apns_token(31), ""),
        "APNs empty": (APNS, "", ""),
        "FCM slash": (FCM, "abc/def", ""),
        "FCM space": (FCM, "abc def", ""),
        "FCM empty": (FCM, "", ""),
        "FCM too long": (FCM, "a" * 4097, ""),
        "app id slash": (APNS, apns_token(), "com.example/chat"),
        "app id space": (FCM, fcm_token(), "my app"),
        "app id too long": (FCM, fcm_token(), "a" * 256),
        "UNSPECIFIED platform": (UNSPECIFIED, apns_token(), ""),
        "unknown platform": (7, apns_token(), ""),
    }
    for what, (pl, tok, app) in refused.items():
        r = register(bob, pl, tok, app)
        assert H.is_error(r, "INVALID_ARGUMENT"), f"{what}: answered {H.describe(r)}"

    # refresh replaces: the job carries the newest token (not a refused one)
    old, new = apns_token(), apns_token()
    register_ok(bob, APNS, old, "com.example.chat")
    register_ok(bob, SANDBOX, new, "com.example.dev")
    assert H.is_error(register(bob, FCM, "bad token", ""), "INVALID_ARGUMENT")
    go_offline(bob, redis)
    ack = alice.send_ok(H.dm("alice", "bob"), b"hi")
    es = not_sentinel(barrier(alice, redis))
    assert len(es) == 1, summ(es)
    check_job(es[0], platform="apns-sandbox", token=new, app="com.example.dev", user="bob",
              device="phone", conv=H.dm("alice", "bob"), ack=ack, sender="alice")

    # unregister removes it: no job after
    bob = connect("bob", broker=b)
    r = unregister(bob)
    assert r.WhichOneof("body") == "ok", H.describe(r)
    r = unregister(bob)  # again: nothing to remove, still fine
    assert r.WhichOneof("body") == "ok", H.describe(r)
    go_offline(bob, redis)
    redis.cmd("DEL", STREAM)
    alice.send_ok(H.dm("alice", "bob"), b"after unregister")
    es = not_sentinel(barrier(alice, redis))
    assert es == [], f"jobs after unregister: {summ(es)}"

    # without Redis (and with push 0): UNSUPPORTED, for valid requests
    nb = make_broker(name="noredis")
    carol = connect("carol", broker=nb)
    assert H.is_error(register(carol, APNS, apns_token()), "UNSUPPORTED")
    assert H.is_error(unregister(carol), "UNSUPPORTED")
    ob = make_broker(opts=popts(redis, push=0), name="pushoff")
    dave = connect("dave", broker=ob)
    assert H.is_error(register(dave, FCM, fcm_token()), "UNSUPPORTED")
    assert H.is_error(unregister(dave), "UNSUPPORTED")


# ---------------------------------------------------------------------------
# 2. The jobs a message writes
# ---------------------------------------------------------------------------

def test_job_fields_offline_online_sender_and_group(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    sentinel(connect, b, redis)
    ab = H.dm("alice", "bob")
    bob_tok, tab_tok, lap_tok = apns_token(), fcm_token(), apns_token()
    with_token(connect, b, redis, "bob", "phone", APNS, bob_tok, "com.example.chat")
    bob_tab = with_token(connect, b, redis, "bob", "tablet", FCM, tab_tok, stay=True)
    with_token(connect, b, redis, "alice", "laptop", APNS, lap_tok)   # the sender's own
    alice = connect("alice", broker=b)
    register_ok(alice, FCM, fcm_token())                              # the sender, online

    ack = alice.send_ok(ab, b"secret body text", content_type="text/plain")
    es = not_sentinel(barrier(alice, redis))
    assert len(es) == 1, f"one job (bob's offline phone) expected: {summ(es)}"
    e = es[0]
    check_job(e, platform="apns", token=bob_tok, app="com.example.chat", user="bob",
              device="phone", conv=ab, ack=ack, sender="alice")
    assert "preview" not in e and "body" not in e
    assert all("secret" not in v for v in e.values()), e
    assert bob_tab.wait_messages(1, conv=ab)[0].seq == ack.seq   # online: it has it live

    # a long conversation id: the collapse key is cut to 64 printable bytes
    long_user = "u" * 70
    lt = apns_token()
    with_token(connect, b, redis, long_user, "phone", APNS, lt)
    lconv = H.dm("alice", long_user)
    lack = alice.send_ok(lconv, b"x")
    es = barrier(alice, redis)
    le = [x for x in es if x.get("conv") == lconv]
    assert len(le) == 1, summ(es)
    check_job(le[0], platform="apns", token=lt, app="", user=long_user, device="phone",
              conv=lconv, ack=lack, sender="alice")
    assert le[0]["collapse"] != lconv and len(le[0]["collapse"]) == 64, le[0]["collapse"]

    # a group of 4: two offline members with tokens -> two jobs
    redis.cmd("DEL", STREAM)
    c_tok = fcm_token()
    with_token(connect, b, redis, "carol", "phone", FCM, c_tok)
    dave = with_token(connect, b, redis, "dave", "phone", APNS, apns_token(), stay=True)
    r = alice.request_ok(group_create=pb.GroupCreate(title="g", member_ids=["bob", "carol",
                                                                            "dave"]))
    g = r.group.conversation_id
    es = not_sentinel(barrier(alice, redis))
    assert es == [], f"a group creation writes no push: {summ(es)}"
    redis.cmd("DEL", STREAM)
    gack = alice.send_ok(g, b"to the group")
    es = not_sentinel(barrier(alice, redis))
    assert sorted((x["user"], x["device"]) for x in es) == [("bob", "phone"), ("carol", "phone")], \
        summ(es)
    ids = [x["job"] for x in es]
    assert len(set(ids)) == 2, ids
    for x in es:
        tok = bob_tok if x["user"] == "bob" else c_tok
        check_job(x, platform="apns" if x["user"] == "bob" else "fcm", token=tok,
                  app="com.example.chat" if x["user"] == "bob" else "", user=x["user"],
                  device="phone", conv=g, ack=gack, sender="alice")
    assert dave.wait_messages(1, conv=g)[-1].seq == gack.seq


# ---------------------------------------------------------------------------
# 3. Previews
# ---------------------------------------------------------------------------

def test_preview(redis, make_broker, connect):
    b = make_broker(opts=popts(redis, push_preview=1))
    sentinel(connect, b, redis)
    tok = fcm_token()
    with_token(connect, b, redis, "bob", "phone", FCM, tok)
    alice = connect("alice", broker=b)
    ab = H.dm("alice", "bob")

    cases = [
        # (content_type, body, expected preview or None)
        ("text/plain", "héllo wörld", "héllo wörld"),
        ("text/plain; charset=utf-8", "x" * 200, "x" * 120),
        ("text/plain", "a" + "€" * 50, "a" + "€" * 39),         # 118 bytes, not 120
        ("text/plain", "ab" + "😀" * 40, "ab" + "😀" * 29),      # 118 bytes
        ("text/plain", "€" * 40 + "z", "€" * 40),               # exactly 120 bytes
        ("text/plain", "€" * 41, "€" * 40),
        ("text/plain", "ü" * 61, "ü" * 60),                     # 2-byte chars: 120
        ("text/plain; encrypted=1", "secret1", None),
        ("application/x-mqchat-encrypted", "secret2", None),
        ("text/plain+encrypted", "secret3", None),
        ("image/jpeg", "secret4", None),
        ("text/html", "<b>secret5</b>", None),
        ("text/plain", b"secret6 \xff\xfe not utf-8", None),
    ]
    acks = []
    for ct, body, _ in cases:
        acks.append(alice.send_ok(ab, body.encode() if isinstance(body, str) else body,
                                  content_type=ct))
    es = not_sentinel(barrier(alice, redis))
    by_seq = {e["seq"]: e for e in es}
    assert len(es) == len(cases) and len(by_seq) == len(cases), summ(es)
    for (ct, body, want), ack in zip(cases, acks):
        e = by_seq[str(ack.seq)]
        check_job(e, platform="fcm", token=tok, app="", user="bob", device="phone", conv=ab,
                  ack=ack, sender="alice", preview=want)
        if want is None:
            assert "preview" not in e and all("secret" not in v for v in e.values()), \
                f"{ct}: {e}"
        else:
            assert len(e["preview"].encode()) <= 120, ct


# ---------------------------------------------------------------------------
# 4. pushseen
# ---------------------------------------------------------------------------

def test_pushseen_at_connect_and_disconnect(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    for _ in range(2):
        t0 = now_ms()
        bob = connect("bob", "phone", broker=b)
        v = H.wait_until(lambda: (lambda s: s if s and s >= t0 else None)(
            pushseen(redis, "bob", "phone")), what="pushseen after connect")
        assert v <= now_ms() + 5, (v, t0)
        assert redis.cmd("TTL", f"{KEY}pushseen:bob:phone") > 0
        time.sleep(0.02)
        t2 = now_ms()
        bob.close()
        v2 = H.wait_until(lambda: (lambda s: s if s and s >= t2 - 1 else None)(
            pushseen(redis, "bob", "phone")), what="pushseen after disconnect")
        assert v2 > v and v2 <= now_ms() + 5  # the disconnect's time - 1 ms
        time.sleep(0.02)
    assert pushseen(redis, "bob", "laptop") is None  # only devices that were here


def test_pushseen_after_redis_returns_is_the_connect_time(redis, make_broker, connect):
    """A device that connected while Redis was away gets its pushseen from
    the rebuild when Redis is back: its connect time, not 0."""
    b = make_broker(opts=popts(redis))
    redis.stop()
    t0 = now_ms()
    bob = connect("bob", "phone", broker=b)
    t1 = now_ms()
    redis.start()
    v = H.wait_until(lambda: pushseen(redis, "bob", "phone"), timeout=15,
                     what="pushseen written by the rebuild")
    assert t0 <= v <= t1, (t0, v, t1)
    bob.close()


# ---------------------------------------------------------------------------
# 5. Large groups
# ---------------------------------------------------------------------------

def test_large_group_collapse_and_pushpend(redis, make_broker, connect):
    interval_ms = 400
    b = make_broker(opts=popts(redis, large_group_members=4, push_large_interval_ms=interval_ms))
    bob_tok, s_tok = apns_token(), fcm_token()
    bob = with_token(connect, b, redis, "bob", "phone", APNS, bob_tok, "com.example.chat")
    with_token(connect, b, redis, SENTINEL, "s1", FCM, s_tok)
    with_token(connect, b, redis, "alice", "tab", APNS, apns_token())   # the sender's own
    carol = with_token(connect, b, redis, "carol", "phone", FCM, fcm_token(), stay=True)
    alice = connect("alice", broker=b)
    g = alice.request_ok(group_create=pb.GroupCreate(
        title="big", member_ids=["bob", "carol", "dave", SENTINEL])).group.conversation_id
    wait_online(carol, redis)

    def pend_key(user, dev):
        return f"{KEY}pushpend:{g}:{user}:{dev}"

    def round_(bodies, during=None):
        """Sends bodies at once; waits for the sentinel's job about the last;
        returns (acks, entries, entries of this round for non-sentinels)."""
        redis.cmd("DEL", pend_key(SENTINEL, "s1"))
        before = {e["_id"] for e in entries(redis)}
        t = time.monotonic()
        acks = alice.send_many(g, bodies)
        round_.send_s = time.monotonic() - t
        if during:
            during()
        es = wait_entry(redis, lambda e: e.get("user") == SENTINEL
                        and e.get("seq") == str(acks[-1].seq),
                        f"the sentinel's job for seq {acks[-1].seq}",
                        timeout=H.WAIT + interval_ms / 1000)
        new = [e for e in es if e["_id"] not in before]
        s = of(new, SENTINEL)
        assert len(s) == 1, f"one sentinel job per interval: {summ(new)}"
        return acks, s[0], [e for e in new if e.get("user") != SENTINEL]

    # several messages within one interval: one job per device, the latest seq
    acks, s, new = round_([f"m{i}".encode() for i in range(4)])
    sent_s = round_.send_s
    assert sent_s < interval_ms / 1000, f"the sends took {sent_s:.2f} s: longer than the interval"
    assert [(e["user"], e["device"]) for e in new] == [("bob", "phone")], summ(new)
    e = new[0]
    check_job(e, platform="apns", token=bob_tok, app="com.example.chat", user="bob",
              device="phone", conv=g, ack=acks[-1], sender="alice",
              job_re=rf"{NODE}:[0-9]+:[0-9]+")
    check_job(s, platform="fcm", token=s_tok, app="", user=SENTINEL, device="s1", conv=g,
              ack=acks[-1], sender="alice", job_re=rf"{NODE}:[0-9]+:[0-9]+")
    assert e["job"] != s["job"]
    # held for the interval: not expanded at once
    added_ms = int(e["_id"].split("-")[0])
    assert added_ms >= acks[0].server_time_ms + interval_ms - 50, \
        f"expanded {added_ms - acks[0].server_time_ms} ms after the first message"
    pend = redis.cmd("GET", pend_key("bob", "phone"))
    assert pend is not None and int(pend) > pushseen(redis, "bob", "phone")
    time.sleep(0.1)
    assert len(of(entries(redis), "bob")) == 1

    # a later message while bob's push is unseen: nothing new for bob
    acks2, s2, new2 = round_([b"later"])
    assert new2 == [], f"bob's first push is unseen: {summ(new2)}"
    assert s2["seq"] == str(acks2[-1].seq)

    # bob comes and goes: pushseen moves past pushpend, the next one is pushed
    bob = connect("bob", "phone", broker=b)
    go_offline(bob, redis)
    time.sleep(0.01)  # a message stored in a later millisecond than the leave
    acks3, s3, new3 = round_([b"after bob was here", b"and another"])
    assert [(x["user"], x["device"]) for x in new3] == [("bob", "phone")], summ(new3)
    check_job(new3[0], platform="apns", token=bob_tok, app="com.example.chat", user="bob",
              device="phone", conv=g, ack=acks3[-1], sender="alice",
              job_re=rf"{NODE}:[0-9]+:[0-9]+")
    assert len({x["job"] for x in entries(redis)}) == len(entries(redis)), "job ids unique"

    # dave (a token only now) is here when the message is stored and leaves
    # before the expansion: pushseen is not older than the message, no push
    dave = connect("dave", "phone", broker=b)
    register_ok(dave, FCM, fcm_token())
    wait_online(dave, redis)
    acks4, s4, new4 = round_([b"while dave is here"], during=lambda: go_offline(dave, redis))
    assert pushseen(redis, "dave", "phone") >= acks4[-1].server_time_ms
    assert int(s4["_id"].split("-")[0]) > pushseen(redis, "dave", "phone"), \
        "dave left only after the expansion: inconclusive (too slow)"
    assert new4 == [], f"bob's push is unseen, dave was here: {summ(new4)}"

    es = entries(redis)
    assert of(es, "carol") == [] and of(es, "alice") == [] and of(es, "dave") == [], summ(es)
    got = [m.seq for m in carol.wait_messages(9, conv=g) if m.kind == pb.MESSAGE_KIND_USER]
    assert got == [a.seq for a in acks + acks2 + acks3 + acks4], got


# ---------------------------------------------------------------------------
# 6. Feedback
# ---------------------------------------------------------------------------

def test_feedback_removes_only_the_current_token(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    sentinel(connect, b, redis)
    ab = H.dm("alice", "bob")
    old, cur, lap = fcm_token(), fcm_token(), apns_token()
    phone = with_token(connect, b, redis, "bob", "phone", FCM, old, stay=True)
    register_ok(phone, FCM, cur)       # refreshed: `old` is stale now
    go_offline(phone, redis)
    with_token(connect, b, redis, "bob", "laptop", APNS, lap)
    alice = connect("alice", broker=b)
    alice.send_ok(ab, b"one")
    es = not_sentinel(barrier(alice, redis))   # the drain thread is connected
    assert sorted((e["device"], e["token"]) for e in es) == [("laptop", lap), ("phone", cur)]

    # pushd reports the phone's OLD token and the laptop's current one
    ts = str(now_ms())
    t0 = time.monotonic()
    ids = [redis.cmd("XADD", FEEDBACK, "*", "platform", "fcm", "token", old, "user", "bob",
                     "device", "phone", "reason", "UNREGISTERED", "ts", ts),
           redis.cmd("XADD", FEEDBACK, "*", "platform", "apns", "token", lap, "user", "bob",
                     "device", "laptop", "reason", "Unregistered", "ts", ts)]

    def consumed():
        groups = redis.cmd("XINFO", "GROUPS", FEEDBACK)
        for gr in groups:
            d = dict(zip(gr[0::2], gr[1::2]))
            if d.get("name") == "mqchat":
                return d.get("last-delivered-id") == ids[-1] and d.get("pending") == 0
        return False
    H.wait_until(consumed, timeout=7 * SCALE, interval=0.1,
                 what="the plugin read and acknowledged the feedback")
    took = time.monotonic() - t0
    assert took < 6.5 * SCALE, f"feedback took {took:.1f} s"

    redis.cmd("DEL", STREAM)
    ack = alice.send_ok(ab, b"two")
    es = not_sentinel(barrier(alice, redis))
    assert [(e["device"], e["token"]) for e in es] == [("phone", cur)], \
        f"the laptop's token is gone, the phone's current one stays: {summ(es)}"
    check_job(es[0], platform="fcm", token=cur, app="", user="bob", device="phone", conv=ab,
              ack=ack, sender="alice")


# ---------------------------------------------------------------------------
# 7. Redis down, frozen; the broker killed
# ---------------------------------------------------------------------------

def check_arrived(es, acks, conv, exactly_once):
    """Every ack's job is in es, in send order of first appearance; with
    exactly_once no job id twice, else duplicates are copies."""
    mine = [e for e in es if e.get("conv") == conv]
    first = []
    seen = {}
    for e in mine:
        if e["job"] in seen:
            assert not exactly_once, f"job {e['job']} twice: {summ(mine)}"
            a, bb = dict(seen[e["job"]]), dict(e)
            a.pop("_id"), bb.pop("_id")
            assert a == bb, f"a duplicate differs: {a} vs {bb}"
            continue
        seen[e["job"]] = e
        first.append(e)
    assert [e["seq"] for e in first] == [str(a.seq) for a in acks], summ(mine)
    return len(mine) - len(first)


def test_redis_down_then_back(redis, make_broker, connect):
    b = make_broker(opts=popts(redis, redis_timeout_ms=300))
    tok = fcm_token()
    with_token(connect, b, redis, "bob", "phone", FCM, tok)
    alice = connect("alice", broker=b)
    ab = H.dm("alice", "bob")
    a0 = alice.send_ok(ab, b"before")
    wait_entry(redis, lambda e: e.get("seq") == str(a0.seq), "the first job")

    # killed (every key lost), messages sent, started again
    redis.kill9()
    acks = [alice.send_ok(ab, f"down {i}".encode()) for i in range(5)]
    H.wait_until(lambda: log_has(b, "jobs wait in the outbox"),
                 what="the log saying jobs wait")
    time.sleep(0.3)
    acks += alice.send_many(ab, [b"down 5", b"down 6"])
    redis.start()
    # a job written now makes the drain thread retry at once (without one
    # it waits out its backoff, up to 30 s: see the report)
    acks.append(alice.send_ok(ab, b"after the restart"))
    H.wait_until(lambda: len(entries(redis)) >= len(acks), timeout=H.WAIT + 3,
                 what=f"{len(acks)} jobs after Redis came back")
    time.sleep(0.3)
    es = entries(redis)
    check_arrived(es, acks, ab, exactly_once=True)
    assert len(es) == len(acks), summ(es)
    for e, a in zip(es, acks):
        check_job(e, platform="fcm", token=tok, app="", user="bob", device="phone", conv=ab,
                  ack=a, sender="alice")

    # frozen (keys kept, the connection hangs): at least once, none missing
    redis.cmd("DEL", STREAM)
    redis.freeze()
    facks = [alice.send_ok(ab, f"frozen {i}".encode(), timeout=H.WAIT) for i in range(3)]
    time.sleep(0.8)   # past redis_timeout_ms
    facks += [alice.send_ok(ab, b"frozen 3")]
    redis.thaw()
    H.wait_until(lambda: len({e["job"] for e in entries(redis)}) >= len(facks),
                 timeout=H.WAIT + 3, what="the jobs sent while Redis was frozen")
    time.sleep(0.3)
    dups = check_arrived(entries(redis), facks, ab, exactly_once=False)
    print(f"frozen Redis: {dups} duplicate job(s)")


def test_broker_kill9_after_sendack_keeps_the_job(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    tok = apns_token()
    with_token(connect, b, redis, "bob", "phone", APNS, tok)
    ab = H.dm("alice", "bob")

    # Redis up: killed right after the SendAck
    alice = connect("alice", broker=b)
    a1 = alice.send_ok(ab, b"one")
    b.kill9()
    alice.close()
    b.start()
    es = wait_entry(redis, lambda e: e.get("seq") == str(a1.seq), "the job after the restart")
    mine = [e for e in es if e.get("seq") == str(a1.seq)]
    assert len({e["job"] for e in mine}) == 1, f"one job id (a copy allowed): {summ(mine)}"
    check_job(mine[0], platform="apns", token=tok, app="", user="bob", device="phone", conv=ab,
              ack=a1, sender="alice")

    # Redis down: the job exists only in the broker's outbox when it dies
    redis.kill9()
    alice = connect("alice", broker=b)
    a2 = alice.send_ok(ab, b"two")
    b.kill9()
    alice.close()
    redis.start()
    b.start()
    es = wait_entry(redis, lambda e: e.get("seq") == str(a2.seq),
                    "the job that waited in the outbox through the kill")
    mine = [e for e in es if e.get("seq") == str(a2.seq)]
    assert len({e["job"] for e in mine}) == 1, summ(mine)
    check_job(mine[0], platform="apns", token=tok, app="", user="bob", device="phone", conv=ab,
              ack=a2, sender="alice")
    assert all(e.get("seq") == str(a2.seq) for e in es), summ(es)


# ---------------------------------------------------------------------------
# 8. push_outbox_max
# ---------------------------------------------------------------------------

def test_outbox_max_drops_pushes_not_messages(redis, make_broker, connect):
    b = make_broker(opts=popts(redis, push_outbox_max=1000, redis_timeout_ms=300))
    tok = fcm_token()
    with_token(connect, b, redis, "bob", "phone", FCM, tok)
    alice = connect("alice", broker=b)
    ab = H.dm("alice", "bob")
    a0 = alice.send_ok(ab, b"before")
    wait_entry(redis, lambda e: e.get("seq") == str(a0.seq), "the first job")
    redis.cmd("DEL", STREAM)

    redis.kill9()
    kept = []
    for i in range(0, 1010, 202):
        kept += alice.send_many(ab, [f"k{j}".encode() for j in range(i, i + 202)],
                                timeout=H.WAIT * 2)
    H.wait_until(lambda: log_has(b, "new pushes are dropped"), timeout=H.WAIT,
                 what="the log saying new pushes are dropped")
    assert "(push_outbox_max)" in b.log_text()
    dropped = alice.send_many(ab, [f"d{j}".encode() for j in range(5)])
    assert all(not a.HasField("error") and a.seq for a in dropped)

    redis.start()
    # nothing kicks the drain thread now (no job is written): it comes back
    # after its backoff, at most 30 s
    H.wait_until(lambda: log_has(b, "pushes are written again"), timeout=30 + H.WAIT,
                 what="the log saying pushes are written again")
    after = alice.send_ok(ab, b"after")
    es = wait_entry(redis, lambda e: e.get("seq") == str(after.seq), "a job after Redis came back")
    seqs = [int(e["seq"]) for e in es]
    # the jobs written before the outbox was full: a prefix of `kept`, at
    # least push_outbox_max of them; none of `dropped`; then `after`
    n = len(seqs) - 1
    assert n >= 1000 and seqs == [a.seq for a in kept][:n] + [after.seq], \
        f"{len(seqs)} jobs: {seqs[:3]}..{seqs[-3:]}; dropped seqs {[a.seq for a in dropped]}"
    assert len({e["job"] for e in es}) == len(es)

    # every message is stored all the same
    bob = connect("bob", broker=b)
    msgs, _ = bob.sync_all()
    got = [m.seq for m in msgs if m.conversation_id == ab]
    assert got == [a0.seq] + [a.seq for a in kept + dropped] + [after.seq]
    go_offline(bob, redis)

    # a restart with a long outbox history behind it: pushes still flow
    b.stop()
    b.start()
    alice2 = connect("alice", "tab", broker=b)
    redis.cmd("DEL", STREAM)
    a2 = alice2.send_ok(ab, b"after the restart")
    wait_entry(redis, lambda e: e.get("seq") == str(a2.seq), "a job after the broker restarted")


# ---------------------------------------------------------------------------
# Redis that takes connections but refuses the XADD
# ---------------------------------------------------------------------------

def test_refused_xadd_backs_off_and_recovers(redis, make_broker, connect):
    """A {prefix}push key of the wrong type: every XADD is refused while
    connecting works. The drain thread must back off (it used to reconnect
    in a tight loop, thousands of times a second, two log lines each), keep
    the jobs, and send them once the key is fixed."""
    b = make_broker(opts=popts(redis))
    tok = fcm_token()
    with_token(connect, b, redis, "bob", "phone", FCM, tok)
    alice = connect("alice", broker=b)
    ab = H.dm("alice", "bob")
    a0 = alice.send_ok(ab, b"first")
    wait_entry(redis, lambda e: e.get("seq") == str(a0.seq), "the first job")

    redis.cmd("SET", STREAM, "not a stream")
    before = redis.command_calls().get("xgroup|create", 0)
    a1 = alice.send_ok(ab, b"refused")
    time.sleep(1.5)
    reconnects = redis.command_calls().get("xgroup|create", 0) - before
    assert 1 <= reconnects <= 30, f"{reconnects} reconnects in 1.5 s"
    assert b.log_text().count("lost Redis") <= 30
    assert redis.cmd("TYPE", STREAM) == "string"

    redis.cmd("DEL", STREAM)
    a2 = alice.send_ok(ab, b"after the fix")   # a new job: the thread retries at once
    es = wait_entry(redis, lambda e: e.get("seq") == str(a2.seq), "the jobs after the fix")
    assert [e["seq"] for e in es] == [str(a1.seq), str(a2.seq)], summ(es)
    assert len({e["job"] for e in es}) == 2
