#!/usr/bin/python3
"""A tour of mqchat over plain MQTT (paho) and the wire schema.

Run by scripts/demo.sh against the stack scripts/run.sh started: two users,
three devices; a 1:1 message delivered live, a retried send deduplicated, an
offline device catching up with sync, a group with an event, history, and
refused input (a forged token, a non-member send), presence (bob watches
alice go offline and come back), and a push: dave's offline phone gets a
notification through pushd at the local fake APNs.
Usage: demo.py PORT SECRET_FILE PB_DIR (PB_DIR holds the generated mqchat_pb2).
"""
import base64, hashlib, hmac, json, sys, threading, time, urllib.request

import paho.mqtt.client as mqtt

PORT, SECRET_FILE, PB_DIR = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, PB_DIR)
import mqchat_pb2 as pb  # noqa: E402

SECRET = open(SECRET_FILE, "rb").read().rstrip(b"\r\n")
P = "mqchat/v1"
RUN = str(time.time_ns())


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def token(user, device, secret=SECRET, alg="HS256"):
    now = int(time.time())
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "did": device, "iss": "mqchat-dev", "aud": "mqchat",
                           "iat": now, "exp": now + 600}).encode())
    sig = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


class Device:
    def __init__(self, user, device, tok=None):
        self.user, self.device, self.events, self.replies = user, device, [], {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(client_id=f"{user}:{device}", clean_session=True)
        self.c.username_pw_set(user, tok or token(user, device))
        self.c.on_message = self._on_message
        self.rc = None
        self.c.on_connect = lambda c, u, f, rc: setattr(self, "rc", rc)
        self.c.connect("127.0.0.1", PORT)
        self.c.loop_start()
        self._wait(lambda: self.rc is not None, "CONNACK")
        if self.rc == 0:
            self.c.subscribe(f"{P}/u/{user}/inbox", 1)
            time.sleep(0.2)

    def _on_message(self, c, u, m):
        with self.cond:
            if m.topic.endswith("/inbox"):
                e = pb.ServerEvent()
                e.ParseFromString(m.payload)
                self.events.append(e)
            elif m.topic.endswith("/ack"):
                a = pb.SendAck()
                a.ParseFromString(m.payload)
                self.replies[a.client_msg_id] = a
            else:
                r = pb.Response()
                r.ParseFromString(m.payload)
                self.replies[r.request_id] = r
            self.cond.notify_all()

    def _wait(self, pred, what, timeout=10):
        end = time.time() + timeout
        with self.cond:
            while not pred():
                left = end - time.time()
                if left <= 0:
                    raise SystemExit(f"demo: timed out waiting for {what}")
                self.cond.wait(left)

    def send(self, conv, text, cmid):
        req = pb.SendRequest(client_msg_id=cmid, conversation_id=conv, body=text.encode(),
                             content_type="text/plain")
        self.c.publish(f"{P}/u/{self.user}/d/{self.device}/send", req.SerializeToString(), 1)
        self._wait(lambda: cmid in self.replies, "SendAck")
        return self.replies.pop(cmid)

    def request(self, rid, **body):
        req = pb.Request(request_id=rid, **body)
        self.c.publish(f"{P}/u/{self.user}/d/{self.device}/req", req.SerializeToString(), 1)
        self._wait(lambda: rid in self.replies, "Response")
        return self.replies.pop(rid)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def show(m):
    if m.kind == pb.MESSAGE_KIND_EVENT:
        e = m.event
        what = f"event {pb.ConversationEvent.Type.Name(e.type)} by {e.actor_user_id}: {list(e.user_ids)}"
    else:
        what = f"{m.sender_user_id}/{m.sender_device_id}: {m.body.decode()!r}"
    return f"{m.conversation_id} seq {m.seq} (inbox {m.inbox_seq}) {what}"


alice, bob = Device("alice", "phone"), Device("bob", "phone")
print("1. alice sends bob a 1:1 message; bob's phone is online")
ack = alice.send("d:alice:bob", "hi bob", f"m1-{RUN}")
print(f"   alice's ACK (after the write is durable): seq {ack.seq}, inbox_seq {ack.inbox_seq}")
bob._wait(lambda: bob.events, "delivery")
print(f"   bob's phone got: {show(bob.events[-1].message)}")

print("2. alice's app retries the same send: same seq, stored once")
again = alice.send("d:alice:bob", "hi bob", f"m1-{RUN}")
print(f"   ACK: seq {again.seq}, duplicate={again.duplicate}")

print("3. bob's laptop was offline; it syncs from its cursor (0), 2 per page")
laptop = Device("bob", "laptop")
after, n = 0, 0
while True:
    r = laptop.request(f"s{n}-{RUN}", sync=pb.SyncRequest(after_inbox_seq=after, limit=2))
    for m in r.sync.messages:
        print(f"   {show(m)}")
    if r.sync.messages:
        after = r.sync.messages[-1].inbox_seq
    n += 1
    if not r.sync.more or n > 50:
        break
laptop.request(f"c-{RUN}", cursor_ack=pb.CursorAck(inbox_seq=after))
print(f"   cursor acked at {after} (the server trims what every device acked, 64 entries at a time)")

print("4. bob makes a group with alice and carol, and writes in it")
g = bob.request(f"g-{RUN}", group_create=pb.GroupCreate(title="demo", member_ids=["alice", "carol"]))
conv = g.group.conversation_id
bob.send(conv, "welcome!", f"m2-{RUN}")
alice._wait(lambda: sum(e.message.conversation_id == conv for e in alice.events) >= 2, "group")
for e in alice.events:
    if e.message.conversation_id == conv:
        print(f"   alice got: {show(e.message)}")
h = alice.request(f"h-{RUN}", history=pb.HistoryRequest(conversation_id=conv))
print(f"   history of {conv}, newest first: seqs {[m.seq for m in h.history.messages]}")

print("5. refused input")
eve = Device("eve", "x")
ack = eve.send("d:alice:bob", "let me in", f"m3-{RUN}")
print(f"   eve sends into alice and bob's chat: {pb.ErrorCode.Name(ack.error.code)} ({ack.error.message})")
forged = Device("alice", "evil", tok=token("alice", "evil", secret=b"x" * 32))
print(f"   a token signed with the wrong key: CONNACK code {forged.rc} (refused)")
print("6. presence: bob watches alice; she leaves and comes back")
w = bob.request(f"p1-{RUN}", presence_watch=pb.PresenceWatch(user_ids=["alice"]))
if w.WhichOneof("body") == "error":
    print(f"   presence: {pb.ErrorCode.Name(w.error.code)} ({w.error.message})")
else:
    state = lambda u: pb.PresenceState.Name(u.state).replace("PRESENCE_STATE_", "")
    print(f"   now: alice is {state(w.presence.users[0])}")
    seen = len(bob.events)
    alice.close()
    bob._wait(lambda: any(e.WhichOneof("body") == "presence" for e in bob.events[seen:]),
              "presence OFFLINE", timeout=15)
    up = [e.presence for e in bob.events[seen:] if e.WhichOneof("body") == "presence"][-1]
    print(f"   alice's phone disconnected: bob's phone got {state(up)}, "
          f"last seen {time.strftime('%H:%M:%S', time.localtime(up.last_seen_ms / 1000))}")
    seen = len(bob.events)
    alice = Device("alice", "phone")
    bob._wait(lambda: any(e.WhichOneof("body") == "presence" for e in bob.events[seen:]),
              "presence ONLINE")
    up = [e.presence for e in bob.events[seen:] if e.WhichOneof("body") == "presence"][-1]
    print(f"   alice reconnected: bob's phone got {state(up)}")
print("7. push: dave's phone registers an APNs token and goes offline; alice writes to him")
fake = json.load(open(".run/fake-push.json"))
dave_token = hashlib.sha256(f"dave-{RUN}".encode()).hexdigest()  # 64 hex digits
dave = Device("dave", "phone")
r = dave.request(f"t1-{RUN}", push_register=pb.PushTokenRegister(
    platform=pb.PUSH_PLATFORM_APNS, token=dave_token, app_id="com.example.mqchat"))
print(f"   token registered: {r.WhichOneof('body')}")
dave.close()
time.sleep(0.5)
ack = alice.send("d:alice:dave", "dinner at 8?", f"p-{RUN}")
print(f"   alice's ACK: seq {ack.seq}; the push job went into the same store write")
got = None
for _ in range(100):
    url = f"http://127.0.0.1:{fake['control_port']}/requests?role=apns&token={dave_token}"
    reqs = json.load(urllib.request.urlopen(url, timeout=5))
    reqs = reqs.get("requests", reqs) if isinstance(reqs, dict) else reqs
    if reqs:
        got = reqs[-1]
        break
    time.sleep(0.1)
if got is None:
    print("   no push reached the fake APNs (see .run/pushd.log)")
else:
    h = got.get("headers", {})
    print(f"   the fake APNs got POST {got.get('path', '')[:24]}...: apns-push-type "
          f"{h.get('apns-push-type')}, apns-collapse-id {h.get('apns-collapse-id')}, "
          f"answered {got.get('status')}")
    print(f"   payload (metadata only, no message text): {json.dumps(got.get('body'))[:160]}")
for d in (alice, bob, laptop, eve, forged):
    d.close()
