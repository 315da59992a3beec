"""End to end, things dying: pushd killed -9 mid-batch (its jobs are
claimed by the next pushd, none lost), Redis frozen or restarted (pushd
reconnects and goes on), SIGTERM with requests in flight (exit 0, nothing
lost)."""

import os
import signal
import time

import pushd_harness as H


def acked(redis):
    return redis.pending() == 0 and redis.cmd("XLEN", "mqchat:push") == 0


def delivered_seqs(fake):
    return {r["body"]["seq"] for r in fake.requests("apns") if r["status"] == 200}


def test_kill9_mid_batch_then_restart_loses_nothing(redis, fake, make_pushd):
    fake.behaviour([{"role": "apns", "delay_ms": 150}])
    a = make_pushd("a", claim_min_idle="1s", concurrency=20, batch_size=20)
    jobs = [H.job() for _ in range(300)]
    H.xadd_many(redis, jobs)
    H.wait_for(lambda: len(delivered_seqs(fake)) >= 40, what="some delivered")
    a.kill9()
    pending_on_a = redis.pending()
    assert pending_on_a > 0
    b = make_pushd("b", claim_min_idle="1s", concurrency=100, batch_size=50)
    H.wait_for(lambda: acked(redis), what="every job acknowledged", timeout=30)
    assert delivered_seqs(fake) == {f["seq"] for f in jobs}  # at least once each
    assert "claimed" in b.log()


def test_redis_frozen_then_thawed(redis, fake, make_pushd):
    p = make_pushd(redis_timeout="500ms")
    first = [H.job() for _ in range(20)]
    H.xadd_many(redis, first)
    H.wait_for(lambda: acked(redis), what="first jobs")
    fake.behaviour([{"role": "apns", "delay_ms": 300}])
    more = [H.job() for _ in range(20)]
    H.xadd_many(redis, more)
    time.sleep(0.1)  # read, requests in flight
    os.kill(redis.proc.pid, signal.SIGSTOP)
    time.sleep(2.0)
    assert p.alive()
    os.kill(redis.proc.pid, signal.SIGCONT)
    H.wait_for(lambda: acked(redis), what="the rest acknowledged after the thaw", timeout=20)
    assert {f["seq"] for f in first + more} <= delivered_seqs(fake)
    assert "connection lost" in p.log() and p.log().count("connected to") >= 4


def test_redis_down_then_back(redis, fake, make_pushd, workdir):
    p = make_pushd()
    H.xadd_many(redis, [H.job() for _ in range(10)])
    H.wait_for(lambda: acked(redis), what="jobs before")
    redis.stop()
    time.sleep(1.5)
    assert p.alive()
    redis.start()  # same port, empty: the group is made again
    later = [H.job() for _ in range(10)]
    H.wait_for(lambda: redis.cmd("EXISTS", "mqchat:push") == 1, what="the group made again")
    H.xadd_many(redis, later)
    H.wait_for(lambda: acked(redis) and {f["seq"] for f in later} <= delivered_seqs(fake),
               what="jobs after the restart")
    assert "redis reader: connection lost" in p.log()
    assert p.stop() == 0


def test_sigterm_with_requests_in_flight(redis, fake, make_pushd):
    fake.behaviour([{"role": "apns", "delay_ms": 1000}])
    p = make_pushd(concurrency=10, batch_size=10)
    jobs = [H.job() for _ in range(50)]
    H.xadd_many(redis, jobs)
    H.wait_for(lambda: fake.stats()["streams_current"] >= 10, what="requests in flight")
    t = time.monotonic()
    assert p.stop() == 0
    assert time.monotonic() - t < 4
    # The ten in flight were answered and acknowledged (and deleted); the
    # rest are still in the stream, some pending on this consumer.
    delivered = delivered_seqs(fake)
    assert len(delivered) == 10
    assert redis.cmd("XLEN", "mqchat:push") == 50 - 10
    assert redis.pending() > 0
    assert "stopping" in p.log()
    # A later pushd (same consumer name) reads its own pending entries first.
    fake.behaviour([])
    q = make_pushd()
    H.wait_for(lambda: acked(redis), what="the rest delivered by the next pushd")
    assert {f["seq"] for f in jobs} <= delivered_seqs(fake)


def test_sigterm_deadline_leaves_the_rest_pending(redis, fake, make_pushd):
    fake.behaviour([{"role": "apns", "delay_ms": 5000}])
    p = make_pushd(concurrency=5, shutdown_timeout="500ms")
    H.xadd_many(redis, [H.job() for _ in range(5)])
    H.wait_for(lambda: fake.stats()["streams_current"] >= 5, what="requests in flight")
    t = time.monotonic()
    assert p.stop() == 0
    assert time.monotonic() - t < 2.5
    assert redis.pending() == 5
    assert "deadline passed" in p.log()
