"""Metrics (docs/OPERATIONS.md, "Metrics"): GET /metrics for Prometheus and
the retained $SYS/broker/mqchat/... topics.

Each test runs a broker with metrics_http_port on a free loopback port and
sys_interval_s 1, plus a password_file admin whom acl_file lets read $SYS
(mqchat defers topics outside its namespace). Counters are scraped before
and after known traffic and must move by exactly what the traffic did; the
scraped text must pass `promtool check metrics`."""

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import mqchat_harness as H
from mqchat_harness import pb

AB = H.dm("alice", "bob")
ADMIN_PASSWORD = "metrics-admin-password"
SYS = "$SYS/broker/mqchat/"


def metrics_broker(make_broker, opts=None, extra_acl=""):
    """A broker with metrics on (HTTP on a free port, $SYS every second)
    and an `admin` password login that acl_file lets read $SYS/#."""
    o = {"metrics_http_port": H.free_port(), "sys_interval_s": 1, "foreign_users": "defer"}
    o.update(opts or {})
    b = make_broker(start=False, opts=o)
    pw = b.dir / "passwd"
    pw.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "admin", ADMIN_PASSWORD], check=True,
                   capture_output=True, timeout=30)
    (b.dir / "acl").write_text("user admin\ntopic read $SYS/#\n" + extra_acl)
    b.extra_conf = [f"password_file {pw}", f"acl_file {b.dir / 'acl'}"]
    b.start()
    b.metrics_port = int(o["metrics_http_port"]) if o.get("metrics_http_port") else 0
    return b


def admin(connect, b):
    return connect("admin", "x", broker=b, token=ADMIN_PASSWORD, username="admin",
                   client_id="admin-1", subscribe_inbox=False, v5=True)


def get(b, path="/metrics", method="GET"):
    """(status, content type, body) of one request to the broker's metrics port."""
    req = urllib.request.Request(f"http://127.0.0.1:{b.metrics_port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=H.WAIT) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def parse(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        key, _, value = ln.rpartition(" ")
        assert key not in out, f"sample {key} twice"
        out[key] = float(value)
    return out


def scrape(b):
    status, ctype, body = get(b)
    assert status == 200, (status, body[:200])
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return parse(body), body


def scrape_until(b, pred, what):
    """Scrapes until pred(samples) holds (the snapshot is refreshed every
    250 ms); returns the samples."""
    last = {}

    def ok():
        nonlocal last
        last, _ = scrape(b)
        return pred(last)
    try:
        H.wait_until(ok, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last scrape: "
                             f"{ {k: v for k, v in last.items() if 'bucket' not in k} }") from None
    return last


STORED = "mqchat_messages_stored_total"
DUP = "mqchat_messages_duplicate_total"
LIVE = "mqchat_messages_delivered_live_total"
SYNCED = "mqchat_messages_delivered_sync_total"
RATE = "mqchat_rate_limited_total"
CONNECTED = "mqchat_devices_connected"


def refused(reason):
    return f'mqchat_refusals_total{{reason="{reason}"}}'


def test_counters_follow_traffic(make_broker, connect):
    # A burst of 10 and almost no refill: the 11th request of a connection
    # is refused RATE_LIMITED; the others below stay well within it.
    b = metrics_broker(make_broker, {"rate_msgs_per_s": "0.1", "rate_burst": "10"})
    alice = connect("alice", broker=b)
    bob = connect("bob", broker=b)
    before = scrape_until(b, lambda s: s.get(CONNECTED) == 2, "2 devices connected")
    for k in (STORED, DUP, LIVE, SYNCED, RATE, refused("not_member"), refused("rate_limited"),
              "mqchat_store_write_seconds_count", "mqchat_durable_ack_seconds_count"):
        assert k in before, k

    # 3 + 1 sends between two online devices: 4 stored, 4 live deliveries.
    acks = alice.send_many(AB, [b"one", b"two", b"three"])
    bob.wait_messages(3, AB)
    bob.send_ok(AB, b"four")
    alice.wait_messages(1, AB)
    # A retry of the first: answered from dedup, nothing delivered again.
    dup = alice.send(AB, b"one", client_msg_id=acks[0].client_msg_id)
    assert dup.duplicate
    # A refused send: a 1:1 conversation that does not name the sender.
    bad = bob.send(H.dm("alice", "carol"), b"not mine")
    assert H.is_error(bad, "NOT_MEMBER"), H.describe(bad)
    # A sync from a second device of bob's: the 4 messages.
    tablet = connect("bob", "tablet", broker=b)
    msgs, _ = tablet.sync_all()
    assert len(msgs) == 4
    # 12 requests in a burst of 10: 2 refused RATE_LIMITED.
    eve = connect("eve", broker=b)
    rids = [eve.request_nowait(sync=pb.SyncRequest(after_inbox_seq=0, limit=1))
            for _ in range(12)]
    answers = [eve.take_response(r) for r in rids]
    limited = sum(1 for a in answers if H.is_error(a, "RATE_LIMITED"))
    assert limited == 2, [H.describe(a) for a in answers]

    def delta(s, k):
        return s.get(k, 0) - before.get(k, 0)

    after = scrape_until(b, lambda s: delta(s, RATE) == 2 and delta(s, SYNCED) == 4 and
                         s.get(CONNECTED) == 4, "the traffic in the counters")
    assert delta(after, STORED) == 4
    assert delta(after, DUP) == 1
    assert delta(after, LIVE) == 4
    assert delta(after, SYNCED) == 4
    assert delta(after, refused("not_member")) == 1
    assert delta(after, refused("rate_limited")) == 2
    assert delta(after, RATE) == 2
    assert delta(after, refused("malformed")) == 0
    # Every send that reached the store: its write time and its SendAck's wait.
    assert delta(after, "mqchat_store_write_seconds_count") == 5
    assert delta(after, "mqchat_durable_ack_seconds_count") == 5
    for h in ("mqchat_store_write_seconds", "mqchat_durable_ack_seconds"):
        assert after[h + '_bucket{le="+Inf"}'] == after[h + "_count"]
        assert after[h + "_sum"] > 0
        buckets = [v for k, v in after.items() if k.startswith(h + "_bucket")]
        assert buckets == sorted(buckets), "cumulative buckets"
    assert delta(after, "mqchat_store_writes_total") >= 4
    assert after["mqchat_store_writable"] == 1
    assert after["mqchat_outq_waiting"] == 0
    assert "mqchat_redis_up" not in "".join(after), "no Redis configured"

    # Devices leave: the gauge follows.
    eve.close()
    tablet.close()
    scrape_until(b, lambda s: s.get(CONNECTED) == 2, "2 devices after 2 left")


def test_large_group_lane_deliveries_count(make_broker, connect):
    """A large group's message goes out through the lane, one publish per
    online member device: each counts as a live delivery."""
    b = metrics_broker(make_broker, {"large_group_members": 3, "small_group_members": 2})
    alice, bob, carol = (connect(u, broker=b) for u in ("alice", "bob", "carol"))
    r = alice.request_ok(group_create=pb.GroupCreate(title="big", member_ids=["bob", "carol"]))
    conv = r.group.conversation_id
    for d in (bob, carol):  # the creation event
        d.wait_event(lambda e: e.WhichOneof("body") == "message" and
                     e.message.conversation_id == conv, what="the group's creation")
    before = scrape_until(b, lambda s: s.get(CONNECTED) == 3, "3 devices")
    time.sleep(0.3)  # nothing else is on its way
    before, _ = scrape(b)
    alice.send_ok(conv, b"to the room")
    bob.wait_messages(1, conv)
    carol.wait_messages(1, conv)
    after = scrape_until(b, lambda s: s[STORED] == before[STORED] + 1 and
                         s[LIVE] >= before[LIVE] + 2, "the lane's deliveries")
    assert after[LIVE] - before[LIVE] == 2, "bob and carol, not the sender"


def test_promtool_accepts_the_text(make_broker, connect):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus, "
                    "scripts/install-deps.sh)")
    b = metrics_broker(make_broker)
    alice = connect("alice", broker=b)
    connect("bob", broker=b)
    alice.send_ok(AB, b"for the histograms")
    s = scrape_until(b, lambda x: x.get(STORED) == 1, "one message stored")
    assert s["mqchat_durable_ack_seconds_count"] == 1
    _, text = scrape(b)
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}"
    for line in ("# TYPE mqchat_messages_stored_total counter",
                 "# TYPE mqchat_devices_connected gauge",
                 "# TYPE mqchat_durable_ack_seconds histogram"):
        assert line in text.splitlines()


def test_other_paths_and_clean_shutdown(make_broker):
    b = metrics_broker(make_broker)
    assert get(b)[0] == 200
    assert get(b, "/")[0] == 404
    assert get(b, "/metrics/x")[0] == 404
    assert get(b, "/favicon.ico")[0] == 404
    assert get(b, "/metrics", method="POST")[0] == 405
    status, _, body = get(b, "/metrics", method="HEAD")
    assert status == 200 and body == ""
    b.stop()
    assert b.problems == [], b.problems
    assert not b.sanitizer_reports()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.metrics_port), timeout=2).close()


def test_sys_topics(make_broker, connect):
    b = metrics_broker(make_broker)
    ops = admin(connect, b)
    assert ops.subscribe(SYS + "#")[0] in (0, 1)
    # Retained: what was published before the subscription is there at once.
    values = {}

    def seen(path, want=None):
        for t, p in ops.other:
            if t == SYS + path:
                values[path] = p.decode()
        return path in values and (want is None or values[path] == want)

    H.wait_until(lambda: seen("messages/stored", "0"), what="retained messages/stored 0")
    H.wait_until(lambda: seen("store/writable", "1"), what="retained store/writable 1")
    H.wait_until(lambda: seen("devices/connected"), what="retained devices/connected")
    # A chat device may subscribe (mosquitto's acl_file checks on delivery)
    # but gets nothing: acl_file lets only the admin read $SYS.
    alice = connect("alice", broker=b, v5=True)
    alice.subscribe(SYS + "#")
    bob = connect("bob", broker=b)
    alice.send_many(AB, [b"a", b"b"])
    bob.wait_messages(2, AB)
    # Within about one sys_interval_s the new values arrive.
    H.wait_until(lambda: seen("messages/stored", "2"), timeout=H.WAIT,
                 what="messages/stored 2 on $SYS")
    H.wait_until(lambda: seen("messages/delivered/live", "2"), what="delivered/live 2")
    H.wait_until(lambda: seen("devices/connected", "2"), what="devices/connected 2")
    H.wait_until(lambda: seen("latency/durable_ack/p99"), what="a durable ACK p99")
    float(values["latency/durable_ack/p99"])
    H.wait_until(lambda: seen("refused/rate_limited"), what="refused/rate_limited")
    assert alice.other == [], "nothing of $SYS reached the chat device"

    # mosquitto_sub, as docs/OPERATIONS.md shows it.
    sub = shutil.which("mosquitto_sub")
    if sub:
        r = subprocess.run([sub, "-h", "127.0.0.1", "-p", str(b.port), "-u", "admin", "-P",
                            ADMIN_PASSWORD, "-t", SYS + "messages/stored", "-C", "1", "-W", "5"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "2"


def test_sys_off(make_broker, connect):
    b = metrics_broker(make_broker, {"sys_interval_s": 0})
    ops = admin(connect, b)
    assert ops.subscribe(SYS + "#")[0] in (0, 1)
    time.sleep(1.5)
    assert [t for t, _ in ops.other if t.startswith(SYS)] == []
    assert get(b)[0] == 200  # HTTP is independent of $SYS


def test_port_in_use_stops_the_start(make_broker):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        b = make_broker(start=False, opts={"metrics_http_port": port})
        b.start(wait=False)
        rc = b.wait_exit()
        assert rc not in (None, 0)
        log = b.log_text()
        assert "metrics_http_port" in log and "in use" in log, b.log_tail()
