"""End to end, the happy paths: a job in Redis -> exactly one provider
request with the right headers, provider token and payload; FCM through
OAuth; the pushseen skip rule; collapse ids; two pushd on one stream."""

import time

import pushd_harness as H

TTL_DEFAULT_S = 7 * 24 * 3600


def acked(redis):
    return redis.pending() == 0 and redis.cmd("XLEN", "mqchat:push") == 0


def test_apns_job_gives_one_request(redis, fake, make_pushd):
    p = make_pushd()
    f = H.job(badge=7)
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis) and fake.requests("apns"), what="the job sent and acknowledged")
    time.sleep(0.3)  # nothing else may follow
    recs = fake.requests("apns")
    assert len(recs) == 1, recs
    r = recs[0]
    assert r["status"] == 200
    assert r["method"] == "POST" and r["path"] == f"/3/device/{f['token']}"
    h = r["headers"]
    assert h["apns-topic"] == H.TOPIC
    assert h["apns-push-type"] == "alert"
    assert h["apns-priority"] == "10"
    assert h["apns-collapse-id"] == f["collapse"]
    assert int(h["apns-expiration"]) == int(f["ts"]) // 1000 + TTL_DEFAULT_S
    assert h["authorization"].startswith("bearer ")
    assert r["jwt"]["header"] == {"alg": "ES256", "kid": H.KEY_ID}
    assert r["jwt"]["claims"]["iss"] == H.TEAM_ID
    assert abs(r["jwt"]["claims"]["iat"] - time.time()) < 120
    b = r["body"]
    assert b["aps"]["alert"] == {"loc-key": "NEW_MESSAGE"}  # no plaintext without a preview
    assert b["aps"]["badge"] == 7 and b["aps"]["sound"] == "default"
    assert b["aps"]["mutable-content"] == 1 and b["aps"]["thread-id"] == f["conv"]
    assert b["conv"] == f["conv"] and b["seq"] == f["seq"]
    assert "sender" not in b
    H.wait_for(lambda: p.stats().get('pushd_sent_total{platform="apns"}') == 1, what="stats file")


def test_apns_preview_normal_priority_and_app_topic(redis, fake, make_pushd):
    make_pushd()
    f = H.job(preview="Lunch at noon?", prio="normal", app=H.TOPIC + ".voip", collapse="")
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis) and fake.requests("apns"), what="the job")
    r = fake.requests("apns")[0]
    assert r["status"] == 200
    assert r["body"]["aps"]["alert"] == {"body": "Lunch at noon?"}
    assert r["headers"]["apns-priority"] == "5"
    assert r["headers"]["apns-topic"] == H.TOPIC + ".voip"
    assert "apns-collapse-id" not in r["headers"]


def test_fcm_job_through_oauth(redis, fake, make_pushd):
    make_pushd()
    f = H.job("fcm", badge="")
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis) and fake.requests("fcm"), what="the FCM job")
    oauth = fake.requests("oauth")
    assert len(oauth) == 1 and oauth[0]["status"] == 200
    o = oauth[0]
    assert o["body"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert o["jwt"]["header"]["alg"] == "RS256"
    c = o["jwt"]["claims"]
    assert c["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert c["aud"] == f"https://127.0.0.1:{fake.port}/token"
    assert 0 < c["exp"] - c["iat"] <= 3600
    recs = fake.requests("fcm")
    assert len(recs) == 1
    r = recs[0]
    assert r["status"] == 200 and r["auth"] == "valid"
    assert r["path"] == "/v1/projects/mqchat-fake/messages:send"
    m = r["body"]["message"]
    assert m["token"] == f["token"]
    assert m["data"] == {"conv": f["conv"], "seq": f["seq"], "sender": f["sender"]}
    assert m["android"]["collapse_key"] == f["collapse"]
    assert m["android"]["priority"] == "HIGH"
    assert m["android"]["ttl"].endswith("s") and int(m["android"]["ttl"][:-1]) > TTL_DEFAULT_S - 60
    assert "notification" not in m  # data only without a preview


def test_fcm_refreshes_token_on_401(redis, fake, make_pushd):
    make_pushd()
    H.xadd(redis, H.job("fcm"))
    H.wait_for(lambda: acked(redis) and fake.requests("fcm"), what="a first FCM job")
    fake.ctl("POST", "/expire-tokens")
    f = H.job("fcm", preview="hi")
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis) and len(fake.requests("fcm")) == 3, what="the 401 and the retry")
    recs = fake.requests("fcm")  # the fake refuses the token before it reads the body
    assert [(r["status"], r["auth"]) for r in recs] == [(200, "valid"), (401, "expired"),
                                                         (200, "valid")]
    assert recs[2]["body"]["message"]["token"] == f["token"]
    assert recs[2]["body"]["message"]["notification"] == {"body": "hi"}
    assert len(fake.requests("oauth")) == 2


def test_pushseen_newer_than_ts_skips(redis, fake, make_pushd):
    p = make_pushd()
    now = int(time.time() * 1000)
    seen = H.job(ts=now - 5000, device="synced")
    redis.cmd("SET", "mqchat:pushseen:alice:synced", str(now - 1000))
    equal = H.job(ts=now - 1000, device="synced")  # not later than the sync: skipped too
    newer = H.job(ts=now, device="synced")  # later than the sync: sent
    other = H.job(ts=now - 5000, device="stale")
    redis.cmd("SET", "mqchat:pushseen:alice:stale", str(now - 9000))
    for f in (seen, equal, newer, other):
        H.xadd(redis, f)
    H.wait_for(lambda: acked(redis), what="all four acknowledged")
    time.sleep(0.3)
    sent = {r["body"]["seq"] for r in fake.requests("apns")}
    assert sent == {newer["seq"], other["seq"]}
    H.wait_for(lambda: p.stats().get('pushd_skipped_total{reason="seen"}') == 2, what="skip stats")


def test_collapse_id_per_conversation(redis, fake, make_pushd):
    make_pushd()
    jobs = [H.job(conv="d:alice:bob", collapse="d:alice:bob"),
            H.job(conv="g:team1", collapse="g:team1"),
            H.job(conv="d:alice:bob", collapse="d:alice:bob"),
            H.job("fcm", conv="g:team1", collapse="g:team1")]
    H.xadd_many(redis, jobs)
    H.wait_for(lambda: acked(redis) and len(fake.requests("apns")) == 3 and fake.requests("fcm"),
               what="four jobs")
    by_seq = {r["body"]["seq"]: r for r in fake.requests("apns")}
    for f in jobs[:3]:
        r = by_seq[f["seq"]]
        assert r["headers"]["apns-collapse-id"] == f["conv"]
        assert r["body"]["aps"]["thread-id"] == f["conv"]
    assert fake.requests("fcm")[0]["body"]["message"]["android"]["collapse_key"] == "g:team1"


def test_two_pushd_share_a_stream_without_duplicates(redis, fake, make_pushd):
    a = make_pushd("a", batch_size=10)
    b = make_pushd("b", batch_size=10)
    jobs = [H.job("apns" if i % 3 else "fcm") for i in range(600)]
    for i in range(0, 600, 100):
        H.xadd_many(redis, jobs[i:i + 100])
        time.sleep(0.05)
    H.wait_for(lambda: acked(redis), what="600 jobs acknowledged", timeout=30)
    time.sleep(0.3)
    seqs = [r["body"]["seq"] for r in fake.requests("apns")] + \
           [r["body"]["message"]["data"]["seq"] for r in fake.requests("fcm")]
    assert len(seqs) == 600 and set(seqs) == {f["seq"] for f in jobs}
    H.wait_for(lambda: a.stats().get("pushd_acked_total", 0) + b.stats().get("pushd_acked_total", 0) == 600,
               what="stats of both")
    assert a.stats()["pushd_acked_total"] > 0 and b.stats()["pushd_acked_total"] > 0
    assert a.stop() == 0 and b.stop() == 0
    # Both left the group on the way out (nothing pending on them).
    assert redis.cmd("XINFO", "CONSUMERS", "mqchat:push", "pushd") == []
