"""Harness for the mqchat integration tests: a real mosquitto broker with the
mqchat plugin, JWT minting, the generated protobuf module, a `Device`
client over paho-mqtt and a real redis-server (`Redis`, presence) with a
raw RESP client.

Used by conftest.py (fixtures) and imported by the test modules.
Everything here talks to 127.0.0.1 only, and every wait is bounded.
"""

import atexit
import base64
import hashlib
import hmac
import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO = REPO / "proto" / "mqchat.proto"

MOSQUITTO = os.environ.get("MQCHAT_MOSQUITTO", "/usr/sbin/mosquitto")
PROTOC = os.environ.get("MQCHAT_PROTOC", shutil.which("protoc") or "/usr/bin/protoc")

# Every wait is bounded by this (seconds); scale up for slow (sanitizer) builds.
WAIT = float(os.environ.get("MQCHAT_IT_TIMEOUT", "10"))

HS256_SECRET = "mqchat-integration-secret-0123456789abcdef0123456789"
ISSUER = "mqchat-test"
AUDIENCE = "mqchat"
PREFIX = "mqchat/v1"

DEFAULT_OPTS = {
    "store_dir": None,  # filled with <tmp>/store
    "durability": "sync",
    "jwt_hs256_secret": HS256_SECRET,
    "jwt_issuer": ISSUER,
    "jwt_audience": AUDIENCE,
    "max_body": "4096",
    "group_max_members": "60",
    "rate_msgs_per_s": "1000",
    "rate_burst": "5000",
}

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:")


# ---------------------------------------------------------------------------
# Generated protobuf module
# ---------------------------------------------------------------------------

def _load_pb():
    out = tempfile.mkdtemp(prefix="mqchat-it-pb-")
    atexit.register(shutil.rmtree, out, True)
    r = subprocess.run(
        [PROTOC, f"--proto_path={PROTO.parent}", f"--python_out={out}", str(PROTO)],
        capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"protoc failed ({r.returncode}): {r.stderr}")
    path = Path(out) / "mqchat_pb2.py"
    spec = importlib.util.spec_from_file_location("mqchat_pb2", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mqchat_pb2"] = mod
    spec.loader.exec_module(mod)
    return mod


pb = _load_pb()

E = pb.ErrorCode  # E.Value("ERROR_CODE_MALFORMED") etc.


def ecode(name):
    """ecode('MALFORMED') -> numeric ErrorCode."""
    return pb.ErrorCode.Value("ERROR_CODE_" + name)


def ename(code):
    try:
        return pb.ErrorCode.Name(code)
    except ValueError:
        return f"<unknown error code {code}>"


# ---------------------------------------------------------------------------
# JWT minting
# ---------------------------------------------------------------------------

def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(user, device, *, alg="HS256", secret=HS256_SECRET, key=None,
               iss=ISSUER, aud=AUDIENCE, exp_in=3600, nbf=None, iat=True,
               extra_claims=None, drop=(), header=None, signature=None):
    """Mints a JWT. `key` is a cryptography private key for RS256/ES256.
    `drop` names claims to leave out; `header` replaces the JOSE header;
    `signature` (bytes) replaces the computed signature."""
    now = int(time.time())
    claims = {"sub": user, "did": device, "exp": now + exp_in}
    if iss is not None:
        claims["iss"] = iss
    if aud is not None:
        claims["aud"] = aud
    if nbf is not None:
        claims["nbf"] = nbf
    if iat:
        claims["iat"] = now
    claims.update(extra_claims or {})
    for k in drop:
        claims.pop(k, None)
    hdr = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing_input = (b64u(json.dumps(hdr, separators=(",", ":"))) + "." +
                     b64u(json.dumps(claims, separators=(",", ":"))))
    if signature is not None:
        sig = signature
    elif alg == "HS256":
        s = secret.encode() if isinstance(secret, str) else secret
        sig = hmac.new(s, signing_input.encode(), hashlib.sha256).digest()
    elif alg == "RS256":
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "none":
        sig = b""
    else:
        raise ValueError(alg)
    return signing_input + "." + b64u(sig)


def write_public_key(private_key, path):
    from cryptography.hazmat.primitives import serialization
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    Path(path).write_bytes(pem)
    return str(path)


# ---------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(paths, n):
    """The last n lines of each existing file in paths, each under a header."""
    out = []
    for p in paths:
        try:
            lines = p.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        out.append(f"== {p.name} (last {min(n, len(lines))} of {len(lines)} lines)")
        out.extend(lines[-n:])
    return "\n".join(out)


class BrokerError(AssertionError):
    pass


class Broker:
    """One mosquitto process with the mqchat plugin, in its own temp dir.

    restart support: kill9() then start() again reuses the store dir and port.
    """

    def __init__(self, workdir, plugin, opts=None, port=None, extra_conf=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store_dir = self.dir / "store"
        self.plugin = plugin
        self.port = port or free_port()
        self.opts = dict(DEFAULT_OPTS)
        self.opts["store_dir"] = str(self.store_dir)
        for k, v in (opts or {}).items():
            if v is None:
                self.opts.pop(k, None)
            else:
                self.opts[k] = str(v)
        self.extra_conf = list(extra_conf)
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.stderr_path = self.dir / "stderr.log"
        self.proc = None
        self.expect_exit = False  # set when we stop/kill it ourselves
        self.problems = []        # found at stop: hang on SIGTERM, unclean exit
        self.starts = 0

    @property
    def prefix(self):
        return self.opts.get("topic_prefix", PREFIX)

    def write_conf(self):
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"listener {self.port} 127.0.0.1",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "max_inflight_messages 0",
            "max_queued_messages 10000",
            "allow_duplicate_messages true",
            # as in broker-conf/mosquitto.conf.example: without it every reply
            # waits ~40 ms (Nagle + delayed ACK) and the suite is slower
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would drop to user "mosquitto", which could not
            # write the store in our temp dir.
            lines.append("user root")
        lines.append(f"plugin {self.plugin}")
        for k, v in self.opts.items():
            lines.append(f"plugin_opt_{k} {v}")
        lines.extend(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self, wait=True, timeout=WAIT):
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError("broker already running")
        self.write_conf()
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        pre = os.environ.get("MQCHAT_BROKER_LD_PRELOAD")
        if pre:
            env["LD_PRELOAD"] = pre
            env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
        self.starts += 1
        with open(self.stderr_path, "ab") as err:
            err.write(f"---- start #{self.starts} at {time.time():.3f}\n".encode())
            err.flush()
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)], stdin=subprocess.DEVNULL,
                stdout=err, stderr=err, env=env, cwd=str(self.dir),
                start_new_session=True)
        self.expect_exit = False
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise BrokerError(f"mosquitto exited with {rc} during start-up\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"mosquitto did not accept on 127.0.0.1:{self.port} within {timeout} s\n"
                    f"{self.log_tail()}")
            time.sleep(0.02)

    def wait_exit(self, timeout=WAIT):
        """For brokers expected to refuse to start: returns the exit code."""
        self.expect_exit = True
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.expect_exit = True
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(WAIT)

    def restart(self, timeout=WAIT):
        """kill -9 and start again on the same store dir and port."""
        self.kill9()
        return self.start(timeout=timeout)

    def stop(self, timeout=WAIT):
        """SIGTERM, then SIGKILL. Records a problem when the broker had died on
        its own, hung on SIGTERM or exited non-zero."""
        if self.proc is None:
            return
        rc = self.proc.poll()
        if rc is not None:
            if not self.expect_exit:
                self.problems.append(f"mosquitto died during the test (exit {rc})")
            return
        self.expect_exit = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(f"mosquitto did not exit within {timeout} s of SIGTERM")
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(WAIT)
            return
        if rc != 0:
            self.problems.append(f"mosquitto exited with {rc} after SIGTERM")

    def log_text(self):
        parts = []
        for p in (self.log_path, self.stderr_path):
            try:
                parts.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def log_tail(self, n=60):
        return log_tail((self.log_path, self.stderr_path), n)

    def sanitizer_reports(self):
        return [ln for ln in self.log_text().splitlines()
                if any(m in ln for m in SANITIZER_MARKERS)]

    def status(self):
        if self.proc is None:
            return "broker not started"
        rc = self.proc.poll()
        return "broker running" if rc is None else f"broker EXITED with {rc}"


# ---------------------------------------------------------------------------
# Redis (presence registry): a real redis-server and a raw RESP client
# ---------------------------------------------------------------------------

REDIS_SERVER = os.environ.get("MQCHAT_REDIS_SERVER", "/usr/bin/redis-server")


class RedisReplyError(Exception):
    """An error reply (-ERR ...) from Redis."""


class RespConn:
    """One RESP2 connection to a Redis server: cmd(*args) sends a command and
    returns the decoded reply (bulk strings as str, or bytes with raw=True;
    arrays as lists; nil as None; an error reply raises RedisReplyError)."""

    def __init__(self, port, host="127.0.0.1", timeout=WAIT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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

    def _line(self):
        ln = self.f.readline()
        if not ln.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        return ln[:-2]

    def read(self, raw=False):
        ln = self._line()
        kind, rest = ln[:1], ln[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("Redis closed the connection")
            return data[:-2] if raw else data[:-2].decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read(raw) for _ in range(n)]
        raise ConnectionError(f"unexpected RESP line {ln[:80]!r}")

    def cmd(self, *args, raw=False):
        self.sock.sendall(self.encode(args))
        return self.read(raw)

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class Redis:
    """One redis-server on a free loopback port, in its own temp dir, no
    persistence (`--save ""`, `--appendonly no`): a kill -9 and start()
    loses every key, as a real Redis crash without persistence would.

    start() / stop() / kill9() / restart() (same port) / freeze() and thaw()
    (SIGSTOP / SIGCONT); cmd(*args) runs one command on a fresh connection;
    conn() opens a separate one."""

    def __init__(self, workdir, port=None, extra_args=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log_path = self.dir / "redis.log"
        self.stderr_path = self.dir / "redis-stderr.log"
        self.proc = None
        self.expect_exit = False
        self.problems = []
        self.starts = 0
        self.frozen = False

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self, wait=True, timeout=WAIT):
        if self.alive():
            raise AssertionError("redis-server already running")
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--daemonize", "no", "--logfile", str(self.log_path),
                "--enable-debug-command", "local"] + self.extra_args
        self.starts += 1
        with open(self.stderr_path, "ab") as err:
            err.write(f"---- start #{self.starts} at {time.time():.3f}\n".encode())
            err.flush()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, cwd=str(self.dir),
                                         start_new_session=True)
        self.expect_exit = False
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"redis-server exited with {rc} during start-up\n"
                                     f"{self.log_tail()}")
            try:
                if self.cmd("PING", timeout=0.5) == "PONG":
                    return
            except (OSError, ConnectionError, RedisReplyError) as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer PING on {self.address} "
                                     f"within {timeout} s ({last!r})\n{self.log_tail()}")
            time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.expect_exit = True
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(WAIT)
        self.frozen = False

    def restart(self, timeout=WAIT):
        """kill -9 and start again on the same port (every key is gone)."""
        self.kill9()
        return self.start(timeout=timeout)

    def freeze(self):
        """SIGSTOP: the server stops answering, connections stay open (as in
        a network partition); thaw() resumes it with every key intact."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.frozen = True

    def thaw(self):
        if self.alive() and self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def stop(self, timeout=WAIT):
        """SIGTERM, then SIGKILL; records a problem if it had died on its own."""
        if self.proc is None:
            return
        self.thaw()
        rc = self.proc.poll()
        if rc is not None:
            if not self.expect_exit:
                self.problems.append(f"redis-server died during the test (exit {rc})")
            return
        self.expect_exit = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(f"redis-server did not exit within {timeout} s of SIGTERM")
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(WAIT)

    # -- commands -------------------------------------------------------

    def conn(self, timeout=WAIT):
        return RespConn(self.port, timeout=timeout)

    def cmd(self, *args, raw=False, timeout=WAIT):
        c = RespConn(self.port, timeout=timeout)
        try:
            return c.cmd(*args, raw=raw)
        finally:
            c.close()

    def hgetall(self, key):
        flat = self.cmd("HGETALL", key) or []
        return dict(zip(flat[0::2], flat[1::2]))

    def smembers(self, key):
        return set(self.cmd("SMEMBERS", key) or [])

    def command_calls(self):
        """{command: calls} from INFO commandstats (subcommands as 'client|setname')."""
        out = {}
        for ln in self.cmd("INFO", "commandstats").splitlines():
            if not ln.startswith("cmdstat_"):
                continue
            name, _, stats = ln[len("cmdstat_"):].partition(":")
            fields = dict(kv.split("=", 1) for kv in stats.split(",") if "=" in kv)
            out[name] = int(fields.get("calls", 0))
        return out

    def log_tail(self, n=40):
        return log_tail((self.log_path, self.stderr_path), n)

    def status(self):
        if self.proc is None:
            return "redis not started"
        rc = self.proc.poll()
        return "redis running" if rc is None else f"redis EXITED with {rc}"


def wait_until(fn, timeout=WAIT, interval=0.05, what="a condition"):
    """Polls fn() until it returns something truthy (returned) or raises
    AssertionError after timeout seconds, naming the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
        except (OSError, ConnectionError, RedisReplyError) as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                 f"(last: {last!r})")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Device
# ---------------------------------------------------------------------------

class JsonLinesProc:
    """A child process that prints one JSON object a line on stdout (the
    SDK's test driver, `mqchat-cli --script`), read on a thread into
    self.lines (a line that is not JSON becomes {kind_key: "unparsable",
    "line": ...}); its stderr collects in self.stderr. spawn() starts (or
    restarts) it, write() sends a command line, wait() blocks, bounded,
    until pred(self.lines) is true. `label` names it in failures."""

    def __init__(self, kind_key, label):
        self.kind_key = kind_key
        self.label = label
        self.lines = []
        self.cv = threading.Condition()
        self.stderr = b""
        self.proc = None

    def spawn(self, args):
        self.lines = []
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=1")
        # paho < 1.3.14 leaks queued publishes at destroy (the file says more)
        env.setdefault("LSAN_OPTIONS", "suppressions=" + os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "lsan-paho.supp"))
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = {self.kind_key: "unparsable", "line": raw.decode(errors="replace")}
            with self.cv:
                self.lines.append(ev)
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def _read_err(self):
        self.stderr += self.proc.stderr.read()

    def write(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait(self, pred, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                r = pred(self.lines)
                if r:
                    return r
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    self.cv.wait(0.2)  # one last look after the reader drained
                    r = pred(self.lines)
                    if r:
                        return r
                    raise AssertionError(f"{self.label}: no {what} within {timeout} s; "
                                         f"last lines: {self.lines[-20:]}; "
                                         f"stderr: {self.stderr[-2000:]!r}")
                self.cv.wait(min(left, 0.1))


class ConnectRefused(AssertionError):
    def __init__(self, rc, msg):
        super().__init__(msg)
        self.rc = rc


class _Client(mqtt.Client):
    """paho 1.6.1 parses the MQTT 5 PUBACK reason code and throws it away;
    record it (and mark PUBACKs for 3.1.1 as 0)."""

    def _handle_pubackcomp(self, cmd):
        try:
            pkt = self._in_packet["packet"]
            mid = struct.unpack("!H", pkt[:2])[0]
            rc = pkt[2] if len(pkt) > 2 else 0
            hook = getattr(self, "_mqchat_puback", None)
            if hook is not None and cmd == "PUBACK":
                hook(mid, rc)
        except Exception:  # never break paho's loop
            pass
        return super()._handle_pubackcomp(cmd)


def _summ_event(ev):
    which = ev.WhichOneof("body")
    if which == "message":
        m = ev.message
        return (f"msg({m.conversation_id} seq={m.seq} inbox={m.inbox_seq} "
                f"from={m.sender_user_id}:{m.sender_device_id} kind={m.kind})")
    if which == "receipt":
        r = ev.receipt
        return f"receipt({r.conversation_id} {r.user_id} d={r.delivered_seq} r={r.read_seq})"
    if which == "typing":
        return f"typing({ev.typing.conversation_id} {ev.typing.user_id} {ev.typing.typing})"
    if which == "presence":
        p = ev.presence
        try:
            state = pb.PresenceState.Name(p.state)
        except ValueError:
            state = str(p.state)
        return f"presence({p.user_id} {state} last_seen={p.last_seen_ms})"
    return f"{which}"


class Device:
    """A device: one paho client (MQTT 3.1.1 by default, `v5=True` for MQTT 5),
    clean session, client id "<user>:<device>", password a JWT.

    Collects, from its message callback:
      events     ServerEvent from {p}/u/<user>/inbox
      acks       SendAck from {p}/u/<user>/d/<device>/ack
      responses  Response from {p}/u/<user>/d/<device>/resp
      other      (topic, payload) of anything else
      bad        (topic, payload, error) that did not parse
    """

    _ids = itertools.count(1)

    def __init__(self, broker, user, device="phone", *, v5=False, token=None,
                 username=None, client_id=None, subscribe_inbox=True, connect=True,
                 keepalive=60, timeout=WAIT):
        self.broker = broker
        self.keepalive = keepalive
        self.user = user
        self.device = device
        self.v5 = v5
        self.token = token if token is not None else make_token(user, device)
        self.username = user if username is None else username
        self.client_id = f"{user}:{device}" if client_id is None else client_id
        self.prefix = broker.prefix
        self.base = f"{self.prefix}/u/{user}/d/{device}"
        self.inbox_topic = f"{self.prefix}/u/{user}/inbox"
        self.cv = threading.Condition()
        self.events = []
        self.acks = []
        self.responses = []
        self.other = []
        self.bad = []
        self.pubacks = {}   # mid -> reason code (0 for MQTT 3.1.1)
        self.subacks = {}   # mid -> list of int codes
        self.connack = None
        self.connected = False
        self.disconnected = False
        self._rid = itertools.count(1)
        self._cmid = itertools.count(1)
        self.uid = next(self._ids)
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kw = {} if v5 else {"clean_session": True}
        self.client = _Client(client_id=self.client_id, protocol=proto,
                              reconnect_on_failure=False, **kw)
        self.client._mqchat_puback = self._on_puback
        self.client.username_pw_set(self.username, self.token)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._loop_started = False
        if connect:
            self.connect(timeout=timeout)
            if subscribe_inbox:
                codes = self.subscribe(self.inbox_topic, qos=1, timeout=timeout)
                if codes[0] not in (0, 1):
                    raise AssertionError(
                        f"{self}: SUBACK for own inbox {self.inbox_topic} was {codes}")

    def __repr__(self):
        return f"Device({self.client_id}{' v5' if self.v5 else ''})"

    # -- callbacks (paho's network thread) ------------------------------

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        with self.cv:
            self.connack = int(getattr(rc, "value", rc))
            self.connected = self.connack == 0
            self.cv.notify_all()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        with self.cv:
            self.connected = False
            self.disconnected = True
            self.cv.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        codes = [int(getattr(c, "value", c)) for c in granted]
        with self.cv:
            self.subacks[mid] = codes
            self.cv.notify_all()

    def _on_puback(self, mid, rc):
        with self.cv:
            self.pubacks[mid] = rc
            self.cv.notify_all()

    def _on_message(self, client, userdata, msg):
        topic, payload = msg.topic, msg.payload
        try:
            if topic == self.inbox_topic:
                ev = pb.ServerEvent()
                ev.ParseFromString(payload)
                item = ("events", ev)
            elif topic == self.base + "/ack":
                a = pb.SendAck()
                a.ParseFromString(payload)
                item = ("acks", a)
            elif topic == self.base + "/resp":
                r = pb.Response()
                r.ParseFromString(payload)
                item = ("responses", r)
            else:
                item = ("other", (topic, payload))
        except Exception as e:  # a payload that does not parse is a server bug
            item = ("bad", (topic, payload, repr(e)))
        with self.cv:
            getattr(self, item[0]).append(item[1])
            self.cv.notify_all()

    # -- connection -----------------------------------------------------

    def connect(self, timeout=WAIT):
        if self.v5:
            self.client.connect("127.0.0.1", self.broker.port, keepalive=self.keepalive,
                                clean_start=True)
        else:
            self.client.connect("127.0.0.1", self.broker.port, keepalive=self.keepalive)
        self.client.loop_start()
        self._loop_started = True
        with self.cv:
            ok = self.cv.wait_for(lambda: self.connack is not None or self.disconnected, timeout)
        if not ok:
            self.close()
            raise AssertionError(f"{self}: no CONNACK within {timeout} s ({self.broker.status()})")
        if self.connack != 0:
            rc = self.connack
            self.close()
            raise ConnectRefused(rc, f"{self}: CONNACK refused with {rc}")
        if not self.connected:
            self.close()
            raise ConnectRefused(None, f"{self}: connection closed before CONNACK")

    def close(self):
        try:
            if self.connected:
                self.client.disconnect()
        except Exception:
            pass
        if self._loop_started:
            self.client.loop_stop()
            self._loop_started = False
        self.connected = False

    def _wait(self, pred, timeout, what):
        with self.cv:
            ok = self.cv.wait_for(pred, timeout)
        if not ok:
            raise AssertionError(
                f"{self}: timed out after {timeout} s waiting for {what} "
                f"({self.broker.status()}; connected={self.connected}; "
                f"events={[_summ_event(e) for e in self.events[-8:]]} "
                f"acks={len(self.acks)} responses={len(self.responses)} bad={self.bad[-3:]})")

    # -- MQTT primitives ------------------------------------------------

    def subscribe(self, topic, qos=1, timeout=WAIT):
        """Subscribes and returns the SUBACK codes (ints: 0/1/2, 0x80, 0x87...)."""
        rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"{self}: subscribe({topic}) failed locally: rc={rc}")
        self._wait(lambda: mid in self.subacks, timeout, f"SUBACK for {topic}")
        return self.subacks[mid]

    def publish(self, topic, payload, qos=1, retain=False, wait=True, timeout=WAIT):
        """Publishes; with wait and qos 1 returns the PUBACK reason code (always 0
        for MQTT 3.1.1), else returns the mid. `topic` is absolute, or relative to
        the device's own base when it starts with '/'."""
        if topic.startswith("/"):
            topic = self.base + topic
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"{self}: publish to {topic} failed locally: rc={info.rc} "
                                 f"({self.broker.status()})")
        if not wait or qos == 0:
            return info.mid
        return self.wait_puback(info.mid, timeout)

    def wait_puback(self, mid, timeout=WAIT):
        self._wait(lambda: mid in self.pubacks, timeout, f"PUBACK for mid {mid}")
        return self.pubacks[mid]

    # -- mqchat ---------------------------------------------------------

    def new_cmid(self):
        return f"c{self.uid}-{next(self._cmid)}"

    def send_request(self, conv, body=b"", client_msg_id=None, **fields):
        if client_msg_id is None:
            client_msg_id = self.new_cmid()
        if isinstance(body, str):
            body = body.encode()
        return pb.SendRequest(client_msg_id=client_msg_id, conversation_id=conv, body=body,
                              **fields)

    def send_nowait(self, conv, body=b"", client_msg_id=None, **fields):
        """Publishes a SendRequest without waiting; returns (client_msg_id, mid)."""
        req = self.send_request(conv, body, client_msg_id, **fields)
        mid = self.publish("/send", req.SerializeToString(), wait=False)
        return req.client_msg_id, mid

    def send(self, conv, body=b"", client_msg_id=None, timeout=WAIT, **fields):
        """Sends and returns the SendAck (which may carry an error)."""
        cmid, mid = self.send_nowait(conv, body, client_msg_id, **fields)
        ack = self.take_ack(cmid, timeout)
        self.last_puback = self.pubacks.get(mid)
        self.last_mid = mid
        return ack

    def send_ok(self, conv, body=b"", client_msg_id=None, timeout=WAIT, **fields):
        ack = self.send(conv, body, client_msg_id, timeout=timeout, **fields)
        if ack.HasField("error"):
            raise AssertionError(f"{self}: send to {conv} refused: {ename(ack.error.code)} "
                                 f"{ack.error.message!r}")
        return ack

    def send_many(self, conv, bodies, timeout=WAIT, **fields):
        """Pipelines one SendRequest per body (publishing in order on this
        connection), then collects the ACKs; raises on a refused one.
        Returns the ACKs in send order."""
        cmids = [self.send_nowait(conv, b, **fields)[0] for b in bodies]
        acks = [self.take_ack(c, timeout) for c in cmids]
        bad = [describe(a) for a in acks if a.HasField("error")]
        if bad:
            raise AssertionError(f"{self}: sends to {conv} refused: {bad[:5]}")
        return acks

    def take_ack(self, client_msg_id, timeout=WAIT):
        """Waits for (and removes) the first SendAck for client_msg_id."""
        def find():
            for i, a in enumerate(self.acks):
                if a.client_msg_id == client_msg_id:
                    return i
            return None
        self._wait(lambda: find() is not None, timeout, f"SendAck for {client_msg_id!r}")
        with self.cv:
            return self.acks.pop(find())

    def new_rid(self):
        return f"r{self.uid}.{next(self._rid)}"

    def request_nowait(self, request_id=None, **body):
        rid = self.new_rid() if request_id is None else request_id
        req = pb.Request(request_id=rid, **body)
        self.publish("/req", req.SerializeToString(), wait=False)
        return rid

    def request(self, timeout=WAIT, request_id=None, **body):
        """request(sync=pb.SyncRequest(...)) -> Response (may carry an error)."""
        rid = self.request_nowait(request_id=request_id, **body)
        return self.take_response(rid, timeout)

    def request_ok(self, timeout=WAIT, **body):
        r = self.request(timeout=timeout, **body)
        if r.WhichOneof("body") == "error":
            raise AssertionError(f"{self}: request {list(body)} refused: "
                                 f"{ename(r.error.code)} {r.error.message!r}")
        return r

    def take_response(self, request_id, timeout=WAIT):
        """Waits for (and removes) the first Response with request_id."""
        def find():
            for i, r in enumerate(self.responses):
                if r.request_id == request_id:
                    return i
            return None
        self._wait(lambda: find() is not None, timeout, f"Response for {request_id!r}")
        with self.cv:
            return self.responses.pop(find())

    def take_any_response(self, timeout=WAIT, what="a Response"):
        self._wait(lambda: len(self.responses) > 0, timeout, what)
        with self.cv:
            return self.responses.pop(0)

    def sync_page(self, after=0, limit=0, timeout=WAIT):
        r = self.request_ok(timeout=timeout,
                            sync=pb.SyncRequest(after_inbox_seq=after, limit=limit))
        if r.WhichOneof("body") != "sync":
            raise AssertionError(f"{self}: sync answered with {r.WhichOneof('body')}")
        return r.sync

    def sync_all(self, after=0, limit=0, max_pages=2000, timeout=WAIT):
        """Pages while `more`. Returns (messages, pages) where pages is the
        list of SyncResponse. Checks ascending inbox_seq > after."""
        msgs, pages = [], []
        cursor = after
        for _ in range(max_pages):
            page = self.sync_page(cursor, limit, timeout)
            pages.append(page)
            for m in page.messages:
                if m.inbox_seq <= cursor:
                    raise AssertionError(f"{self}: sync after {cursor} returned inbox_seq "
                                         f"{m.inbox_seq} (not ascending / not after cursor)")
                cursor = m.inbox_seq
                msgs.append(m)
            if not page.more:
                return msgs, pages
            if not page.messages:
                raise AssertionError(f"{self}: sync page with more=true but no messages")
        raise AssertionError(f"{self}: sync still had more after {max_pages} pages")

    def receipt(self, conv, rtype, seq, qos=1):
        r = pb.Receipt(conversation_id=conv, type=rtype, seq=seq)
        return self.publish("/receipt", r.SerializeToString(), qos=qos)

    def typing(self, conv, typing=True, qos=0, user_id=""):
        t = pb.Typing(conversation_id=conv, typing=typing, user_id=user_id)
        return self.publish("/typing", t.SerializeToString(), qos=qos)

    # -- inbox ----------------------------------------------------------

    def messages(self, conv=None):
        with self.cv:
            return [e.message for e in self.events if e.WhichOneof("body") == "message"
                    and (conv is None or e.message.conversation_id == conv)]

    def wait_messages(self, n, conv=None, timeout=WAIT):
        """Waits until at least n Messages (of conv, if given) arrived on the
        inbox; returns all of them so far."""
        def count():
            return sum(1 for e in self.events if e.WhichOneof("body") == "message"
                       and (conv is None or e.message.conversation_id == conv))
        self._wait(lambda: count() >= n, timeout,
                   f"{n} inbox messages{' in ' + conv if conv else ''} (have {count()})")
        return self.messages(conv)

    def wait_event(self, pred, timeout=WAIT, what="an inbox event", start=0):
        """Waits for the first ServerEvent (index >= start) matching pred; returns it."""
        def find():
            for e in self.events[start:]:
                if pred(e):
                    return e
            return None
        self._wait(lambda: find() is not None, timeout, what)
        with self.cv:
            return find()

    def events_of(self, kind):
        with self.cv:
            return [getattr(e, kind) for e in self.events if e.WhichOneof("body") == kind]


def close_all(devices):
    for d in devices:
        try:
            d.close()
        except Exception:
            pass


def is_error(resp_or_ack, name):
    """True if a Response or SendAck carries an Error with code `name`."""
    if isinstance(resp_or_ack, pb.SendAck):
        return resp_or_ack.HasField("error") and resp_or_ack.error.code == ecode(name)
    return (resp_or_ack.WhichOneof("body") == "error"
            and resp_or_ack.error.code == ecode(name))


def describe(x):
    if isinstance(x, pb.SendAck):
        if x.HasField("error"):
            return f"SendAck(error={ename(x.error.code)} {x.error.message!r})"
        return f"SendAck(seq={x.seq} inbox_seq={x.inbox_seq} dup={x.duplicate})"
    if isinstance(x, pb.Response):
        w = x.WhichOneof("body")
        if w == "error":
            return f"Response({x.request_id} error={ename(x.error.code)} {x.error.message!r})"
        return f"Response({x.request_id} {w})"
    return repr(x)


def dm(a, b):
    """The 1:1 conversation id of users a and b."""
    a, b = sorted([a, b], key=lambda s: s.encode())
    return f"d:{a}:{b}"
