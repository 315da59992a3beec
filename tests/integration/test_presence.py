"""Presence against a real redis-server (docs/PROTOCOL.md "Presence",
docs/OPERATIONS.md "Presence and Redis"): watch answers and events, the
debounce, keepalive timeouts, privacy settings, the watch limit, the Redis
registry keys, Redis load at steady state, a broker killed with -9, Redis
killed (keys lost), frozen (keys kept) or made slow, and presence off
without `redis`.

Every broker here runs with presence_debounce_ms 500 and node_ttl_s 3 so
the whole file stays well under a minute and a half."""

import socket
import struct
import threading
import time

import mqchat_harness as H
from mqchat_harness import pb

AB = H.dm("alice", "bob")

ONLINE = pb.PRESENCE_STATE_ONLINE
OFFLINE = pb.PRESENCE_STATE_OFFLINE
UNKNOWN = pb.PRESENCE_STATE_UNKNOWN
V_UNCHANGED = pb.PRESENCE_VISIBILITY_UNSPECIFIED
EVERYONE = pb.PRESENCE_VISIBILITY_EVERYONE
CONTACTS = pb.PRESENCE_VISIBILITY_CONTACTS
NOBODY = pb.PRESENCE_VISIBILITY_NOBODY

DEBOUNCE_MS = 500
DEBOUNCE_S = DEBOUNCE_MS / 1000
TTL_S = 3
KEY = "mqchat:"        # the default redis_prefix
SETTLE_S = DEBOUNCE_S + 0.7  # long enough for a debounced OFFLINE to have come
# latency bounds scale with MQCHAT_IT_TIMEOUT (sanitizer builds are slower)
SCALE = max(1.0, H.WAIT / 10)
AT_ONCE_S = 1.0 * SCALE  # "at once": well before anything debounced
FAST_S = 0.5 * SCALE     # a SendAck / delivery at normal latency


def popts(redis, **kw):
    o = {"redis": redis.address, "node_id": "n1", "node_ttl_s": TTL_S,
         "presence_debounce_ms": DEBOUNCE_MS}
    o.update(kw)
    return o


def now_ms():
    return int(time.time() * 1000)


def sname(state):
    try:
        return pb.PresenceState.Name(state)
    except ValueError:
        return str(state)


def summ(u):
    return f"{u.user_id}:{sname(u.state)}@{u.last_seen_ms}"


def watch(dev, users, timeout=H.WAIT):
    return dev.request(timeout=timeout, presence_watch=pb.PresenceWatch(user_ids=list(users)))


def watch_ok(dev, users, timeout=H.WAIT):
    """Watches `users`; checks the answer is a PresenceWatchResponse with one
    entry per user in request order; returns the PresenceUpdates."""
    r = watch(dev, users, timeout)
    assert r.WhichOneof("body") == "presence", f"{dev}: watch {users} answered {H.describe(r)}"
    got = [u.user_id for u in r.presence.users]
    assert got == list(users), f"{dev}: watch {users} answered for {got} (request order)"
    return list(r.presence.users)


def watch_one(dev, user, timeout=H.WAIT):
    return watch_ok(dev, [user], timeout)[0]


def set_presence(dev, visibility=V_UNCHANGED, hide_last_seen=False):
    r = dev.request(presence_settings=pb.PresenceSettings(visibility=visibility,
                                                          hide_last_seen=hide_last_seen))
    assert r.WhichOneof("body") == "ok", f"{dev}: presence_settings answered {H.describe(r)}"


def pres_events(dev, start=0, user=None):
    with dev.cv:
        evs = list(dev.events[start:])
    return [e.presence for e in evs if e.WhichOneof("body") == "presence"
            and (user is None or e.presence.user_id == user)]


def wait_pres(dev, user, state, start, timeout=H.WAIT):
    """Waits for a presence event about `user` with `state` at index >= start."""
    ev = dev.wait_event(lambda e: e.WhichOneof("body") == "presence"
                        and e.presence.user_id == user and e.presence.state == state,
                        timeout=timeout, start=start,
                        what=f"presence event {user} {sname(state)}")
    return ev.presence


def befriend(dev, other):
    """Makes the 1:1 conversation of dev's user and `other` exist (a message)."""
    dev.send_ok(H.dm(dev.user, other), f"hello {other}".encode())


def wait_watch(dev, user, pred, timeout, what):
    """Polls fresh watches until pred(update) holds; returns the update."""
    return H.wait_until(lambda: (lambda u: u if pred(u) else None)(watch_one(dev, user)),
                        timeout=timeout, interval=0.2, what=what)


# -- a bare MQTT 3.1.1 client that connects and then stays silent -----------

def _mqtt_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _varint(n):
    out = bytearray()
    while True:
        d, n = n % 128, n // 128
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_connect(broker, user, device, keepalive):
    """CONNECT (clean session, username + JWT) on a raw socket; returns the
    socket after a successful CONNACK. Nothing else is ever sent on it."""
    body = (_mqtt_str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive) +
            _mqtt_str(f"{user}:{device}") + _mqtt_str(user) +
            _mqtt_str(H.make_token(user, device)))
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=H.WAIT)
    try:
        s.sendall(b"\x10" + _varint(len(body)) + body)
        ack = b""
        while len(ack) < 4:
            chunk = s.recv(4 - len(ack))
            if not chunk:
                break
            ack += chunk
        assert ack == b"\x20\x02\x00\x00", f"raw CONNECT of {user}:{device}: CONNACK {ack!r}"
    except BaseException:
        s.close()
        raise
    return s


# ---------------------------------------------------------------------------
# Watch answers and events
# ---------------------------------------------------------------------------

def test_watch_online_then_offline_after_debounce_then_online(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    befriend(alice, "bob")
    u = watch_one(bob, "alice")
    assert (u.state, u.last_seen_ms) == (ONLINE, 0), summ(u)
    assert watch_one(alice, "alice").state == ONLINE  # a user may always watch themselves
    watch_ok(alice, [])

    n = len(bob.events)
    t_left = now_ms()
    t0 = time.monotonic()
    alice.close()
    ev = wait_pres(bob, "alice", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)
    waited = time.monotonic() - t0
    assert waited >= DEBOUNCE_S - 0.1, f"OFFLINE after {waited:.2f} s: not debounced"
    assert abs(ev.last_seen_ms - t_left) <= 1000, \
        f"last_seen_ms {ev.last_seen_ms} vs disconnect at {t_left}"
    time.sleep(0.3)
    assert [summ(e) for e in pres_events(bob, n)] == [summ(ev)], "exactly one event"
    u = watch_one(bob, "alice")
    assert (u.state, u.last_seen_ms) == (OFFLINE, ev.last_seen_ms), summ(u)

    n = len(bob.events)
    alice2 = connect("alice", broker=b)
    ev = wait_pres(bob, "alice", ONLINE, n, timeout=2 * AT_ONCE_S)  # not debounced
    assert ev.last_seen_ms == 0, summ(ev)
    time.sleep(0.3)
    assert [summ(e) for e in pres_events(bob, n)] == [summ(ev)]
    # nothing is ever sent to users who did not ask
    assert pres_events(alice) == [] and pres_events(alice2) == []


def test_second_device_keeps_user_online(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    phone = connect("alice", "phone", broker=b)
    laptop = connect("alice", "laptop", broker=b)
    bob = connect("bob", broker=b)
    befriend(bob, "alice")
    assert watch_one(bob, "alice").state == ONLINE
    n = len(bob.events)
    phone.close()
    time.sleep(SETTLE_S)
    assert pres_events(bob, n) == [], "one of two devices left: no event"
    assert watch_one(bob, "alice").state == ONLINE
    t_left = now_ms()
    laptop.close()
    ev = wait_pres(bob, "alice", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)
    assert t_left - 300 <= ev.last_seen_ms <= t_left + 1000, \
        f"last_seen_ms {ev.last_seen_ms}: not the time the last device left ({t_left})"


def test_quick_reconnect_within_debounce_sends_nothing(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    befriend(alice, "bob")
    assert watch_one(bob, "alice").state == ONLINE
    n = len(bob.events)
    t0 = time.monotonic()
    alice.close()
    alice2 = connect("alice", broker=b)
    assert time.monotonic() - t0 < DEBOUNCE_S * 0.8, "the reconnect was too slow to test"
    time.sleep(SETTLE_S)
    assert [summ(e) for e in pres_events(bob, n)] == [], "reconnect within the debounce"
    assert watch_one(bob, "alice").state == ONLINE
    # and the user's accounting is still right: the last device leaving counts
    n = len(bob.events)
    alice2.close()
    wait_pres(bob, "alice", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)


def test_session_takeover_keeps_online_and_counts_right(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    old = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    befriend(old, "bob")
    assert watch_one(bob, "alice").state == ONLINE
    n = len(bob.events)
    new = connect("alice", broker=b)  # same client id: mosquitto drops the old one
    H.wait_until(lambda: old.disconnected, timeout=H.WAIT, what="the old session taken over")
    time.sleep(SETTLE_S)
    assert [summ(e) for e in pres_events(bob, n)] == [], "a takeover is not a leave"
    assert watch_one(bob, "alice").state == ONLINE
    new.close()
    wait_pres(bob, "alice", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)


def test_events_go_to_the_watching_device_only_until_unwatched(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob_phone = connect("bob", "phone", broker=b)
    bob_laptop = connect("bob", "laptop", broker=b)
    befriend(alice, "bob")
    assert watch_one(bob_phone, "alice").state == ONLINE
    n_phone, n_laptop = len(bob_phone.events), len(bob_laptop.events)
    alice.close()
    wait_pres(bob_phone, "alice", OFFLINE, n_phone, timeout=DEBOUNCE_S + H.WAIT)
    assert pres_events(bob_laptop, n_laptop) == [], "the laptop did not watch"
    # an empty list stops watching
    assert watch_ok(bob_phone, []) == []
    n_phone = len(bob_phone.events)
    alice = connect("alice", broker=b)
    time.sleep(AT_ONCE_S)
    assert pres_events(bob_phone, n_phone) == [], "watch [] should have stopped events"
    # a new list replaces the old one; a watch ends with the connection
    assert watch_one(bob_phone, "alice").state == ONLINE
    bob_phone.close()
    bob_phone2 = connect("bob", "phone", broker=b)
    alice.close()
    time.sleep(SETTLE_S)
    assert pres_events(bob_phone2) == [], "a watch does not survive a reconnect"


def test_keepalive_timeout_makes_user_offline(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    bob = connect("bob", broker=b)
    befriend(bob, "alice")
    t_conn = now_ms()
    t0 = time.monotonic()
    s = raw_connect(b, "alice", "phone", keepalive=2)
    try:
        assert watch_one(bob, "alice").state == ONLINE
        n = len(bob.events)
        ev = wait_pres(bob, "alice", OFFLINE, n, timeout=20.0)
        waited = time.monotonic() - t0
        t_ev = now_ms()
        # mosquitto drops the client after 1.5 x keepalive of silence (3 s)
        assert waited >= 3.0, f"OFFLINE {waited:.2f} s after CONNECT: before the keepalive ran out"
        assert t_conn + 2500 <= ev.last_seen_ms <= t_ev, \
            f"last_seen_ms {ev.last_seen_ms}: connect at {t_conn}, event at {t_ev}"
        s.settimeout(1.0)
        try:
            closed = s.recv(1) == b""
        except (ConnectionResetError, socket.timeout):
            closed = True
        assert closed, "the broker should have closed the silent connection"
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Privacy
# ---------------------------------------------------------------------------

def test_contacts_default_refuses_non_contacts(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    carol = connect("carol", broker=b)
    dave = connect("dave", broker=b)
    befriend(bob, "alice")
    set_presence(dave, EVERYONE)
    assert watch_one(bob, "alice").state == ONLINE  # a contact may
    assert watch_one(carol, "carol").state == ONLINE  # oneself, always
    assert watch_one(carol, "dave").state == ONLINE  # EVERYONE
    n = len(carol.events)
    r = watch(carol, ["dave", "alice"])
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)
    # refused: nothing changes, carol still watches dave
    dave.close()
    wait_pres(carol, "dave", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)
    assert pres_events(carol, n, user="alice") == []
    # a shared group makes a contact too
    g = carol.request_ok(group_create=pb.GroupCreate(title="t", member_ids=["alice"]))
    assert g.group.conversation_id.startswith("g:")
    assert watch_one(carol, "alice").state == ONLINE
    assert alice.connected


def test_everyone_lets_a_non_contact_watch(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    carol = connect("carol", broker=b)
    assert H.is_error(watch(carol, ["alice"]), "PERMISSION_DENIED")
    set_presence(alice, EVERYONE)
    assert watch_one(carol, "alice").state == ONLINE
    n = len(carol.events)
    t_left = now_ms()
    alice.close()
    ev = wait_pres(carol, "alice", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)
    assert abs(ev.last_seen_ms - t_left) <= 1000, summ(ev)
    # back to CONTACTS: the current watcher, no contact, learns nothing more
    n = len(carol.events)
    alice = connect("alice", broker=b)
    wait_pres(carol, "alice", ONLINE, n, timeout=2 * AT_ONCE_S)
    set_presence(alice, CONTACTS)
    n = len(carol.events)
    alice.close()
    time.sleep(SETTLE_S)
    leaked = [summ(e) for e in pres_events(carol, n) if e.state != UNKNOWN or e.last_seen_ms]
    assert leaked == [], "a watcher no longer allowed still learns alice's presence"
    assert H.is_error(watch(carol, ["alice"]), "PERMISSION_DENIED")


def test_nobody_reads_unknown(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    carol = connect("carol", broker=b)
    befriend(alice, "bob")
    set_presence(alice, NOBODY)
    u = watch_one(bob, "alice")
    assert (u.state, u.last_seen_ms) == (UNKNOWN, 0), summ(u)
    u = watch_one(carol, "alice")  # NOBODY: anyone may ask, nobody learns anything
    assert (u.state, u.last_seen_ms) == (UNKNOWN, 0), summ(u)
    n = len(bob.events)
    alice.close()
    time.sleep(SETTLE_S)
    leaked = [summ(e) for e in pres_events(bob, n) if e.state != UNKNOWN or e.last_seen_ms]
    assert leaked == [], "NOBODY: a watcher learned a state"
    u = watch_one(bob, "alice")
    assert (u.state, u.last_seen_ms) == (UNKNOWN, 0), summ(u)


def test_hide_last_seen(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    befriend(alice, "bob")
    set_presence(alice, hide_last_seen=True)
    u = watch_one(bob, "alice")
    assert (u.state, u.last_seen_ms) == (ONLINE, 0), summ(u)
    n = len(bob.events)
    alice.close()
    ev = wait_pres(bob, "alice", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)
    assert ev.last_seen_ms == 0, f"hidden last seen leaked in the event: {summ(ev)}"
    u = watch_one(bob, "alice")
    assert (u.state, u.last_seen_ms) == (OFFLINE, 0), summ(u)
    # shown again once she unhides it
    alice = connect("alice", broker=b)
    set_presence(alice, hide_last_seen=False)
    n = len(bob.events)
    t_left = now_ms()
    alice.close()
    ev = wait_pres(bob, "alice", OFFLINE, n, timeout=DEBOUNCE_S + H.WAIT)
    assert abs(ev.last_seen_ms - t_left) <= 1000, summ(ev)


def test_settings_change_reaches_current_watcher_at_once(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    befriend(alice, "bob")
    assert watch_one(bob, "alice").state == ONLINE
    n = len(bob.events)
    set_presence(alice, NOBODY)
    ev = wait_pres(bob, "alice", UNKNOWN, n, timeout=AT_ONCE_S)
    assert ev.last_seen_ms == 0, summ(ev)
    n = len(bob.events)
    set_presence(alice, CONTACTS)
    ev = wait_pres(bob, "alice", ONLINE, n, timeout=AT_ONCE_S)
    assert ev.last_seen_ms == 0, summ(ev)


def test_settings_are_stored_across_a_broker_restart(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    set_presence(alice, EVERYONE, hide_last_seen=True)
    alice.close()
    b.stop()
    b.start()
    carol = connect("carol", broker=b)  # no shared conversation: only EVERYONE lets her
    u = wait_watch(carol, "alice", lambda u: u.state == OFFLINE, timeout=TTL_S + 2,
                   what="alice OFFLINE after the restart")
    assert u.last_seen_ms == 0, f"hide_last_seen was lost: {summ(u)}"
    alice = connect("alice", broker=b)
    set_presence(alice, NOBODY)
    b.stop()
    b.start()
    carol = connect("carol", "tablet", broker=b)
    u = watch_one(carol, "alice")
    assert (u.state, u.last_seen_ms) == (UNKNOWN, 0), f"NOBODY was lost: {summ(u)}"


# ---------------------------------------------------------------------------
# Request limits
# ---------------------------------------------------------------------------

def test_watch_limit_and_bad_ids(redis, make_broker, connect):
    b = make_broker(opts=popts(redis, presence_watch_max=3))
    bob = connect("bob", broker=b)
    users = ["u1", "u2", "u3", "u4"]
    for u in users:
        befriend(bob, u)
    assert len(watch_ok(bob, users[:3])) == 3
    r = watch(bob, users)
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)
    r = watch(bob, ["bad:id"])
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)
    assert watch_ok(bob, []) == []


def test_without_redis_presence_is_unsupported(make_broker, connect):
    b = make_broker()
    alice = connect("alice", broker=b)
    connect("bob", broker=b)
    befriend(alice, "bob")
    r = watch(alice, ["bob"])
    assert H.is_error(r, "UNSUPPORTED"), H.describe(r)
    r = alice.request(presence_settings=pb.PresenceSettings(visibility=NOBODY))
    assert H.is_error(r, "UNSUPPORTED"), H.describe(r)
    assert alice.send_ok(AB, b"messages still work").seq == 2


# ---------------------------------------------------------------------------
# The Redis registry
# ---------------------------------------------------------------------------

def test_registry_keys(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    t_conn = now_ms()
    alice = connect("alice", "phone", broker=b)
    sess = H.wait_until(lambda: (lambda h: h if "phone" in h else None)(
        redis.hgetall(KEY + "sess:alice")), timeout=3, what="sess:alice phone")
    parts = sess["phone"].split()
    assert len(parts) == 3, f"sess:alice phone = {sess['phone']!r}: not 'N connect_ms transport'"
    assert parts[0] == "n1", sess
    assert t_conn - 1000 <= int(parts[1]) <= now_ms() + 1000, sess
    assert "alice:phone" in redis.smembers(KEY + "nodesess:n1")
    pres = H.wait_until(lambda: (lambda h: h if h.get("state") == "online" else None)(
        redis.hgetall(KEY + "pres:alice")), timeout=3, what="pres:alice online")
    assert pres.get("node") == "n1", pres
    assert t_conn - 1000 <= int(pres["since"]) <= now_ms() + 1000, pres

    assert redis.cmd("GET", KEY + "node:n1") == "1"
    pttl = redis.cmd("PTTL", KEY + "node:n1")
    assert 0 < pttl <= TTL_S * 1000, f"node:n1 PTTL {pttl}"
    seen = int(redis.cmd("GET", KEY + "nodeseen:n1"))
    assert abs(now_ms() - seen) <= TTL_S * 1000 / 3 + 1000, f"nodeseen:n1 {seen} vs {now_ms()}"

    t_left = now_ms()
    alice.close()
    time.sleep(DEBOUNCE_S / 2)
    assert redis.hgetall(KEY + "pres:alice").get("state") == "online", \
        "offline written before the debounce ran out"
    pres = H.wait_until(lambda: (lambda h: h if h.get("state") == "offline" else None)(
        redis.hgetall(KEY + "pres:alice")), timeout=3, what="pres:alice offline")
    assert abs(int(pres["last_seen"]) - t_left) <= 1000, f"{pres} vs left at {t_left}"
    assert "phone" not in redis.hgetall(KEY + "sess:alice")
    assert "alice:phone" not in redis.smembers(KEY + "nodesess:n1")
    # the liveness key is refreshed: it outlives its TTL
    time.sleep(max(0.0, (t_conn + TTL_S * 1000 + 300 - now_ms()) / 1000))
    assert redis.cmd("EXISTS", KEY + "node:n1") == 1, "node:n1 was not refreshed"


def test_redis_load_does_not_grow_with_heartbeats(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    devs = [connect(f"load{i:02d}", broker=b, keepalive=1, subscribe_inbox=False)
            for i in range(50)]
    H.wait_until(lambda: redis.cmd("SCARD", KEY + "nodesess:n1") == 50, timeout=5,
                 what="50 sessions in nodesess:n1")
    time.sleep(2.0)  # everything about the connects is written by now

    def pings():
        return b.log_text().count("Received PINGREQ")

    p0, c0 = pings(), redis.command_calls()
    time.sleep(3.0)
    p1, c1 = pings(), redis.command_calls()
    delta = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1 if k != "info"}
    delta = {k: v for k, v in delta.items() if v}
    print(f"idle window: {p1 - p0} PINGREQs, Redis commands {delta}")
    assert all(d.connected for d in devs), "a device lost its connection"
    assert p1 - p0 >= 50, f"only {p1 - p0} PINGREQs in the window: the test proved nothing"
    # two commands per node_ttl_s / 3 (1 s): at most 4 refreshes in 3 s, + slack
    assert sum(delta.values()) <= 10, \
        f"{sum(delta.values())} Redis commands in 3 idle s with {p1 - p0} PINGREQs: {delta}"


# ---------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------

def test_broker_kill9_reads_offline_after_node_ttl(redis, make_broker, connect):
    n1 = make_broker(opts=popts(redis, node_id="n1"), name="n1")
    n2 = make_broker(opts=popts(redis, node_id="n2"), name="n2")
    bob = connect("bob", broker=n2)
    befriend(bob, "alice")  # the conversation exists in n2's store
    alice = connect("alice", broker=n1)
    t_conn = now_ms()
    wait_watch(bob, "alice", lambda u: u.state == ONLINE, timeout=3,
               what="alice (on n1) ONLINE seen from n2")
    time.sleep(max(0.0, (t_conn + 2000 - now_ms()) / 1000))  # connect_ms well before the kill

    t_kill = now_ms()
    t0 = time.monotonic()
    n1.kill9()
    alice.close()
    u = wait_watch(bob, "alice", lambda u: u.state == OFFLINE, timeout=TTL_S + 2,
                   what="alice OFFLINE within node_ttl_s + 2 s of the kill")
    print(f"OFFLINE seen {time.monotonic() - t0:.2f} s after the kill")
    # last seen = n1's last liveness refresh, at most node_ttl_s / 3 before the death
    assert t_kill - TTL_S * 1000 / 3 - 500 <= u.last_seen_ms <= t_kill + 200, \
        f"last_seen_ms {u.last_seen_ms} vs kill at {t_kill} (connect at {t_conn})"
    last_seen = u.last_seen_ms

    n1.start()  # same node id, store and port; alice does not come back
    H.wait_until(lambda: not redis.hgetall(KEY + "sess:alice").get("phone", "").startswith("n1"),
                 timeout=3, what="n1 cleaning alice's stale session after its restart")
    assert "alice:phone" not in redis.smembers(KEY + "nodesess:n1")
    time.sleep(0.5)
    u = watch_one(bob, "alice")
    assert u.state == OFFLINE, summ(u)
    assert u.last_seen_ms <= t_kill + 200, \
        f"last_seen_ms moved to {u.last_seen_ms} after n1's restart (was {last_seen})"


def test_redis_killed_during_send_loop(redis, make_broker, connect):
    b = make_broker(opts=popts(redis, redis_timeout_ms=1000))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    carol = connect("carol", broker=b)
    dave = connect("dave", broker=b)
    for d in (alice, carol, dave):
        befriend(d, "bob")
    dave.close()
    H.wait_until(lambda: redis.hgetall(KEY + "pres:dave").get("state") == "offline",
                 timeout=3, what="pres:dave offline before the kill")
    base = bob.wait_messages(1, AB)[-1].seq

    N = 200
    acks, during = [], None
    t_carol_left = None
    for i in range(N):
        if i == 50:
            redis.kill9()
        elif i == 75:
            t_carol_left = now_ms()
            carol.close()  # leaves while Redis is down
        elif i == 100:
            time.sleep(DEBOUNCE_S + 0.3)  # her debounce runs out while Redis is down
            during = watch_ok(bob, ["dave", "alice"])
        elif i == 150:
            redis.start()
        cmid = f"m{i:03d}"
        ack = alice.send(AB, cmid.encode(), client_msg_id=cmid)
        assert not ack.HasField("error"), f"send {i}: {H.describe(ack)}"
        acks.append(ack)
    assert [a.seq for a in acks] == list(range(base + 1, base + N + 1))
    msgs = [m for m in bob.wait_messages(base + N, AB) if m.seq > base]
    assert [m.body for m in msgs] == [f"m{i:03d}".encode() for i in range(N)], \
        "bob did not get all 200 in order"
    assert [m.seq for m in msgs] == list(range(base + 1, base + N + 1))

    # while Redis was down: users elsewhere UNKNOWN, users on this broker known
    assert [(u.user_id, u.state) for u in during] == [("dave", UNKNOWN), ("alice", ONLINE)], \
        [summ(u) for u in during]

    # once back, the node rewrites its sessions and presence
    def rebuilt():
        a = redis.hgetall(KEY + "sess:alice").get("phone", "")
        bb = redis.hgetall(KEY + "sess:bob").get("phone", "")
        return a.startswith("n1 ") and bb.startswith("n1 ")
    H.wait_until(rebuilt, timeout=12, interval=0.2, what="sess:alice and sess:bob rebuilt")
    H.wait_until(lambda: redis.hgetall(KEY + "pres:alice").get("state") == "online",
                 timeout=3, what="pres:alice online again")
    assert {"alice:phone", "bob:phone"} <= redis.smembers(KEY + "nodesess:n1")
    assert "phone" not in redis.hgetall(KEY + "sess:carol")
    assert redis.cmd("EXISTS", KEY + "node:n1") == 1
    alice_u, dave_u = watch_ok(bob, ["alice", "dave"])
    assert alice_u.state == ONLINE, summ(alice_u)
    assert dave_u.state != UNKNOWN, f"Redis is back, yet {summ(dave_u)}"
    # carol left while Redis was away: marked offline, last seen when she left
    H.wait_until(lambda: redis.hgetall(KEY + "pres:carol").get("state") == "offline",
                 timeout=5, what="carol, who left meanwhile, marked offline in pres:carol")
    carol_u = watch_one(bob, "carol")
    assert carol_u.state == OFFLINE, summ(carol_u)
    assert abs(carol_u.last_seen_ms - t_carol_left) <= 1000, \
        f"carol last seen {carol_u.last_seen_ms}, she left at {t_carol_left}"


def test_redis_frozen_user_who_left_meanwhile_reads_offline_on_other_nodes(
        redis, make_broker, connect):
    """Redis unreachable with its keys intact (SIGSTOP, like a partition):
    a user who left meanwhile must not stay "online" in Redis."""
    n1 = make_broker(opts=popts(redis, node_id="n1", redis_timeout_ms=500), name="n1")
    n2 = make_broker(opts=popts(redis, node_id="n2", redis_timeout_ms=500), name="n2")
    bob = connect("bob", broker=n2)
    befriend(bob, "carol")  # the conversation exists in n2's store
    carol = connect("carol", broker=n1)
    wait_watch(bob, "carol", lambda u: u.state == ONLINE, timeout=3,
               what="carol (on n1) ONLINE seen from n2")
    redis.freeze()
    try:
        time.sleep(0.2)
        t_left = now_ms()
        carol.close()
        time.sleep(DEBOUNCE_S + 0.8)  # her debounce runs out; writes time out
    finally:
        redis.thaw()
    t_thaw = now_ms()

    def reconnected():  # both nodes refreshed their liveness after the thaw
        return all(int(redis.cmd("GET", f"{KEY}nodeseen:{n}") or 0) > t_thaw
                   for n in ("n1", "n2"))
    H.wait_until(reconnected, timeout=12, interval=0.1, what="n1 and n2 back on Redis")
    time.sleep(0.5)  # n1's rewrite after the reconnect
    pres = redis.hgetall(KEY + "pres:carol")
    u = watch_one(bob, "carol")
    assert u.state == OFFLINE, f"seen from n2: {summ(u)}; pres:carol = {pres}"
    assert abs(u.last_seen_ms - t_left) <= 1000, f"{summ(u)}, she left at {t_left}"
    assert pres.get("state") == "offline", pres


def test_slow_redis_never_delays_sends(redis, make_broker, connect):
    b = make_broker(opts=popts(redis))
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    base = alice.send_ok(AB, b"warm-up").seq
    bob.wait_messages(1, AB)
    slow = redis.conn(timeout=H.WAIT + 2 * SCALE)
    done = {}

    def sleeper():
        try:
            done["reply"] = slow.cmd("DEBUG", "SLEEP", str(2 * SCALE))
        except Exception as e:  # reported below
            done["reply"] = e
        done["end"] = time.monotonic()

    th = threading.Thread(target=sleeper, daemon=True)
    try:
        th.start()
        time.sleep(0.2)
        # give the plugin's Redis thread work, so it is stuck in the sleep too
        t0 = time.monotonic()
        connect("carol", broker=b)
        t_carol = time.monotonic() - t0
        lat = []
        for i in range(20):
            t0 = time.monotonic()
            alice.send_ok(AB, f"slow {i}".encode())
            lat.append(time.monotonic() - t0)
        bob.wait_messages(base + 20, AB, timeout=2 * FAST_S)
        t_done = time.monotonic()
        th.join(H.WAIT)
    finally:
        slow.close()
    assert done.get("reply") == "OK", f"DEBUG SLEEP answered {done.get('reply')!r}"
    assert done["end"] > t_done, "the sends did not overlap the Redis sleep: proved nothing"
    assert t_carol < 2 * FAST_S, f"a CONNECT took {t_carol:.2f} s while Redis slept"
    assert max(lat) < FAST_S, f"SendAck latencies while Redis slept: max {max(lat):.3f} s"
    msgs = [m for m in bob.messages(AB) if m.seq > base]
    assert [m.body for m in msgs] == [f"slow {i}".encode() for i in range(20)]


def test_redis_password(redis, make_broker, connect):
    """A Redis that needs a password: without plugin_opt_redis_password the
    broker says once why presence is unavailable and answers UNKNOWN for
    users it does not know (messages unaffected); with it, the registry is
    written."""
    redis.cmd("CONFIG", "SET", "requirepass", "s3cret-pw")
    c = redis.conn()
    try:
        assert c.cmd("AUTH", "s3cret-pw") == "OK"
        wrong = make_broker(opts=popts(redis, node_id="n1"))
        alice = connect("alice", broker=wrong)
        bob = connect("bob", broker=wrong)
        befriend(alice, "bob")
        befriend(bob, "dave")  # dave never connects to this broker
        H.wait_until(lambda: "NOAUTH" in wrong.log_text(), timeout=5,
                     what="the NOAUTH reason in the broker log")
        time.sleep(1.0)  # retries with backoff: the reason is not logged again
        assert wrong.log_text().count("Redis unavailable") == 1
        assert sname(watch_one(bob, "alice").state) == "PRESENCE_STATE_ONLINE"  # known here
        u = watch_one(bob, "dave")
        assert sname(u.state) == "PRESENCE_STATE_UNKNOWN"
        assert alice.send_ok(H.dm("alice", "bob"), b"still flowing").seq >= 1
        assert c.cmd("EXISTS", KEY + "sess:alice") == 0
        right = make_broker(opts=popts(redis, node_id="n2", redis_password="s3cret-pw"))
        connect("dave", broker=right)
        H.wait_until(lambda: "phone" in (c.cmd("HGETALL", KEY + "sess:dave") or []),
                     timeout=5, what="dave's session written with the password")
    finally:
        c.cmd("CONFIG", "SET", "requirepass", "")
        c.close()


def test_clean_broker_stop_marks_its_users_offline(redis, make_broker, connect):
    """mosquitto fires no DISCONNECT at shutdown: the plugin's cleanup marks
    the node's users offline itself and removes its liveness key, so
    readers do not wait node_ttl_s."""
    b = make_broker(opts=popts(redis, node_id="n1", node_ttl_s=60))
    connect("alice", broker=b)
    H.wait_until(lambda: redis.hgetall(KEY + "pres:alice").get("state") == "online",
                 timeout=3, what="alice online in Redis")
    assert redis.cmd("EXISTS", KEY + "node:n1") == 1
    t_stop = now_ms()
    b.stop()
    p = redis.hgetall(KEY + "pres:alice")
    assert p.get("state") == "offline", p
    assert t_stop - 1000 <= int(p["last_seen"]) <= now_ms()
    assert redis.cmd("EXISTS", KEY + "node:n1") == 0
    assert redis.hgetall(KEY + "sess:alice") == {}
