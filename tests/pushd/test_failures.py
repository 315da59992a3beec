"""End to end, the provider's refusals: invalid tokens -> feedback;
429 + Retry-After -> retried after that long; 5xx for ever -> dead letter
after the retry limit; other refusals -> dead letter; an expired provider
token -> a new one; malformed jobs -> dead letter while pushd runs on; a
bad configuration -> exit 2 with one line naming the key."""

import os
import subprocess
import time

import pushd_harness as H


def acked(redis):
    return redis.pending() == 0 and redis.cmd("XLEN", "mqchat:push") == 0


def test_410_gives_feedback_and_ack(redis, fake, make_pushd):
    p = make_pushd()
    f = H.job()
    fake.behaviour([{"role": "apns", "token": f["token"], "status": 410, "timestamp": 1234567}])
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis) and redis.xrange("mqchat:push:feedback"), what="feedback")
    fb = redis.xrange("mqchat:push:feedback")
    assert len(fb) == 1
    assert fb[0][1] == {"platform": "apns", "token": f["token"], "user": f["user"],
                        "device": f["device"], "reason": "Unregistered", "ts": "1234567"}
    assert len(fake.requests("apns")) == 1
    assert redis.cmd("XLEN", "mqchat:push:dead") == 0
    assert "reason=Unregistered" in p.log() and f["token"] not in p.log()
    H.wait_for(lambda: p.stats().get('pushd_invalid_tokens_total{platform="apns"}') == 1, what="stats")


def test_bad_device_token_and_fcm_unregistered_give_feedback(redis, fake, make_pushd):
    make_pushd()
    a, g = H.job(), H.job("fcm")
    fake.behaviour([{"role": "apns", "token": a["token"], "status": 400, "reason": "BadDeviceToken"},
                    {"role": "fcm", "token": g["token"], "errorCode": "UNREGISTERED"}])
    H.xadd_many(redis, [a, g])
    H.wait_for(lambda: acked(redis) and len(redis.xrange("mqchat:push:feedback")) == 2,
               what="two feedback entries")
    fb = {e[1]["platform"]: e[1] for e in redis.xrange("mqchat:push:feedback")}
    assert fb["apns"]["reason"] == "BadDeviceToken" and fb["apns"]["token"] == a["token"]
    assert fb["fcm"]["reason"] == "UNREGISTERED" and fb["fcm"]["token"] == g["token"]


def test_429_retry_after_is_honoured(redis, fake, make_pushd):
    make_pushd(backoff_base="10ms", backoff_max="50ms")
    f = H.job()
    fake.behaviour([{"role": "apns", "token": f["token"], "status": 429, "retry_after": 2, "times": 1}])
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis), what="the retried job", timeout=10)
    recs = fake.requests("apns", token=f["token"])
    assert [r["status"] for r in recs] == [429, 200]
    gap = (recs[1]["time"] - recs[0]["time"]) / 1000
    assert 1.9 <= gap <= 3.5, gap


def test_fcm_quota_retry_after(redis, fake, make_pushd):
    make_pushd(backoff_base="10ms", backoff_max="50ms")
    f = H.job("fcm")
    fake.behaviour([{"role": "fcm", "token": f["token"], "errorCode": "QUOTA_EXCEEDED",
                     "retry_after": 1, "times": 1}])
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis), what="the retried FCM job")
    recs = fake.requests("fcm", token=f["token"])
    assert [r["status"] for r in recs] == [429, 200]
    assert (recs[1]["time"] - recs[0]["time"]) >= 950


def test_500_forever_goes_to_dead_letter(redis, fake, make_pushd):
    p = make_pushd(retry_limit=3)
    f = H.job(preview="secret words")
    fake.behaviour([{"role": "apns", "token": f["token"], "status": 500}])
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis) and redis.xrange("mqchat:push:dead"), what="dead letter",
               timeout=10)
    assert len(fake.requests("apns", token=f["token"])) == 4  # 1 + retry_limit
    dead = redis.xrange("mqchat:push:dead")
    assert len(dead) == 1
    d = dead[0][1]
    for k, v in f.items():
        assert d[k] == v, k  # the job's own fields
    assert d["attempts"] == "4" and d["status"] == "500"
    assert "InternalServerError" in d["reason"] and "retry limit" in d["reason"]
    assert "secret words" not in p.log() and f["token"] not in p.log()
    assert redis.cmd("XLEN", "mqchat:push:feedback") == 0
    H.wait_for(lambda: p.stats().get('pushd_dead_total{platform="apns"}') == 1, what="stats")


def test_other_4xx_dead_letter_at_once(redis, fake, make_pushd):
    make_pushd()
    f = H.job(app="com.someone.else")  # the fake answers 400 BadTopic
    g = H.job("fcm")
    fake.behaviour([{"role": "fcm", "token": g["token"], "errorCode": "SENDER_ID_MISMATCH"}])
    H.xadd_many(redis, [f, g])
    H.wait_for(lambda: acked(redis) and len(redis.xrange("mqchat:push:dead")) == 2, what="two dead")
    dead = {e[1]["platform"]: e[1] for e in redis.xrange("mqchat:push:dead")}
    assert dead["apns"]["reason"] == "BadTopic" and dead["apns"]["attempts"] == "1"
    assert dead["fcm"]["reason"] == "SENDER_ID_MISMATCH" and dead["fcm"]["status"] == "403"


def test_expired_provider_token_retried_once(redis, fake, make_pushd):
    make_pushd()
    f = H.job()
    fake.behaviour([{"role": "apns", "token": f["token"], "status": 403,
                     "reason": "ExpiredProviderToken", "times": 1}])
    H.xadd(redis, f)
    H.wait_for(lambda: acked(redis), what="the job")
    assert [r["status"] for r in fake.requests("apns", token=f["token"])] == [403, 200]
    # Refused again after the one retry: dead letter.
    g = H.job()
    fake.behaviour([{"role": "apns", "token": g["token"], "status": 403, "reason": "ExpiredProviderToken"}])
    H.xadd(redis, g)
    H.wait_for(lambda: acked(redis) and redis.xrange("mqchat:push:dead"), what="dead letter")
    assert len(fake.requests("apns", token=g["token"])) == 2


def test_malformed_jobs_dead_letter_and_pushd_goes_on(redis, fake, make_pushd):
    p = make_pushd()
    bad = [H.job(token=None), H.job(platform="wns"), H.job(ts="yesterday"),
           H.job(collapse="x" * 65), {"garbage": "\xff\x00"}, H.job(v="2")]
    H.xadd_many(redis, bad)
    redis.cmd("XADD", "mqchat:push", "*", "v", "1")
    good = H.job()
    H.xadd(redis, good)
    H.wait_for(lambda: acked(redis) and len(redis.xrange("mqchat:push:dead")) == 7,
               what="seven dead letters")
    dead = redis.xrange("mqchat:push:dead")
    assert all(d[1]["reason"].startswith("malformed") for d in dead), dead
    assert dead[0][1]["reason"] == "malformed: field token missing"
    assert [r["body"]["seq"] for r in fake.requests("apns")] == [good["seq"]]
    assert p.alive()
    H.wait_for(lambda: p.stats().get("pushd_malformed_total") == 7, what="stats")


def run_pushd(workdir, text, *args):
    conf = workdir / "bad.conf"
    conf.write_text(text)
    return subprocess.run([H.pushd_bin(), "-c", str(conf), *args], capture_output=True, text=True,
                          timeout=20)


def test_bad_config_exits_2_naming_the_key(workdir, creds, fake):
    d = workdir / "badconf"
    d.mkdir(exist_ok=True)
    ok = (f"apns_key_file = {creds.apns_key}\napns_key_id = K\napns_team_id = T\n"
          f"ca_file = {creds.ca}\n")
    cases = [
        (ok + "concurency = 5\n", "concurency: unknown key"),
        (ok + "concurrency = -5\n", "concurrency: must be an integer"),
        (ok + "redis = nowhere\n", "redis: must be host:port or unix:/path"),
        (ok + "backoff_max = 10 minutes\n", "backoff_max: must be a duration"),
        ("apns_key_id = K\napns_team_id = T\n", "apns_key_file: required"),
        (ok.replace(str(creds.apns_key), "/nonexistent.p8"), "apns_key_file: /nonexistent.p8"),
        (ok.replace(str(creds.apns_key), str(creds.fcm_sa)), "apns_key_file:"),
        (ok + f"fcm_service_account = {creds.apns_key}\n", "fcm_service_account:"),
        (ok.replace(str(creds.ca), "/nonexistent-ca.pem"), "ca_file:"),
        ("", "no provider configured"),
    ]
    for text, want in cases:
        r = run_pushd(d, text)
        assert r.returncode == 2, (text, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and want in lines[0], (want, r.stderr)
    r = subprocess.run([H.pushd_bin(), "-c", str(d / "missing.conf")], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 2 and "missing.conf" in r.stderr
    r = run_pushd(d, ok + f"fcm_service_account = {fake.sa_run}\n", "-t")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([H.pushd_bin(), "-x"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2


def test_every_key_is_documented_and_the_example_parses(workdir, creds):
    """config.c's keys = pushd.conf.example's keys, each in README.md; the
    example (with a provider filled in) passes -t."""
    import re
    src = (H.ROOT / "pushd" / "src" / "config.c").read_text()
    keys = set(re.findall(r'^\s*\{"([a-z_0-9]+)", T_', src, re.M))
    example = (H.ROOT / "pushd" / "pushd.conf.example").read_text()
    readme = (H.ROOT / "pushd" / "README.md").read_text()
    in_example = set(re.findall(r"^#?([a-z_0-9]+) =", example, re.M))
    assert keys and keys == in_example, keys ^ in_example
    for k in keys:
        assert f"`{k}`" in readme, k
    d = workdir / "example"
    d.mkdir(exist_ok=True)
    text = example + (f"apns_key_file = {creds.apns_key}\napns_key_id = K\napns_team_id = T\n")
    text = text.replace("#apns_key_file", "#x").replace("#apns_key_id", "#x").replace("#apns_team_id", "#x")
    r = run_pushd(d, text, "-t")
    assert r.returncode == 0, r.stderr
