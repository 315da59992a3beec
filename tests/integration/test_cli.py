"""mqchat-cli (clients/c-sdk/cli, path in MQCHAT_CLI) against a real broker.

Scripted mode: CLIs for alice, bob and carol (commands on stdin, every
event and result one JSON line on stdout) exchange messages, list
conversations with unread counts, mark read (receipts), type, watch
presence (a real redis-server), create a group and add a member, read
history; bad commands are error lines, never an exit; EOF drains and
exits 0 (1 when it cannot, 3 with --strict after a failure). The token
options (--token, --token-file, --dev-secret-file), --prefix, --mqtt5,
--tls/--cafile (certificates from broker-conf/gen-dev-certs.sh) and usage
errors.

Interactive mode: alice's CLI runs in a tmux pane (private socket, fixed
size) driven with send-keys and read with capture-pane: /list, /open, a
typed message reaching bob, bob's reply and a message arriving while a
line is half typed (the line stays intact), /quit. Under ASan the pane's
CLI writes sanitizer reports to a log_path the test checks.

Every wait is bounded (H.WAIT)."""

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import mqchat_harness as H

WAIT = H.WAIT
CLI = os.environ.get("MQCHAT_CLI")
TMUX = shutil.which("tmux")
AB = H.dm("alice", "bob")

pytestmark = pytest.mark.skipif(not CLI, reason="MQCHAT_CLI is not set")


def cli_args(broker, user, state_dir, secret_file, device="cli"):
    return [CLI, "--port", str(broker.port), "--user", user, "--device", device,
            "--state-dir", str(state_dir), "--dev-secret-file", str(secret_file),
            "--iss", H.ISSUER, "--aud", H.AUDIENCE, "--wait-timeout", str(int(WAIT * 1000))]


class ScriptCli(H.JsonLinesProc):
    """One `mqchat-cli --script` process; its JSON lines in self.lines."""

    def __init__(self, broker, user, root, secret_file, extra=(), auth=None):
        super().__init__("type", user)
        self.user = user
        self.expect_rc = 0  # the exit status the fixture expects
        self.n = 0
        args = cli_args(broker, user, root / user, secret_file) + ["--script", *extra]
        if auth is not None:  # instead of --dev-secret-file and its claims
            i = args.index("--dev-secret-file")
            del args[i:i + 6]
            args[i:i] = auth
        self.spawn(args)

    send_line = H.JsonLinesProc.write

    def run(self, line, ok=True, timeout=WAIT):
        """Runs a command; returns its result (or error) line. A request's
        result carries its rid; use answer() for the response."""
        self.n += 1
        n = self.n
        self.send_line(line)
        # wait-* commands answer when their condition holds (or time out)
        r = self.wait(lambda ls: next((x for x in ls if x.get("n") == n and
                                       x["type"] in ("result", "error")), None),
                      f"result of {line!r}", timeout + WAIT)
        if ok is not None:
            assert (r["type"] == "result") == ok, f"{line!r}: {r}"
        return r

    def answer(self, line, timeout=WAIT):
        """Runs a request command; returns its response line."""
        rid = self.run(line)["rid"]
        return self.wait(lambda ls: next((x for x in ls if x["type"] == "response" and
                                          x["rid"] == rid), None),
                         f"response to {line!r}", timeout)

    def of(self, kind, **match):
        with self.cv:
            return [x for x in self.lines if x["type"] == kind and
                    all(x.get(k) == v for k, v in match.items())]

    def wait_for(self, kind, n=1, timeout=WAIT, **match):
        self.wait(lambda ls: len([x for x in ls if x["type"] == kind and
                                  all(x.get(k) == v for k, v in match.items())]) >= n,
                  f"{n} {kind} {match}", timeout)
        return self.of(kind, **match)

    def close(self):
        """EOF on stdin: the CLI drains and exits; returns its exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(2 * WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        self.err_reader.join(WAIT)
        return self.proc.returncode


@pytest.fixture
def clis(request):
    root = Path(tempfile.mkdtemp(prefix="mqchat-it-cli-"))
    secret = root / "dev.secret"
    secret.write_text(H.HS256_SECRET + "\n")
    made = []

    def make(broker, user, extra=(), auth=None):
        c = ScriptCli(broker, user, root, secret, extra, auth)
        made.append(c)
        return c

    make.root, make.secret = root, secret
    yield make
    problems = []
    for c in made:
        rc = c.close()
        if rc != c.expect_rc:
            problems.append(f"{c.user} exited {rc}: {c.stderr[-3000:]!r}")
        if b"Sanitizer" in c.stderr or b"runtime error" in c.stderr:
            problems.append(f"{c.user} sanitizer: {c.stderr[-3000:]!r}")
        bad = c.of("sdk_error") + c.of("unparsable")
        if bad:
            problems.append(f"{c.user}: {bad}")
    shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_scripted_session(redis, make_broker, clis):
    broker = make_broker(opts={"redis": redis.address, "node_id": "n1", "node_ttl_s": 3,
                               "presence_debounce_ms": 300})
    alice = clis(broker, "alice")
    bob = clis(broker, "bob")
    alice.run("wait-up-to-date")
    bob.run("/wait-up-to-date")  # the '/' is optional

    # messages both ways
    r1 = alice.run(f"send {AB} hello bob")
    r2 = alice.run(f"send {AB} second line, with  two spaces")
    assert r1["cmid"] and r1["cmid"] != r2["cmid"]
    alice.run("wait-sent")
    sent = alice.of("sent")
    assert [(s["cmid"], s["seq"]) for s in sent] == [(r1["cmid"], 1), (r2["cmid"], 2)]
    got = bob.wait_for("message", 2)
    assert [(m["seq"], m["from"], m["body"], m["kind"]) for m in got] == [
        (1, "alice", "hello bob", "user"), (2, "alice", "second line, with  two spaces", "user")]
    # the CLI sends delivered receipts for what it received
    alice.wait(lambda ls: any(x["type"] == "receipt" and x["user"] == "bob" and
                              x["delivered_seq"] == 2 for x in ls), "delivered receipt")

    # unread counts, then read -> a read receipt to alice and unread 0
    lst = bob.answer("list")
    assert lst["ok"], lst
    conv = {c["conv"]: c for c in lst["conversations"]}
    assert conv[AB]["unread"] == 2 and conv[AB]["head_seq"] == 2, lst
    assert conv[AB]["group"] is False and conv[AB]["last_seq"] == 2, lst
    assert bob.run(f"read {AB}")["seq"] == 2
    alice.wait(lambda ls: any(x["type"] == "receipt" and x["user"] == "bob" and
                              x["read_seq"] == 2 for x in ls), "read receipt")
    assert {c["conv"]: c for c in bob.answer("list")["conversations"]}[AB]["unread"] == 0

    # typing and the reply
    bob.run(f"typing {AB} on")
    t = alice.wait_for("typing", user="bob")[0]
    assert t["conv"] == AB and t["on"] is True
    bob.run(f"send {AB} hi alice \u00e9\u6f22")
    back = alice.wait_for("message", 1)
    assert back[0]["body"] == "hi alice \u00e9\u6f22" and back[0]["seq"] == 3

    # history, oldest first
    h = alice.answer(f"history {AB} 10")
    assert [m["body"] for m in h["messages"]] == [
        "hello bob", "second line, with  two spaces", "hi alice \u00e9\u6f22"]
    assert h["more"] is False

    # presence: alice watches bob (a contact now); bob leaves -> offline
    w = alice.answer("watch bob")
    assert w["ok"] and w["presence"][0]["user"] == "bob", w
    assert w["presence"][0]["state"] == "online", w

    # a group, and a member added later
    g = alice.answer('group "Team room" bob')
    assert g["ok"] and g["group"].startswith("g:"), g
    gid = g["group"]
    created = bob.wait_for("message", conv=gid)
    assert created[0]["kind"] == "event" and created[0]["event"] == "created"
    assert created[0]["title"] == "Team room"
    add = alice.answer(f"add {gid} carol")
    assert add["ok"], add
    added = bob.wait(lambda ls: [x for x in ls if x["type"] == "message" and
                                 x["conv"] == gid and x.get("event") == "members_added"],
                     "members_added")
    assert added[0]["users"] == ["carol"] and added[0]["actor"] == "alice"
    alice.run(f"send {gid} welcome carol")
    alice.run("wait-sent")
    carol = clis(broker, "carol", extra=["--mqtt5"])
    carol.run("wait-up-to-date")
    assert "welcome carol" in [m.get("body") for m in carol.of("message", conv=gid)]
    cl = carol.answer("list")
    g = {c["conv"]: c for c in cl["conversations"]}[gid]
    assert g["group"] is True and g["role"] == 1 and g["last_seq"] == g["head_seq"], cl
    assert g["title"] == "Team room", cl
    assert carol.answer(f"history {gid} 50")["ok"]

    # bad commands: error lines that name them; the CLI goes on
    for bad in ["bogus", "send", f"send {AB}", "read d:nobody:nothing", "history x abc",
                "list -3", "wait-sent abc", "group", "add g:x", "typing x sideways",
                '"unterminated', "/"]:
        e = bob.run(bad, ok=False)
        assert e["type"] == "error" and e["error"], e
    assert bob.answer(f"history {AB} 1")["messages"][0]["seq"] == 3  # still fine

    # a refused request is a response with the error
    nm = carol.answer(f"history {AB} 5")
    assert nm["ok"] is False and nm["error"] in ("not_member", "permission_denied",
                                                 "unknown_conversation"), nm
    carol.run("status")

    # bob quits (EOF: drain, exit 0); alice sees him go offline
    bob.run(f"send {AB} bye")
    assert bob.close() == 0
    assert "bye" in [m["body"] for m in alice.wait_for("message", 2)]
    off = alice.wait_for("presence", user="bob", state="offline", timeout=WAIT + 1)
    assert off[0]["last_seen_ms"] > 0

    # wait-event and wait timeouts are results / errors, not hangs
    assert alice.run("wait-event presence 200", ok=False)["error"].startswith("timed out")
    alice.run("sleep 10")


def test_scripted_eof_drains_the_outbox(broker, clis):
    alice = clis(broker, "alice")
    # a line over 1 MiB: one error line, dropped; the next line runs
    alice.n += 1
    alice.send_line("send " + AB + " " + "x" * (3 << 20))
    err = alice.wait(lambda ls: [x for x in ls if x.get("n") == 1], "the long line's error")
    assert err[0]["type"] == "error" and "longer than" in err[0]["error"], err
    assert alice.run("status")["outbox"] == 0
    # no wait: EOF right after the sends; the CLI exits once they are SENT
    for i in range(5):
        alice.send_line(f"send {AB} m{i}")
    assert alice.close() == 0
    assert len(alice.of("sent")) == 5, alice.lines
    bob = clis(broker, "bob")
    bob.run("wait-up-to-date")
    assert [m["body"] for m in bob.of("message")] == [f"m{i}" for i in range(5)]


class Tmux:
    """A private tmux server (own socket) with one pane of a fixed size."""

    def __init__(self, root):
        self.sock = f"mqchat-it-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root = root

    def tmux(self, *args, check=True):
        return subprocess.run([TMUX, "-L", self.sock, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=WAIT, check=check)

    def start(self, argv, env):
        self.tmux("new-session", "-d", "-s", "cli", "-x", "120", "-y", "40",
                  "env", *[f"{k}={v}" for k, v in env.items()], *argv)

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "cli", *keys)

    def type(self, text):
        self.tmux("send-keys", "-t", "cli", "-l", text)

    def screen(self):
        r = self.tmux("capture-pane", "-p", "-J", "-t", "cli", "-S", "-500", check=False)
        return r.stdout

    def wait_text(self, pred, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"tmux pane: no {what} within {timeout} s; "
                                     f"pane:\n{s}")
            time.sleep(0.1)

    def kill(self):
        self.tmux("kill-server", check=False)


@pytest.mark.skipif(not TMUX, reason="tmux is not installed (scripts/install-deps.sh installs it)")
def test_interactive_session_in_tmux(broker, clis):
    root = clis.root
    bob = clis(broker, "bob")
    bob.run("wait-up-to-date")
    bob.run(f"send {AB} first from bob")
    bob.run("wait-sent")

    status = root / "alice.exit"
    asan_log = root / "asan"
    env = {"ASAN_OPTIONS": f"log_path={asan_log}:detect_leaks=1",
           "UBSAN_OPTIONS": f"log_path={asan_log}:print_stacktrace=1",
           "INPUTRC": "/dev/null", "TERM": "screen", "HOME": str(root), "LANG": "C.UTF-8"}
    script = 'exec 2>"$0.stderr"; "$@"; echo "exit=$?" > "$0"'
    argv = ["sh", "-c", script, str(status)] + cli_args(broker, "alice", root / "alice",
                                                        clis.secret)
    tm = Tmux(root)
    try:
        tm.start(argv, env)
        tm.wait_text(lambda s: "-- up to date" in s, "up to date")
        tm.type("/list")
        tm.keys("Enter")
        s = tm.wait_text(lambda s: any(l.startswith(AB) for l in s.splitlines()), "/list row")
        row = next(l for l in s.splitlines() if l.startswith(AB)).split()
        assert row[1] == "1", f"unread count in {row}"

        tm.type(f"/open {AB}")
        tm.keys("Enter")
        # once from the sync at login, once from /open's history
        tm.wait_text(lambda s: s.count("bob: first from bob") == 2, "history on /open")
        tm.wait_text(lambda s: s.rstrip().endswith(f"{AB}>"), "the conversation's prompt")

        tm.type("hello from tmux \u00e9\u6f22")
        tm.keys("Enter")
        got = bob.wait_for("message", 1, conv=AB)  # bob's own sends are not messages
        assert got[-1]["body"] == "hello from tmux \u00e9\u6f22" and got[-1]["from"] == "alice"
        tm.wait_text(lambda s: "] sent" in s, "sent")
        # alice has the conversation open: she marks read what she saw
        bob.wait(lambda ls: any(x["type"] == "receipt" and x["user"] == "alice" and
                                x["read_seq"] >= 1 for x in ls), "alice's read receipt")

        bob.run(f"send {AB} reply from bob")
        tm.wait_text(lambda s: "bob: reply from bob" in s, "bob's reply")

        # a message arriving while a line is half typed: printed above it,
        # and the half line is still there to finish
        tm.type("half a li")
        tm.wait_text(lambda s: s.rstrip().endswith(f"{AB}> half a li"), "the half line")
        bob.wait_for("typing", user="alice")  # the CLI sends typing while a line is typed
        bob.run(f"send {AB} while you type")
        s = tm.wait_text(lambda s: "bob: while you type" in s, "message while typing")
        last = [l for l in s.splitlines() if l.strip()][-1]
        assert last == f"{AB}> half a li", f"prompt line garbled: {last!r}\n{s}"
        tm.type("ne")
        tm.keys("Enter")
        got = bob.wait_for("message", 2, conv=AB)
        assert got[-1]["body"] == "half a line"

        tm.type("/bogus")
        tm.keys("Enter")
        tm.wait_text(lambda s: "error: unknown command" in s, "error line")
        tm.type("/quit")
        tm.keys("Enter")
        deadline = time.monotonic() + WAIT
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.exists(), f"the CLI did not quit; pane:\n{tm.screen()}"
        assert status.read_text().strip() == "exit=0", \
            (status.read_text(), (root / "alice.exit.stderr").read_text(errors="replace"))
        stderr = (root / "alice.exit.stderr").read_text(errors="replace")
        assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr
        reports = [p for p in root.iterdir() if p.name.startswith("asan")]
        assert not reports, "\n".join(p.read_text(errors="replace") for p in reports)
        # history persisted in the state dir
        assert "/open " + AB in (root / "alice" / "history").read_text()
    finally:
        tm.kill()


def test_token_options_and_usage(broker, clis):
    tf = clis.root / "bob.token"
    tf.write_text(H.make_token("bob", "cli") + "\n")
    bob = clis(broker, "bob", auth=["--token-file", str(tf)])
    bob.run("wait-up-to-date")
    dave = clis(broker, "dave", auth=["--token", H.make_token("dave", "cli")],
                extra=["--strict"])
    dave.run("wait-up-to-date")
    dave.run(f"send {H.dm('bob', 'dave')} strict but fine")
    dave.run("wait-sent")
    assert dave.close() == 0, "--strict: nothing failed"
    dave = clis(broker, "dave", extra=["--strict"])
    dave.run("wait-up-to-date")
    dave.run("history d:bob:carol 5")  # refused: not a member
    dave.wait_for("response", ok=False)
    assert dave.close() == 3, "--strict: a refused request is exit 3"
    dave.expect_rc = 3
    # a token for someone else: refused, retried, never up to date; still answers
    eve = clis(broker, "eve", auth=["--token", H.make_token("mallory", "cli")],
               extra=["--wait-timeout", "1000"])
    eve.wait_for("connection", state="disconnected")
    r = eve.run("wait-up-to-date 300", ok=False)
    assert r["error"].startswith("timed out"), r
    assert eve.run("list", ok=False)["error"].startswith("offline"), eve.lines[-3:]
    # offline sends are kept: EOF cannot drain them -> exit 1, error line
    eve.run(f"send {H.dm('eve', 'bob')} later")
    eve.proc.stdin.close()
    assert eve.proc.wait(3 * WAIT) == 1
    assert eve.wait_for("error", cmd="eof")[0]["error"].startswith("draining timed out")
    eve.expect_rc = 1

    base = [CLI, "--port", str(broker.port), "--state-dir", str(clis.root / "u")]
    for args in (["--user", "x"],                                   # no token
                 ["--token", "t"],                                  # no user
                 ["--user", "x", "--token", "t", "--token-file", str(tf)],
                 ["--user", "bad id", "--token", "t"],
                 ["--user", "x", "--token", "t", "--iss", "i"],
                 ["--user", "x", "--token", "t", "--port", "70000"],
                 ["--user", "x", "--token", "t", "--bogus", "1"]):
        p = subprocess.run(base + args, capture_output=True, text=True, timeout=WAIT,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 2 and p.stderr.startswith("mqchat-cli: "), (args, p)
    short = clis.root / "short.secret"
    short.write_text("too short\n")
    p = subprocess.run(base + ["--user", "x", "--dev-secret-file", str(short)],
                       capture_output=True, text=True, timeout=WAIT, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "at least 32" in p.stderr, p
    p = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0 and "--dev-secret-file" in p.stdout


def test_prefix_option(make_broker, clis):
    b = make_broker(opts={"topic_prefix": "chat/v9"})
    alice = clis(b, "alice", extra=["--prefix", "chat/v9", "--mqtt5"])
    bob = clis(b, "bob", extra=["--prefix", "chat/v9"])
    alice.run("wait-up-to-date")
    bob.run("wait-up-to-date")
    alice.run(f"send {AB} under chat/v9")
    assert bob.wait_for("message")[0]["body"] == "under chat/v9"


def test_tls_option(make_broker, clis):
    certs = clis.root / "certs"
    subprocess.run(["bash", str(H.REPO / "broker-conf" / "gen-dev-certs.sh"), str(certs)],
                   check=True, capture_output=True, timeout=3 * WAIT)
    tport = H.free_port()
    b = make_broker(extra_conf=[f"listener {tport} 127.0.0.1",
                                f"certfile {certs / 'server.crt'}",
                                f"keyfile {certs / 'server.key'}"])
    alice = clis(b, "alice", extra=["--tls", "--cafile", str(certs / "ca.crt"),
                                    "--port", str(tport)])
    alice.run("wait-up-to-date")
    alice.run(f"send {AB} over TLS")
    alice.run("wait-sent")
    bob = clis(b, "bob")  # plain TCP
    bob.run("wait-up-to-date")
    assert [m["body"] for m in bob.of("message")] == ["over TLS"]
    # a CA that did not sign the server: never connects
    other = clis.root / "other"
    subprocess.run(["bash", str(H.REPO / "broker-conf" / "gen-dev-certs.sh"), str(other)],
                   check=True, capture_output=True, timeout=3 * WAIT)
    eve = clis(b, "eve", extra=["--tls", "--cafile", str(other / "ca.crt"),
                                "--port", str(tport), "--wait-timeout", "1500"])
    eve.wait_for("connection", state="disconnected")
    assert eve.run("wait-up-to-date", ok=False)["error"].startswith("timed out")
