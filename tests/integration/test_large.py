"""Large groups and channels (docs/PROTOCOL.md, "Large conversations"): the
automatic mode switch with hysteresis while messages are in flight,
catching up with positions and pulls, join/leave windows, unread counts and
read state, a 10,000-member group with 500 online devices, admin-only
posting, and devices that only know inbox sync.

Most tests run with large_group_members=6 / small_group_members=4 so a
handful of users crosses the line; only the big test uses the defaults."""

import queue
import selectors
import socket
import struct
import threading
import time

import mqchat_harness as H
from mqchat_harness import pb

WAIT = H.WAIT
EVENT = pb.MESSAGE_KIND_EVENT
USER = pb.MESSAGE_KIND_USER
CE = pb.ConversationEvent
LARGE = pb.CONVERSATION_MODE_LARGE
SMALL = pb.CONVERSATION_MODE_SMALL
KEEP = pb.CONVERSATION_MODE_UNSPECIFIED
ADMINS = pb.POSTING_POLICY_ADMINS
EVERYONE = pb.POSTING_POLICY_EVERYONE

# Small thresholds so a few users cross the line both ways.
SWITCH = {"large_group_members": 6, "small_group_members": 4}


# ---------------------------------------------------------------------------
# Helpers: requests
# ---------------------------------------------------------------------------

def create(dev, members, title="g", posting=None):
    gc = pb.GroupCreate(title=title, member_ids=members)
    if posting is not None:
        gc.posting = posting
    r = dev.request_ok(group_create=gc)
    assert r.WhichOneof("body") == "group", H.describe(r)
    assert r.group.seq == 1
    return r.group.conversation_id


def group_op(dev, **kw):
    """A group request that must succeed; returns the seq of its event."""
    r = dev.request_ok(**kw)
    assert r.WhichOneof("body") == "group", H.describe(r)
    return r.group.seq


def add(dev, conv, users):
    return group_op(dev, group_add=pb.GroupAddMembers(conversation_id=conv, user_ids=users))


def remove(dev, conv, users):
    return group_op(dev, group_remove=pb.GroupRemoveMembers(conversation_id=conv, user_ids=users))


def sync_req(dev, after=0, limit=500, positions=False, positions_after=""):
    r = dev.request_ok(sync=pb.SyncRequest(after_inbox_seq=after, limit=limit,
                                           positions=positions,
                                           positions_after=positions_after))
    assert r.WhichOneof("body") == "sync", H.describe(r)
    return r.sync


def catch_up(dev, cursor=0, limit=500):
    """The connect-time catch-up of docs/PROTOCOL.md: inbox pages after the
    cursor (while `more`), positions asked on the first page (and paged by
    positions_more). Checks the inbox numbering: every page's inbox_seq
    strictly consecutive after the cursor. Returns (inbox messages, new
    cursor, {conv: ConversationPosition})."""
    msgs, positions = [], {}
    page = sync_req(dev, cursor, limit, positions=True)
    first = True
    for _ in range(200):
        if first:
            for p in page.positions:
                assert p.conversation_id not in positions, f"{dev}: position listed twice"
                positions[p.conversation_id] = p
            pos_more, last_pos = page.positions_more, (
                page.positions[-1].conversation_id if page.positions else "")
            while pos_more:
                pp = sync_req(dev, cursor, 1, positions=True, positions_after=last_pos)
                assert pp.positions, f"{dev}: positions_more but no positions"
                for p in pp.positions:
                    assert p.conversation_id > last_pos, "positions are paged by id"
                    positions[p.conversation_id] = p
                last_pos = pp.positions[-1].conversation_id
                pos_more = pp.positions_more
            first = False
        for m in page.messages:
            assert m.inbox_seq == cursor + 1, \
                f"{dev}: inbox_seq {m.inbox_seq} after cursor {cursor}: not consecutive"
            cursor = m.inbox_seq
            msgs.append(m)
        assert cursor <= page.inbox_head
        if not page.more:
            assert cursor == page.inbox_head, f"{dev}: sync ended at {cursor} below the head"
            return msgs, cursor, positions
        assert page.messages, f"{dev}: sync page with more=true but no messages"
        page = sync_req(dev, cursor, limit)
    raise AssertionError(f"{dev}: sync still had more after 200 pages")


def pull_all(dev, conv, position, limit=0, max_pages=100):
    """Pulls after `position` while `more`, checking each page: messages
    ascending, all after the page's after_seq and at most its through_seq;
    through_seq never goes back. Returns (messages, final through_seq,
    pages)."""
    msgs, pages, after = [], 0, position
    for _ in range(max_pages):
        r = dev.request_ok(pull=pb.ConversationPull(conversation_id=conv, after_seq=after,
                                                    limit=limit))
        assert r.WhichOneof("body") == "pull", H.describe(r)
        p = r.pull
        pages += 1
        assert p.conversation_id == conv
        seqs = [m.seq for m in p.messages]
        assert seqs == sorted(set(seqs)), f"{dev}: pull page not ascending: {seqs}"
        assert all(after < s <= p.through_seq for s in seqs), \
            f"{dev}: pull after {after} through {p.through_seq} returned {seqs}"
        assert p.through_seq >= after
        assert all(m.conversation_id == conv and m.inbox_seq == 0 for m in p.messages)
        msgs.extend(p.messages)
        if not p.more:
            return msgs, p.through_seq, pages
        assert p.through_seq > after, f"{dev}: pull with more=true made no progress"
        after = p.through_seq
    raise AssertionError(f"{dev}: pull still had more after {max_pages} pages")


def position_ack(dev, conv, seq):
    r = dev.request_ok(position_ack=pb.PositionAck(conversation_id=conv, seq=seq))
    assert r.WhichOneof("body") == "ok", H.describe(r)


def history_all(dev, conv, limit=0):
    """Every message history gives the caller, newest first (pages by before_seq)."""
    out, before = [], 0
    for _ in range(100):
        r = dev.request_ok(history=pb.HistoryRequest(conversation_id=conv, before_seq=before,
                                                     limit=limit))
        h = r.history
        seqs = [m.seq for m in h.messages]
        assert seqs == sorted(set(seqs), reverse=True), f"{dev}: history not descending {seqs}"
        out.extend(h.messages)
        if not h.more:
            return out
        assert h.messages
        before = h.messages[-1].seq
    raise AssertionError("history still had more after 100 pages")


def live(dev, conv):
    """The messages of conv that arrived live on dev's inbox, in arrival order."""
    return dev.messages(conv)


def wait_live_seqs(dev, conv, want, timeout=WAIT):
    """Waits until the live seqs of conv on dev (plus extra ones, e.g. the
    device's own SendAcks) cover `want`; returns the live messages."""
    want = set(want)
    H.wait_until(lambda: want <= {m.seq for m in live(dev, conv)}, timeout=timeout,
                 what=f"{dev}: live seqs {sorted(want)[:3]}..{sorted(want)[-3:]} of {conv} "
                      f"(missing {sorted(want - {m.seq for m in live(dev, conv)})[:10]})")
    return live(dev, conv)


def receipts_of(dev, conv):
    return [r for r in dev.events_of("receipt") if r.conversation_id == conv]


# ---------------------------------------------------------------------------
# 1. The switch both ways, with hysteresis, while a sender keeps sending
# ---------------------------------------------------------------------------

def test_threshold_both_ways_with_sends_in_flight(make_broker, connect):
    b = make_broker(opts=SWITCH)
    alice, bob, carol = (connect(u, broker=b) for u in ("alice", "bob", "carol"))
    dave = connect("dave", broker=b)
    conv = create(alice, ["bob", "carol", "dave"])            # 4 members: small
    for d in (bob, carol, dave):
        wait_live_seqs(d, conv, [1])
    # dave catches up once and goes offline for the rest of the test
    msgs, dave_cursor, pos = catch_up(dave)
    assert [(m.conversation_id, m.seq) for m in msgs] == [(conv, 1)] and pos == {}
    dave.close()
    # online devices of users who will be added (they join the room on the add)
    erin, frank, gina, hank, ivan = (connect(u, broker=b)
                                     for u in ("erin", "frank", "gina", "hank", "ivan"))

    n_msgs = 30
    mids, cv, errors = [], threading.Condition(), []

    def sender():
        try:
            for i in range(n_msgs):
                _, mid = bob.send_nowait(conv, f"m{i:02d}".encode(), client_msg_id=f"bob-{i:02d}")
                with cv:
                    mids.append(mid)
                    cv.notify_all()
                time.sleep(0.015)      # never waits for a SendAck
        except Exception as e:  # reported below
            errors.append(repr(e))

    def stored(k):
        """Bob's k-th send was taken by the broker and written (its PUBACK)."""
        with cv:
            assert cv.wait_for(lambda: len(mids) >= k or errors, WAIT), "sender stalled"
        assert not errors, errors
        bob.wait_puback(mids[k - 1])

    t = threading.Thread(target=sender)
    t.start()
    try:
        stored(4)
        e1 = add(alice, conv, ["erin", "frank"])              # 6: large
        stored(10)
        e2 = remove(alice, conv, ["frank"])                   # 5: still large (hysteresis)
        stored(16)
        e3 = remove(alice, conv, ["erin", "carol"])           # 3: small again
        stored(22)
        e4 = add(alice, conv, ["gina", "hank", "ivan"])       # 6: large again
    finally:
        t.join(WAIT * 2)
    assert not t.is_alive() and not errors, errors
    acks = [bob.take_ack(f"bob-{i:02d}") for i in range(n_msgs)]
    assert not [H.describe(a) for a in acks if a.HasField("error")]
    sent = [a.seq for a in acks]
    assert sent == sorted(set(sent)), f"one sender's messages keep their order: {sent}"
    head = n_msgs + 5
    assert 1 < e1 < e2 < e3 < e4 <= head
    assert sorted(sent + [1, e1, e2, e3, e4]) == list(range(1, head + 1)), "seqs 1..N, each once"

    # which messages were written small (in every inbox) and which large (pulled)
    small_w = {s for s in sent if s < e1 or e3 < s < e4}
    large_w = set(sent) - small_w
    periods = [[s for s in sent if lo < s < hi]
               for lo, hi in ((1, e1), (e1, e2), (e2, e3), (e3, e4), (e4, head + 1))]
    assert all(periods), f"messages in every period (sender pacing): {periods}"
    # a large sender's SendAck has inbox_seq 0; a small one's its inbox position
    for a in acks:
        assert (a.inbox_seq == 0) == (a.seq in large_w), H.describe(a)

    # user -> (first seq, last seq, the seqs in the user's inbox, pull start, pull end, member)
    full_inbox = {1, e1, e3, e4} | small_w
    plan = {
        "alice": (1, head, full_inbox, e1, head, True),
        "bob": (1, head, full_inbox, e1, head, True),
        "dave": (1, head, full_inbox, e1, head, True),
        "carol": (1, e3, {1, e1, e3} | {s for s in small_w if s < e1}, e1, e3 - 1, False),
        "erin": (e1, e3, {e1, e3}, e1, e3 - 1, False),
        "frank": (e1, e2, {e1, e2}, e1, e2 - 1, False),
        "gina": (e4, head, {e4}, e4, head, True),
        "hank": (e4, head, {e4}, e4, head, True),
        "ivan": (e4, head, {e4}, e4, head, True),
    }
    online = {"alice": alice, "bob": bob, "carol": carol, "erin": erin, "frank": frank,
              "gina": gina, "hank": hank, "ivan": ivan}

    # Live: every online member device gets every seq of its window live (its own
    # sends as SendAcks), nothing after it, in seq order; inbox_seq > 0 exactly
    # for what is in its inbox.
    own = {"bob": set(sent)}
    for u, d in online.items():
        first, last, inbox, *_ = plan[u]
        want = set(range(first, last + 1)) - own.get(u, set())
        wait_live_seqs(d, conv, want)
    time.sleep(0.3)  # anything stray after a removal would have arrived by now
    live_inbox = {}
    for u, d in online.items():
        first, last, inbox, *_ = plan[u]
        ms = live(d, conv)
        seqs = [m.seq for m in ms]
        assert seqs == sorted(set(seqs)), f"{u}: live messages out of seq order or twice: {seqs}"
        assert set(seqs) == set(range(first, last + 1)) - own.get(u, set()), \
            f"{u}: live seqs {seqs} (window {first}..{last})"
        for m in ms:
            assert (m.inbox_seq > 0) == (m.seq in inbox), \
                f"{u}: seq {m.seq} live with inbox_seq {m.inbox_seq}"
        live_inbox[u] = {m.inbox_seq: m.seq for m in ms if m.inbox_seq}
        live_inbox[u].update({a.inbox_seq: a.seq for a in acks if u == "bob" and a.inbox_seq})

    # The switch events, from any member's inbox.
    msgs, _, _ = catch_up(alice)
    by_seq = {m.seq: m for m in msgs if m.conversation_id == conv}
    ev = {s: by_seq[s].event for s in (e1, e3, e4)}
    assert ev[e1].type == CE.TYPE_MEMBERS_ADDED and sorted(ev[e1].user_ids) == ["erin", "frank"]
    assert (ev[e1].mode, ev[e3].mode, ev[e4].mode) == (LARGE, SMALL, LARGE)
    assert ev[e3].type == CE.TYPE_MEMBERS_REMOVED and sorted(ev[e3].user_ids) == ["carol", "erin"]
    assert e2 not in by_seq, "a large group's membership event is not in other members' inbox"
    e2_live = [m for m in live(alice, conv) if m.seq == e2][0]
    assert e2_live.event.type == CE.TYPE_MEMBERS_REMOVED and e2_live.event.mode == KEEP, \
        "hysteresis: 6 -> 5 members stays large, no mode in the event"
    assert e2_live.inbox_seq == 0

    # dave comes back: the device state before and after
    dave = connect("dave", broker=b)
    devices = dict(online, dave=dave)
    start_cursor = {u: 0 for u in devices}
    start_cursor["dave"] = dave_cursor
    for u, d in devices.items():
        first, last, inbox, pfrom, pend, member = plan[u]
        msgs, cursor, positions = catch_up(d, start_cursor[u])
        got_inbox = [m.seq for m in msgs if m.conversation_id == conv]
        want_inbox = sorted(s for s in inbox if u != "dave" or s > 1)
        assert got_inbox == want_inbox, f"{u}: inbox has seqs {got_inbox}, want {want_inbox}"
        for m in msgs:  # the live inbox deliveries are the same entries
            if m.inbox_seq in live_inbox.get(u, {}):
                assert live_inbox[u][m.inbox_seq] == m.seq, f"{u}: inbox_seq {m.inbox_seq}"
        if u in online:
            assert set(live_inbox[u]) == set(range(1, cursor + 1)), \
                f"{u}: live inbox deliveries {sorted(live_inbox[u])} vs head {cursor}"
        for s in (e1, e3, e4):  # the switch event is in every member's inbox
            if first <= s <= last:
                m = [x for x in msgs if x.conversation_id == conv and x.seq == s]
                assert len(m) == 1, f"{u}: switch event {s} in the inbox {len(m)} times"
                assert m[0].event.mode == ev[s].mode
        # positions: exactly this conversation, where the pulling starts
        assert list(positions) == [conv], f"{u}: positions {list(positions)}"
        p = positions[conv]
        assert (p.position, p.end_seq, p.member) == (pfrom, pend, member), \
            f"{u}: position {p.position} end {p.end_seq} member {p.member}"
        pulled, through, _ = pull_all(d, conv, p.position, limit=7)
        pseqs = [m.seq for m in pulled]
        assert not set(pseqs) & set(inbox), f"{u}: pulled what the inbox carried: " \
                                            f"{sorted(set(pseqs) & set(inbox))}"
        assert through == pend
        got = sorted(pseqs + [s for s in inbox])
        assert got == list(range(first, last + 1)), \
            f"{u}: inbox + pulls = {got}, want {first}..{last}"
        for m in pulled:
            if m.seq in large_w:
                assert m.sender_user_id == "bob" and m.body == f"m{sent.index(m.seq):02d}".encode()
        position_ack(d, conv, through)
        again = sync_req(d, cursor, positions=True)
        assert list(again.positions) == [] and not again.messages, \
            f"{u}: a second sync still lists {[x.conversation_id for x in again.positions]}"

    r = alice.request_ok(list_conversations=pb.ListConversations())
    (s,) = [c for c in r.conversations.conversations if c.conversation_id == conv]
    assert (s.mode, s.member_count, s.head_seq) == (LARGE, 6, head)


# ---------------------------------------------------------------------------
# 2. One sync and one pull per large conversation
# ---------------------------------------------------------------------------

def test_offline_member_catches_up_in_one_sync(make_broker, connect):
    b = make_broker(opts=SWITCH)
    own = connect("own", broker=b)
    fill = ["f1", "f2", "f3", "f4"]
    larges = [create(own, ["zed"] + fill, title=f"L{i}") for i in range(4)]   # 6: large
    smalls = [create(own, ["zed", "f1"], title=f"S{i}") for i in range(2)]
    quiet = larges[3]
    own.send_many(quiet, [b"q1", b"q2"])                     # seqs 2, 3

    zed = connect("zed", broker=b)
    msgs, cursor, positions = catch_up(zed)
    assert sorted((m.conversation_id, m.seq) for m in msgs) == \
        sorted((c, 1) for c in larges + smalls), "every CREATED event is in zed's inbox"
    assert list(positions) == [quiet]
    assert (positions[quiet].position, positions[quiet].end_seq) == (1, 3)
    pulled, through, _ = pull_all(zed, quiet, 1)
    assert [m.seq for m in pulled] == [2, 3] and through == 3
    position_ack(zed, quiet, 3)
    assert list(sync_req(zed, cursor, positions=True).positions) == []
    zed.close()

    news = {larges[0]: 3, larges[1]: 5, larges[2]: 1}
    for conv, n in news.items():
        own.send_many(conv, [f"{conv}-{i}".encode() for i in range(n)])
    small_sent = []
    for conv in smalls:
        small_sent += [(conv, a.seq) for a in own.send_many(conv, [b"s1", b"s2"])]

    zed = connect("zed", broker=b)
    page = sync_req(zed, cursor, limit=500, positions=True)
    assert not page.more and not page.positions_more
    assert [(m.conversation_id, m.seq) for m in page.messages] == small_sent, \
        "the inbox carries the small conversations' messages only"
    assert [m.inbox_seq for m in page.messages] == list(range(cursor + 1, cursor + 5))
    assert page.inbox_head == cursor + 4
    got = [(p.conversation_id, p.position, p.end_seq, p.member) for p in page.positions]
    assert got == sorted((c, 1, 1 + n, True) for c, n in news.items()), \
        f"positions for exactly the large conversations with news: {got}"
    for p in page.positions:
        r = zed.request_ok(pull=pb.ConversationPull(conversation_id=p.conversation_id,
                                                    after_seq=p.position, limit=500))
        pr = r.pull
        assert not pr.more and pr.through_seq == p.end_seq
        assert [m.seq for m in pr.messages] == list(range(2, p.end_seq + 1))
        assert [m.body for m in pr.messages] == \
            [f"{p.conversation_id}-{i}".encode() for i in range(news[p.conversation_id])]
        assert all(m.kind == USER and m.sender_user_id == "own" for m in pr.messages)
        position_ack(zed, p.conversation_id, pr.through_seq)
    again = sync_req(zed, page.inbox_head, positions=True)
    assert list(again.positions) == [] and not again.positions_more and not again.messages

    # acking is monotonic and bounded by the head
    position_ack(zed, larges[0], 2)  # lower: accepted, changes nothing
    assert list(sync_req(zed, page.inbox_head, positions=True).positions) == []
    r = zed.request(position_ack=pb.PositionAck(conversation_id=larges[0], seq=5))
    assert H.is_error(r, "INVALID_ARGUMENT"), "above the head: " + H.describe(r)
    # another device of zed has its own positions
    tab = connect("zed", "tablet", broker=b)
    _, _, pos = catch_up(tab)
    assert sorted(pos) == sorted(larges), "a new device pulls every large conversation"


def test_positions_are_paged(make_broker, connect):
    """Positions take at most half of a reply: with the smallest reply
    budget the options allow (max_body + 69632), 1000 large conversations
    with news come in several pages (positions_more, positions_after), each
    exactly once, by id."""
    b = make_broker(opts=dict(SWITCH, reply_max_bytes=4096 + 69632))
    own = connect("own", broker=b)
    n = 1000
    rids = [own.request_nowait(group_create=pb.GroupCreate(
        member_ids=["zed", "f1", "f2", "f3", "f4"])) for _ in range(n)]
    convs = []
    for rid in rids:
        r = own.take_response(rid)
        assert r.WhichOneof("body") == "group", H.describe(r)
        convs.append(r.group.conversation_id)
    acks = [own.take_ack(own.send_nowait(c, b"news")[0]) for c in convs]
    assert all(a.seq == 2 and a.inbox_seq == 0 for a in acks), [H.describe(a) for a in acks[:3]]

    zed = connect("zed", broker=b)
    pages, got, after = 0, [], ""
    for _ in range(50):
        page = sync_req(zed, 0, limit=1, positions=True, positions_after=after)
        pages += 1
        assert page.positions, "a page with positions_more must make progress"
        assert len(page.messages) == 1, "one message always fits besides the positions"
        got += [(p.conversation_id, p.position, p.end_seq, p.member) for p in page.positions]
        after = page.positions[-1].conversation_id
        if not page.positions_more:
            break
    print(f"\n{n} positions in {pages} pages")
    assert pages > 1, "1000 positions do not fit half of a 72 KiB reply"
    assert got == sorted((c, 1, 2, True) for c in convs), \
        f"{len(got)} positions over {pages} pages; want each of {n} once, by id"
    msgs, cursor, positions = catch_up(zed)
    assert len(msgs) == n and sorted(positions) == sorted(convs)
    for c in convs[:3]:
        position_ack(zed, c, 2)
    page = sync_req(zed, cursor, positions=True)
    left = [p.conversation_id for p in page.positions]
    while page.positions_more:
        page = sync_req(zed, cursor, positions=True, positions_after=left[-1])
        left += [p.conversation_id for p in page.positions]
    assert left == sorted(convs[3:]), "acked positions are no longer listed"


# ---------------------------------------------------------------------------
# 3. Join and leave windows
# ---------------------------------------------------------------------------

def test_join_and_leave_windows(make_broker, connect):
    b = make_broker(opts=SWITCH)
    own, obs, nick, rita, xavier = (connect(u, broker=b)
                                    for u in ("own", "obs", "nick", "rita", "xavier"))
    conv = create(own, ["obs", "rita", "a2", "a3", "a4"])      # 6: large from the start
    own.send_many(conv, [b"2", b"3", b"4", b"5"])
    assert add(own, conv, ["nick"]) == 6                       # N = 6
    own.send_many(conv, [b"7", b"8", b"9"])
    assert remove(own, conv, ["rita"]) == 10                   # 6 members: still large
    own.send_many(conv, [b"11", b"12", b"13"])
    wait_live_seqs(obs, conv, range(1, 14))
    wait_live_seqs(nick, conv, range(6, 14))
    time.sleep(0.3)

    # nick, added at 6, sees nothing before 6
    assert [m.seq for m in live(nick, conv)] == list(range(6, 14))
    assert [m.inbox_seq > 0 for m in live(nick, conv)] == [True] + [False] * 7
    msgs, cursor, pos = catch_up(nick)
    assert [(m.conversation_id, m.seq) for m in msgs] == [(conv, 6)]
    assert msgs[0].event.type == CE.TYPE_MEMBERS_ADDED and list(msgs[0].event.user_ids) == ["nick"]
    assert (pos[conv].position, pos[conv].end_seq, pos[conv].member) == (6, 13, True)
    for after in (0, 2, 5):
        pulled, through, _ = pull_all(nick, conv, after)
        assert [m.seq for m in pulled] == [7, 8, 9, 10, 11, 12, 13] and through == 13, \
            f"pull after {after}: {[m.seq for m in pulled]}"
    assert [m.seq for m in history_all(nick, conv)] == list(range(13, 5, -1))
    assert [m.seq for m in history_all(nick, conv, limit=3)] == list(range(13, 5, -1))
    r = nick.request_ok(history=pb.HistoryRequest(conversation_id=conv, before_seq=8))
    assert [m.seq for m in r.history.messages] == [7, 6] and not r.history.more
    for before in (6, 3):
        r = nick.request_ok(history=pb.HistoryRequest(conversation_id=conv, before_seq=before))
        assert list(r.history.messages) == [] and not r.history.more
    r = nick.request(position_ack=pb.PositionAck(conversation_id=conv, seq=14))
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)

    # rita, removed at 10, sees nothing after 10
    seqs = [m.seq for m in live(rita, conv)]
    assert seqs == list(range(1, 11)), f"rita live: {seqs}"
    assert [m.seq for m in live(rita, conv) if m.inbox_seq] == [1, 10]
    msgs, cursor, pos = catch_up(rita)
    assert [(m.conversation_id, m.seq) for m in msgs] == [(conv, 1), (conv, 10)]
    assert msgs[1].event.type == CE.TYPE_MEMBERS_REMOVED
    assert (pos[conv].position, pos[conv].end_seq, pos[conv].member) == (1, 9, False)
    pulled, through, _ = pull_all(rita, conv, 0)
    assert [m.seq for m in pulled] == list(range(2, 10)) and through == 9
    pulled, through, _ = pull_all(rita, conv, 9)
    assert pulled == [] and through == 9
    r = rita.request(history=pb.HistoryRequest(conversation_id=conv))
    assert H.is_error(r, "NOT_MEMBER"), H.describe(r)
    r = rita.request(read_state=pb.ReadStateRequest(conversation_id=conv, seq=5))
    assert H.is_error(r, "NOT_MEMBER"), H.describe(r)
    ack = rita.send(conv, b"let me in")
    assert H.is_error(ack, "NOT_MEMBER"), H.describe(ack)
    position_ack(rita, conv, 9)
    assert list(sync_req(rita, cursor, positions=True).positions) == []
    own.send_ok(conv, b"14")
    wait_live_seqs(obs, conv, [14])
    time.sleep(0.3)
    assert max(m.seq for m in live(rita, conv)) == 10, "no live message after the removal"
    assert rita.events_of("typing") == []

    # never a member, unknown group
    r = xavier.request(pull=pb.ConversationPull(conversation_id=conv))
    assert H.is_error(r, "NOT_MEMBER"), H.describe(r)
    r = xavier.request(position_ack=pb.PositionAck(conversation_id=conv, seq=1))
    assert H.is_error(r, "NOT_MEMBER"), H.describe(r)
    r = xavier.request(pull=pb.ConversationPull(conversation_id="g:0123456789abcdef01234567"))
    assert H.is_error(r, "UNKNOWN_CONVERSATION"), H.describe(r)
    assert xavier.messages(conv) == []

    # the same history window in a small group
    small = create(own, ["obs"])
    own.send_many(small, [b"a", b"b"])
    assert add(own, small, ["nick"]) == 4
    own.send_ok(small, b"c")
    assert [m.seq for m in history_all(nick, small)] == [5, 4]
    r = nick.request(pull=pb.ConversationPull(conversation_id=small))
    assert H.is_error(r, "NOT_MEMBER"), "pull is for large groups: " + H.describe(r)


# ---------------------------------------------------------------------------
# 4. Unread counts, activity order, read state
# ---------------------------------------------------------------------------

def summaries(dev, **kw):
    r = dev.request_ok(list_conversations=pb.ListConversations(**kw))
    return list(r.conversations.conversations), r.conversations.more


def test_unread_activity_order_and_read_state(make_broker, connect):
    b = make_broker(opts=SWITCH)
    uma, v1 = connect("uma", broker=b), connect("v1", broker=b)
    F = create(connect("v2", broker=b), ["uma"], title="F")            # only CREATED
    time.sleep(0.02)
    A = create(uma, ["v1"], title="A")
    B = create(v1, ["uma"], title="B")
    C = create(v1, ["uma", "v2", "v3", "v4", "v5"], title="C")         # 6: large
    D = H.dm("uma", "v1")
    last = {}
    for conv in (C, A, D, B, C):   # activity order, newest first: C, B, D, A, F
        time.sleep(0.02)
        last[conv] = v1.send_ok(conv, f"to {conv}".encode())
    order = [C, B, D, A, F]
    heads = {C: 3, B: 2, D: 1, A: 2, F: 1}
    joined = {C: 1, B: 1, D: 0, A: 1, F: 1}

    got, more = summaries(uma, order=pb.CONVERSATION_ORDER_ACTIVITY)
    assert [s.conversation_id for s in got] == order and not more
    times = [s.last_activity_ms for s in got]
    assert times == sorted(times, reverse=True) and len(set(times)) == len(times)
    for s in got:
        c = s.conversation_id
        assert s.head_seq == heads[c] and s.read_seq == 0
        assert s.unread == heads[c] - joined[c], f"{c}: unread {s.unread}"
        assert s.last_message.seq == heads[c]
        assert s.mode == (LARGE if c == C else SMALL)
        assert s.member_count == {C: 6, F: 2}.get(c, 2)
        assert s.posting == EVERYONE
        if c in last:
            assert s.last_activity_ms == last[c].server_time_ms == s.last_message.server_time_ms
            assert s.last_message.body == f"to {c}".encode()
        else:
            assert s.last_message.kind == EVENT and s.last_message.event.type == CE.TYPE_CREATED
    # paging by (after_activity_ms, after_conversation_id)
    pages, cur = [], None
    for _ in range(5):
        kw = {"order": pb.CONVERSATION_ORDER_ACTIVITY, "limit": 2}
        if cur:
            kw.update(after_activity_ms=cur.last_activity_ms,
                      after_conversation_id=cur.conversation_id)
        page, more = summaries(uma, **kw)
        pages.append(([s.conversation_id for s in page], more))
        if not more:
            break
        cur = page[-1]
    assert pages == [([C, B], True), ([D, A], True), ([F], False)]
    # order ID (the default) is unchanged
    got, _ = summaries(uma)
    assert [s.conversation_id for s in got] == sorted(order, key=lambda s: s.encode())

    # READ receipts move unread (receipts are not activity: the order stays)
    uma.receipt(C, pb.RECEIPT_TYPE_READ, 2)
    uma.receipt(D, pb.RECEIPT_TYPE_READ, 1)
    uma.receipt(A, pb.RECEIPT_TYPE_DELIVERED, 2)
    got, _ = summaries(uma, order=pb.CONVERSATION_ORDER_ACTIVITY)
    assert [s.conversation_id for s in got] == order
    st = {s.conversation_id: (s.read_seq, s.unread) for s in got}
    assert st == {C: (2, 1), B: (0, 1), D: (1, 0), A: (0, 1), F: (0, 0)}, st
    # a read watermark below the join counts from the join
    uma.receipt(B, pb.RECEIPT_TYPE_READ, 1)
    got, _ = summaries(uma, order=pb.CONVERSATION_ORDER_ACTIVITY)
    assert {s.conversation_id: s.unread for s in got}[B] == 1
    # receipts of the small conversation reach the members; of the large one nobody
    H.wait_until(lambda: receipts_of(v1, D), what="uma's receipt in D")
    time.sleep(0.2)
    assert receipts_of(v1, C) == [], "a large group's receipts are not pushed"

    # read state of a large group: sender s, members r1..r5, r6 added later
    s = connect("s", broker=b)
    rs_users = ["r1", "r2", "r3", "r4", "r5"]
    devs = {u: connect(u, broker=b) for u in rs_users + ["r6"]}
    R = create(s, rs_users)                                            # 6: large
    s.send_many(R, [b"2", b"3", b"4"])
    devs["r1"].receipt(R, pb.RECEIPT_TYPE_READ, 3)
    devs["r2"].receipt(R, pb.RECEIPT_TYPE_READ, 4)
    devs["r3"].receipt(R, pb.RECEIPT_TYPE_DELIVERED, 3)
    devs["r4"].receipt(R, pb.RECEIPT_TYPE_READ, 2)
    s.receipt(R, pb.RECEIPT_TYPE_READ, 4)                 # the sender is not counted
    assert add(s, R, ["r6"]) == 5
    devs["r6"].receipt(R, pb.RECEIPT_TYPE_READ, 5)

    def read_state(dev, seq, **kw):
        r = dev.request_ok(read_state=pb.ReadStateRequest(conversation_id=R, seq=seq, **kw))
        assert r.WhichOneof("body") == "read_state", H.describe(r)
        x = r.read_state
        assert x.conversation_id == R and x.seq == seq
        return (x.members, x.delivered, x.read, list(x.readers), x.more)

    assert read_state(devs["r5"], 3) == (5, 3, 2, ["r1", "r2"], False)
    assert read_state(s, 2) == (5, 4, 3, ["r1", "r2", "r4"], False)
    assert read_state(devs["r1"], 4) == (5, 1, 1, ["r2"], False)
    assert read_state(devs["r6"], 5) == (6, 1, 1, ["r6"], False), \
        "seq 5 (the add, by s): r1..r6 count, s does not"
    assert read_state(s, 2, limit=2) == (5, 4, 3, ["r1", "r2"], True)
    assert read_state(s, 2, limit=2, after_user_id="r2") == (5, 4, 3, ["r4"], False)
    r = s.request(read_state=pb.ReadStateRequest(conversation_id=R, seq=99))
    assert H.is_error(r, "NOT_FOUND"), H.describe(r)
    r = uma.request(read_state=pb.ReadStateRequest(conversation_id=R, seq=2))
    assert H.is_error(r, "NOT_MEMBER"), H.describe(r)
    time.sleep(0.2)
    assert receipts_of(s, R) == [] and all(receipts_of(d, R) == [] for d in devs.values())
    # the same counts in a small group
    r = uma.request_ok(read_state=pb.ReadStateRequest(conversation_id=A, seq=2))
    x = r.read_state
    assert (x.members, x.delivered, x.read, list(x.readers)) == (1, 1, 0, []), \
        "A's seq 2 is v1's: uma (delivered, not read) is the one member counted"


# ---------------------------------------------------------------------------
# 5. 10,000 members, 500 online devices
# ---------------------------------------------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(s)) + s


class _Raw:
    __slots__ = ("user", "device", "sock", "buf", "connack", "events", "closed", "n_user")

    def __init__(self, user, device):
        self.user, self.device = user, device
        self.sock, self.buf, self.connack, self.closed = None, bytearray(), None, False
        self.events = []
        self.n_user = 0  # user messages received (kind USER)


class Swarm:
    """Many MQTT 3.1.1 device connections driven by one thread (a selector):
    CONNECT with a JWT (clean session), PUBACK every QoS 1 PUBLISH, keep
    every ServerEvent that arrives on the user's inbox topic. Loopback only;
    every wait bounded."""

    def __init__(self, broker, device="w"):
        self.broker, self.device = broker, device
        self.sel = selectors.DefaultSelector()
        self.clients = {}
        self.cv = threading.Condition()
        self.cmds = queue.Queue()
        self.errors = []
        self.running = True
        self.thread = threading.Thread(target=self._run, name="swarm", daemon=True)
        self.thread.start()

    # -- driven from the test thread ------------------------------------

    def connect(self, users, timeout=WAIT):
        clients = [_Raw(u, self.device) for u in users]
        tokens = [H.make_token(u, self.device) for u in users]
        self.cmds.put(("connect", list(zip(clients, tokens))))
        self.wait(lambda: all(c.connack is not None for c in clients), timeout,
                  f"CONNACK for {len(clients)} connections")
        bad = [(c.user, c.connack) for c in clients if c.connack != 0]
        assert not bad, f"refused: {bad[:5]}"
        return clients

    def publish(self, client, suffix, payload):
        self.cmds.put(("publish", client, f"{self.broker.prefix}/u/{client.user}/d/"
                                          f"{client.device}/{suffix}", payload))

    def disconnect(self, clients):
        """A clean DISCONNECT, then the socket is closed (in the loop thread)."""
        self.cmds.put(("disconnect", list(clients)))

    def wait(self, pred, timeout, what):
        with self.cv:
            ok = self.cv.wait_for(lambda: self.errors or pred(), timeout)
        assert not self.errors, self.errors[:5]
        assert ok, f"swarm: timed out after {timeout} s waiting for {what} ({self.broker.status()})"

    def close(self):
        self.cmds.put(("stop",))
        self.thread.join(WAIT)
        for c in self.clients.values():
            if c.sock is not None:
                try:
                    c.sock.sendall(b"\xe0\x00")
                except OSError:
                    pass
                c.sock.close()
        self.sel.close()

    # -- the loop thread ------------------------------------------------

    def _connect_one(self, c, token):
        s = socket.create_connection(("127.0.0.1", self.broker.port), timeout=WAIT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = (_mqtt_str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 120) +
                _mqtt_str(f"{c.user}:{c.device}") + _mqtt_str(c.user) + _mqtt_str(token))
        s.sendall(b"\x10" + _varint(len(body)) + body)
        c.sock = s
        self.clients[s.fileno()] = c
        self.sel.register(s, selectors.EVENT_READ, c)

    def _packets(self, c):
        buf = c.buf
        while len(buf) >= 2:
            mult, n, i = 1, 0, 1
            while True:
                if i >= len(buf):
                    return
                byte = buf[i]
                n += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
            if len(buf) < i + n:
                return
            yield buf[0], bytes(buf[i:i + n])
            del buf[:i + n]

    def _on_packet(self, c, first, body):
        kind = first & 0xF0
        if kind == 0x20:
            c.connack = body[1]
        elif kind == 0x30:
            qos = (first >> 1) & 3
            tlen = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + tlen].decode()
            pos = 2 + tlen
            if qos:
                pid = body[pos:pos + 2]
                pos += 2
                c.sock.sendall(b"\x40\x02" + pid)
            if topic.endswith("/inbox"):
                ev = pb.ServerEvent()
                ev.ParseFromString(body[pos:])
                c.events.append(ev)
                if ev.WhichOneof("body") == "message" and ev.message.kind == USER:
                    c.n_user += 1

    def _run(self):
        try:
            while self.running:
                try:
                    while True:
                        cmd = self.cmds.get_nowait()
                        if cmd[0] == "connect":
                            for k, (c, tok) in enumerate(cmd[1]):
                                self._connect_one(c, tok)
                                if k % 50 == 49:
                                    self._pump(0)
                        elif cmd[0] == "publish":
                            _, c, topic, payload = cmd
                            c.sock.sendall(b"\x30" + _varint(2 + len(topic.encode()) + len(payload))
                                           + _mqtt_str(topic) + payload)
                        elif cmd[0] == "disconnect":
                            for c in cmd[1]:
                                c.sock.sendall(b"\xe0\x00")
                                self.sel.unregister(c.sock)
                                c.sock.close()
                                c.sock, c.closed = None, True
                        elif cmd[0] == "stop":
                            self.running = False
                except queue.Empty:
                    pass
                self._pump(0.02)
        except Exception as e:  # noqa: BLE001 - reported to the waiting test
            with self.cv:
                self.errors.append(repr(e))
                self.cv.notify_all()

    def _pump(self, timeout):
        got = False
        for key, _ in self.sel.select(timeout):
            c = key.data
            data = c.sock.recv(1 << 16)
            if not data:
                self.sel.unregister(c.sock)
                c.closed = True
                raise ConnectionError(f"{c.user}: the broker closed the connection")
            c.buf += data
            for first, body in self._packets(c):
                self._on_packet(c, first, body)
            got = True
        if got:
            with self.cv:
                self.cv.notify_all()


def test_ten_thousand_members_five_hundred_online(make_broker, connect):
    t0 = time.monotonic()
    # default thresholds (256 / 192); the smallest lane budget, so each
    # broadcast to the 500 online devices is walked over several loop passes
    b = make_broker(opts={"group_max_members": 100000, "fanout_per_pass": 100})
    owner = connect("owner", broker=b)
    users = [f"m{i:05d}" for i in range(10000)]
    online = users[::20]                                   # 500, across every batch
    early = [u for k, u in enumerate(online) if k % 5]     # 400 online before the group exists
    late = [u for k, u in enumerate(online) if not k % 5]  # 100 connect when it is complete
    swarm = Swarm(b)
    try:
        raw = {c.user: c for c in swarm.connect(early)}
        t_conn = time.monotonic()

        r = owner.request(group_create=pb.GroupCreate(title="big", member_ids=users[:1001]))
        assert H.is_error(r, "INVALID_ARGUMENT"), "1001 member_ids: " + H.describe(r)
        conv = create(owner, users[:1000], title="big")
        r = owner.request(group_add=pb.GroupAddMembers(conversation_id=conv,
                                                       user_ids=users[1000:2001]))
        assert H.is_error(r, "INVALID_ARGUMENT"), "1001 user_ids: " + H.describe(r)
        for k in range(1, 10):
            assert add(owner, conv, users[k * 1000:(k + 1) * 1000]) == k + 1
        t_group = time.monotonic()
        r = owner.request_ok(list_conversations=pb.ListConversations())
        (sm,) = r.conversations.conversations
        assert (sm.mode, sm.member_count, sm.head_seq) == (LARGE, 10001, 10)
        r = owner.request(group_add=pb.GroupAddMembers(conversation_id=conv,
                                                       user_ids=["m00001"]))
        assert H.is_error(r, "INVALID_ARGUMENT"), "already a member: " + H.describe(r)

        raw.update({c.user: c for c in swarm.connect(late)})
        n = 20
        # 50 devices go away while the broadcasts are being walked (holes in the room)
        leaving = [raw[u] for u in online[3::10]]
        cmids = [owner.send_nowait(conv, f"big-{i}".encode())[0] for i in range(n)]
        swarm.wait(lambda: all(c.n_user >= 3 for c in leaving), WAIT, "the first messages")
        swarm.disconnect(leaving)
        acks = [owner.take_ack(c) for c in cmids]
        assert [a.seq for a in acks] == list(range(11, 11 + n)), [H.describe(a) for a in acks]
        assert all(a.inbox_seq == 0 for a in acks)
        t_sent = time.monotonic()
        for c in leaving:
            del raw[c.user]

        def group_msgs(c):
            return [e.message for e in c.events
                    if e.WhichOneof("body") == "message" and e.message.conversation_id == conv]

        swarm.wait(lambda: all(c.n_user >= n for c in raw.values()),
                   WAIT * 3, f"{n} messages on each of {len(raw)} devices")
        t_recv = time.monotonic()
        wrong = []
        for u, c in raw.items():
            ms = group_msgs(c)
            joined = users.index(u) // 1000 + 1                # 1 (CREATED) or the add's seq
            want = list(range(joined, 11 + n)) if u in early else list(range(11, 11 + n))
            seqs = [m.seq for m in ms]
            if seqs != want:
                wrong.append(f"{u}: {seqs[:5]}..{seqs[-5:]} ({len(seqs)}), want {want[0]}..")
                continue
            for m in ms:
                want_inbox = m.seq == joined and u in early  # its own add is in its inbox
                if (m.inbox_seq > 0) != want_inbox or (m.kind == USER) != (m.seq > 10):
                    wrong.append(f"{u}: seq {m.seq} kind {m.kind} inbox_seq {m.inbox_seq}")
            users_msgs = [m for m in ms if m.kind == USER]
            if [m.body for m in users_msgs] != [f"big-{i}".encode() for i in range(n)]:
                wrong.append(f"{u}: bodies")
        assert not wrong, f"{len(wrong)} devices wrong: {wrong[:10]}"
        for c in leaving:  # what a leaving device got: in order, once, without a gap
            seqs = [m.seq for m in group_msgs(c) if m.kind == USER]
            assert seqs == list(range(11, 11 + len(seqs))) and len(seqs) >= 3, \
                f"{c.user} (disconnected mid-broadcast): {seqs}"

        # typing from one online member reaches every other online device
        typer = raw[online[7]]
        swarm.publish(typer, "typing",
                      pb.Typing(conversation_id=conv, typing=True).SerializeToString())

        def typings(c):
            return [e.typing for e in c.events if e.WhichOneof("body") == "typing"]

        assert typer.user in raw
        others = [c for c in raw.values() if c is not typer]
        swarm.wait(lambda: all(typings(c) for c in others), WAIT, "typing on every device")
        owner.wait_event(lambda e: e.WhichOneof("body") == "typing", what="typing at the owner")
        for c in others:
            (t,) = typings(c)
            assert (t.conversation_id, t.user_id, t.typing) == (conv, typer.user, True)
        time.sleep(0.2)
        assert typings(typer) == [], "the typer's own device gets no echo"
        t_typing = time.monotonic()
        print(f"\n10k group: broker+400 connections {t_conn - t0:.2f}s, "
              f"create+9 adds {t_group - t_conn:.2f}s, 100 more + {n} sends "
              f"{t_sent - t_group:.2f}s, all received {t_recv - t_sent:.2f}s, "
              f"typing {t_typing - t_recv:.2f}s; the 50 that left mid-broadcast had "
              f"{sorted({c.n_user for c in leaving})} of {n} messages")
    finally:
        swarm.close()


# ---------------------------------------------------------------------------
# 6. Announcement channels
# ---------------------------------------------------------------------------

def test_admin_only_posting(make_broker, connect):
    b = make_broker(opts=SWITCH)
    own, adm = connect("own", broker=b), connect("adm", broker=b)
    mem = connect("mem", broker=b, v5=True)
    conv = create(own, ["adm", "mem"], title="news", posting=ADMINS)
    m = wait_live_seqs(mem, conv, [1])[0]
    assert m.event.type == CE.TYPE_CREATED and m.event.posting == ADMINS
    group_op(own, group_set_role=pb.GroupSetRole(conversation_id=conv, user_ids=["adm"],
                                                 role=pb.ROLE_ADMIN))          # seq 2

    ack = mem.send(conv, b"may I?")
    assert H.is_error(ack, "PERMISSION_DENIED"), H.describe(ack)
    assert ack.seq == 0 and ack.inbox_seq == 0
    assert mem.wait_puback(mem.last_mid) == 0x87, "a refused send is PUBACK 0x87 on MQTT 5"
    assert adm.send_ok(conv, b"from the admin").seq == 3
    assert own.send_ok(conv, b"from the owner").seq == 4
    r = own.request_ok(list_conversations=pb.ListConversations())
    assert [c.posting for c in r.conversations.conversations] == [ADMINS]

    r = mem.request(group_settings=pb.GroupSettings(conversation_id=conv, posting=EVERYONE))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)
    r = adm.request(group_settings=pb.GroupSettings(conversation_id=conv))
    assert H.is_error(r, "INVALID_ARGUMENT"), "nothing to change: " + H.describe(r)
    assert group_op(adm, group_settings=pb.GroupSettings(conversation_id=conv,
                                                         posting=EVERYONE)) == 5
    for d in (own, mem):
        m = wait_live_seqs(d, conv, [5])[-1]
        assert m.kind == EVENT and m.event.type == CE.TYPE_SETTINGS_CHANGED
        assert (m.event.posting, m.event.actor_user_id) == (EVERYONE, "adm")
    assert mem.send_ok(conv, b"now I may").seq == 6
    msgs = [m.seq for m in live(mem, conv)]
    assert msgs == [1, 2, 3, 4, 5], "the refused send wrote nothing"

    # a large channel switched with group_settings
    fans = [f"fan{i}" for i in range(5)]
    fan = connect("fan0", broker=b)
    ch = create(own, fans)                                     # 6: large
    assert group_op(own, group_settings=pb.GroupSettings(conversation_id=ch,
                                                         posting=ADMINS)) == 2
    m = wait_live_seqs(fan, ch, [2])[-1]
    assert m.event.type == CE.TYPE_SETTINGS_CHANGED and m.event.posting == ADMINS
    assert m.inbox_seq == 0, "large: the settings event is pulled, not in the inbox"
    ack = fan.send(ch, b"hi")
    assert H.is_error(ack, "PERMISSION_DENIED"), H.describe(ack)
    assert own.send_ok(ch, b"announcement").seq == 3
    r = fan.request(group_settings=pb.GroupSettings(conversation_id=ch, posting=EVERYONE))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)
    r = fan.request_ok(list_conversations=pb.ListConversations())
    (s,) = [c for c in r.conversations.conversations if c.conversation_id == ch]
    assert (s.posting, s.mode, s.head_seq) == (ADMINS, LARGE, 3)


# ---------------------------------------------------------------------------
# 7. Devices that only know inbox sync
# ---------------------------------------------------------------------------

def test_old_device_inbox_sync_only(make_broker, connect):
    b = make_broker(opts=SWITCH)
    own = connect("own", broker=b)
    olga = connect("olga", broker=b)
    conv = create(own, ["olga", "p1", "p2"])                   # 4: small
    wait_live_seqs(olga, conv, [1])
    msgs, _ = olga.sync_all()          # the old way: no positions
    cursor = msgs[-1].inbox_seq
    assert add(own, conv, ["p3", "p4"]) == 2                   # 6: large
    m = wait_live_seqs(olga, conv, [2])[-1]
    assert m.event.mode == LARGE and m.inbox_seq == cursor + 1
    acks = own.send_many(conv, [b"3", b"4", b"5"])
    assert [a.seq for a in acks] == [3, 4, 5]
    ms = wait_live_seqs(olga, conv, [3, 4, 5])
    assert [(m.seq, m.inbox_seq) for m in ms] == [(1, 1), (2, 2), (3, 0), (4, 0), (5, 0)]
    page = sync_req(olga, 0)
    assert [(m.conversation_id, m.seq, m.inbox_seq) for m in page.messages] == \
        [(conv, 1, 1), (conv, 2, 2)], "the switch event is in the inbox"
    assert page.messages[1].event.mode == LARGE
    assert list(page.positions) == [] and not page.positions_more
    cursor = 2
    olga.close()

    own.send_many(conv, [b"6", b"7", b"8"])
    olga = connect("olga", broker=b)
    page = sync_req(olga, cursor)
    assert list(page.messages) == [] and page.inbox_head == 2 and list(page.positions) == []
    assert [m.seq for m in history_all(olga, conv)] == list(range(8, 0, -1)), \
        "what it missed is in history"
    assert [m.body for m in history_all(olga, conv)[:3]] == [b"8", b"7", b"6"]

    # back to small: the switch event and what follows are in the inbox again
    assert remove(own, conv, ["p2", "p3", "p4"]) == 9          # 3: small
    own.send_ok(conv, b"10")
    ms = wait_live_seqs(olga, conv, [9, 10])
    assert [(m.seq, m.inbox_seq) for m in ms] == [(9, 3), (10, 4)]
    page = sync_req(olga, cursor)
    assert [(m.seq, m.inbox_seq) for m in page.messages] == [(9, 3), (10, 4)]
    assert page.messages[0].event.mode == SMALL
    assert list(page.positions) == []
