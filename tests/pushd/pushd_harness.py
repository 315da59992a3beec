"""Helpers for pushd's end-to-end tests: a redis-server on a free loopback
port, the fake APNs / FCM / OAuth2 server (tests/fakes/fake_push.js), pushd
processes, and jobs in docs/PUSH.md's exact format.

Every wait is bounded (WAIT seconds unless said); every process started is
in its own session and killed at teardown. No Python Redis module: RespConn
speaks RESP2 itself."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FAKES = ROOT / "tests" / "fakes"
WAIT = float(os.environ.get("PUSHD_TEST_TIMEOUT", "15"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NODE = shutil.which("node") or shutil.which("nodejs") or "/usr/bin/node"
TOPIC = "com.example.mqchat"
KEY_ID = "KEYID12345"
TEAM_ID = "TEAMID1234"


def pushd_bin():
    p = os.environ.get("PUSHD_BIN")
    if not p or not os.path.isfile(p):
        raise RuntimeError(f"PUSHD_BIN={p!r} is not the built pushd binary")
    return p


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=WAIT, what="condition", interval=0.02):
    """Poll cond() until it returns a true value; return it, or fail."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except (OSError, ConnectionError, RedisError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f" (last error {last!r})" if last else ""))
        time.sleep(interval)


class RedisError(Exception):
    pass


class RespConn:
    """One RESP2 connection: cmd(*args) -> str / int / list / None; errors raise."""

    def __init__(self, port, timeout=WAIT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        ln = self.f.readline()
        if not ln.endswith(b"\r\n"):
            raise ConnectionError("redis closed the connection")
        kind, rest = ln[:1], ln[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"bad RESP line {ln[:60]!r}")

    def cmd(self, *args):
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipeline(self, cmds):
        self.sock.sendall(b"".join(self.encode(c) for c in cmds))
        out = []
        for _ in cmds:
            try:
                out.append(self.read())
            except RedisError as e:
                out.append(e)
        return out

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class Redis:
    """A redis-server on a free port (kept across restarts), no persistence."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self._conn = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self._ping(), what="redis-server to answer PING")
        return self

    def _ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited during start-up")
        c = RespConn(self.port, timeout=1)
        try:
            return c.cmd("PING") == "PONG"
        finally:
            c.close()

    def conn(self):
        if self._conn is None:
            self._conn = RespConn(self.port)
        return self._conn

    def cmd(self, *args):
        try:
            return self.conn().cmd(*args)
        except (OSError, ConnectionError):
            self._conn = None
            raise

    def pipeline(self, cmds):
        return self.conn().pipeline(cmds)

    def stop(self):
        if self._conn:
            self._conn.close()
            self._conn = None
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(WAIT)

    # -- stream helpers --
    def xrange(self, key):
        """[(id, {field: value})] of a whole stream."""
        out = []
        for eid, fields in self.cmd("XRANGE", key, "-", "+") or []:
            out.append((eid, dict(zip(fields[::2], fields[1::2]))))
        return out

    def pending(self, key="mqchat:push", group="pushd"):
        """Number of entries pending in the group (0 if no group)."""
        try:
            return self.cmd("XPENDING", key, group)[0]
        except RedisError:
            return 0


class Creds:
    """Throw-away credentials from gen_certs.sh."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        subprocess.run(["sh", str(FAKES / "gen_certs.sh"), str(self.dir)], check=True,
                       timeout=60, stdout=subprocess.DEVNULL)
        self.ca = self.dir / "ca.pem"
        self.cert = self.dir / "server.pem"
        self.key = self.dir / "server-key.pem"
        self.apns_key = self.dir / "apns-key.p8"
        self.fcm_sa = self.dir / "fcm-sa.json"


class Fake:
    """fake_push.js with all three roles on one TLS port."""

    def __init__(self, creds, workdir, extra=()):
        self.creds = creds
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sa_run = self.dir / "fcm-sa.run.json"
        self.log = self.dir / "fake.log"
        args = [NODE, str(FAKES / "fake_push.js"), "--cert", str(creds.cert), "--key",
                str(creds.key), "--apns-key", str(creds.apns_key), "--apns-key-id", KEY_ID,
                "--apns-team-id", TEAM_ID, "--apns-topic", TOPIC, "--fcm-sa", str(creds.fcm_sa),
                "--write-sa", str(self.sa_run)] + list(extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=open(self.log, "ab"), start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"fake_push.js did not start: {self.log.read_text()[-2000:]}")
        info = json.loads(line)
        self.port, self.control_port = info["port"], info["control_port"]
        self.url = f"https://127.0.0.1:{self.port}"

    def ctl(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def behaviour(self, rules):
        return self.ctl("POST", "/behaviour", rules)

    def reset(self):
        return self.ctl("POST", "/reset")

    def requests(self, role=None, **filters):
        q = [f"{k}={v}" for k, v in (("role", role),) if v] + [f"{k}={v}" for k, v in filters.items()]
        recs = self.ctl("GET", "/requests" + ("?" + "&".join(q) if q else ""))
        return recs if isinstance(recs, list) else recs.get("requests", recs)

    def stats(self):
        return self.ctl("GET", "/stats")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(WAIT)


class Pushd:
    """One pushd process with a generated config (overrides by keyword)."""

    def __init__(self, workdir, redis, fake, name="pushd", **conf):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.conf_path = self.dir / f"{name}.conf"
        self.log_path = self.dir / f"{name}.log"
        self.stats_path = self.dir / f"{name}.prom"
        c = {
            "redis": redis.address if redis else "127.0.0.1:1",
            "consumer": name,
            "block": "100ms",
            "claim_min_idle": "3s",
            "claim_interval": "200ms",
            "redis_timeout": "1s",
            "backoff_base": "50ms",
            "backoff_max": "400ms",
            "retry_limit": 3,
            "stats_file": str(self.stats_path),
            "stats_interval": "200ms",
            "shutdown_timeout": "5s",
            "log_level": "info",
        }
        if fake:
            c.update({
                "apns_endpoint": fake.url, "apns_sandbox_endpoint": fake.url,
                "apns_key_file": str(fake.creds.apns_key), "apns_key_id": KEY_ID,
                "apns_team_id": TEAM_ID, "apns_topic": TOPIC,
                "fcm_endpoint": fake.url, "fcm_service_account": str(fake.sa_run),
                "ca_file": str(fake.creds.ca),
            })
        for k, v in conf.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        self.conf = c
        self.proc = None

    def write_conf(self, text=None):
        if text is None:
            text = "# generated by pushd_harness.py\n" + "".join(f"{k} = {v}\n" for k, v in self.conf.items())
        self.conf_path.write_text(text)

    def start(self, wait=True):
        self.write_conf()
        self.proc = subprocess.Popen([pushd_bin(), "-c", str(self.conf_path)],
                                     stdin=subprocess.DEVNULL, stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            wait_for(lambda: "redis reader: connected" in self.log() or self._dead(),
                     what=f"{self.name} to connect to Redis")
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log()[-3000:]}"
        return self

    def _dead(self):
        return self.proc.poll() is not None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=WAIT):
        """SIGTERM; returns the exit status."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(WAIT)

    def stats(self):
        """The stats file as {sample name with labels: value}."""
        out = {}
        try:
            text = self.stats_path.read_text()
        except FileNotFoundError:
            return out
        for ln in text.splitlines():
            if ln and not ln.startswith("#"):
                k, v = ln.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def sanitizer_reports(self):
        return [ln for ln in self.log().splitlines()
                if "ERROR: AddressSanitizer" in ln or "runtime error:" in ln
                or "ERROR: LeakSanitizer" in ln]


_seq = [0]


def apns_token(i=None):
    """A 64-hex-digit device token (distinct per i)."""
    i = _seq[0] if i is None else i
    return ("%016x" % (0xA0000000 + i)) * 4


def job(platform="apns", **kw):
    """A job's fields, docs/PUSH.md's format, with defaults."""
    _seq[0] += 1
    n = _seq[0]
    f = {
        "v": "1",
        "job": f"node1:{n}",
        "platform": platform,
        "token": apns_token(n) if platform.startswith("apns") else f"fcm-token-{n}:APA91b_x",
        "app": "",
        "user": "alice",
        "device": f"phone{n}",
        "conv": "d:alice:bob",
        "seq": str(n),
        "sender": "bob",
        "collapse": "d:alice:bob",
        "badge": "3",
        "ts": str(int(time.time() * 1000)),
        "prio": "high",
    }
    f.update({k: str(v) for k, v in kw.items() if v is not None})
    for k, v in kw.items():
        if v is None:
            f.pop(k, None)
    return f


def xadd(redis, fields, key="mqchat:push"):
    args = ["XADD", key, "*"]
    for k, v in fields.items():
        args += [k, v]
    return redis.cmd(*args)


def xadd_many(redis, jobs, key="mqchat:push"):
    cmds = []
    for f in jobs:
        a = ["XADD", key, "*"]
        for k, v in f.items():
            a += [k, v]
        cmds.append(a)
    return redis.pipeline(cmds)
