"""Groups: a group of 50 with members added and removed, roles, limits,
list_members / list_conversations, and ordering with concurrent senders."""

import threading
import time

import mqchat_harness as H
from mqchat_harness import pb

EVENT = pb.MESSAGE_KIND_EVENT
CE = pb.ConversationEvent


def bkey(s):
    return s.encode()


def create(dev, members, title="group"):
    r = dev.request_ok(group_create=pb.GroupCreate(title=title, member_ids=members))
    assert r.WhichOneof("body") == "group", H.describe(r)
    assert r.group.conversation_id.startswith("g:")
    return r.group


def wait_seq(dev, conv, seq, what=None):
    ev = dev.wait_event(lambda e: e.WhichOneof("body") == "message"
                        and e.message.conversation_id == conv and e.message.seq == seq,
                        what=what or f"seq {seq} of {conv}")
    return ev.message


def members_of(dev, conv):
    r = dev.request_ok(list_members=pb.ListMembers(conversation_id=conv))
    assert r.WhichOneof("body") == "members", H.describe(r)
    assert r.members.conversation_id == conv
    return list(r.members.members)


def test_group_of_fifty(broker, connect):
    others = [f"u{i:02d}" for i in range(1, 50)]          # 49 others: 50 with alice
    add1 = [f"u{i:02d}" for i in range(50, 55)]           # -> 55
    add2 = [f"u{i:02d}" for i in range(55, 60)]           # -> 60 = group_max_members
    over = "u60"
    alice = connect("alice")
    dev = {u: connect(u) for u in others + add1 + add2 + [over]}

    g = create(alice, others + ["u01", "u02"], title="fifty")  # duplicates are dropped
    conv = g.conversation_id
    assert g.seq == 1

    for u in others:
        m = wait_seq(dev[u], conv, 1, f"{u}: the CREATED event")
        assert m.kind == EVENT and m.event.type == CE.TYPE_CREATED
        assert m.event.actor_user_id == "alice"
        assert set(others) <= set(m.event.user_ids)
        assert m.sender_user_id in ("", "alice")
    mem = members_of(dev["u30"], conv)
    ids = [m.user_id for m in mem]
    assert ids == sorted(["alice"] + others, key=bkey), "50 members, ordered by user id"
    roles = {m.user_id: m.role for m in mem}
    assert roles["alice"] == pb.ROLE_OWNER
    assert all(roles[u] == pb.ROLE_MEMBER for u in others)
    assert all(m.joined_seq == 1 for m in mem)

    assert alice.send_ok(conv, b"hello fifty").seq == 2
    assert dev["u07"].send_ok(conv, b"from u07").seq == 3
    for u in others:
        if u != "u07":  # the sending device has its SendAck instead of an echo
            assert wait_seq(dev[u], conv, 3).sender_user_id == "u07"
    assert wait_seq(alice, conv, 3).body == b"from u07"

    # a plain member may not change membership
    r = dev["u05"].request(group_add=pb.GroupAddMembers(conversation_id=conv, user_ids=add1))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)
    r = dev["u05"].request(group_remove=pb.GroupRemoveMembers(conversation_id=conv,
                                                               user_ids=["u06"]))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)

    r = alice.request_ok(group_add=pb.GroupAddMembers(conversation_id=conv, user_ids=add1))
    assert r.group.conversation_id == conv and r.group.seq == 4
    for u in others + add1:
        m = wait_seq(dev[u], conv, 4, f"{u}: MEMBERS_ADDED")
        assert m.kind == EVENT and m.event.type == CE.TYPE_MEMBERS_ADDED
        assert m.event.actor_user_id == "alice"
        assert sorted(m.event.user_ids) == add1

    r = alice.request(group_add=pb.GroupAddMembers(conversation_id=conv, user_ids=["u01"]))
    assert H.is_error(r, "INVALID_ARGUMENT"), "already a member: " + H.describe(r)

    r = alice.request(group_add=pb.GroupAddMembers(conversation_id=conv,
                                                   user_ids=add2 + [over]))
    assert H.is_error(r, "GROUP_FULL"), "61 members: " + H.describe(r)
    assert len(members_of(alice, conv)) == 55, "a refused add changes nothing"

    r = alice.request_ok(group_add=pb.GroupAddMembers(conversation_id=conv, user_ids=add2))
    assert r.group.seq == 5
    assert len(members_of(alice, conv)) == 60
    r = alice.request(group_add=pb.GroupAddMembers(conversation_id=conv, user_ids=[over]))
    assert H.is_error(r, "GROUP_FULL"), H.describe(r)

    removed = ["u10", "u11"]
    r = alice.request_ok(group_remove=pb.GroupRemoveMembers(conversation_id=conv,
                                                            user_ids=removed))
    assert r.group.seq == 6
    remaining = [u for u in others + add1 + add2 if u not in removed]
    for u in remaining + removed:
        m = wait_seq(dev[u], conv, 6, f"{u}: MEMBERS_REMOVED")
        assert m.event.type == CE.TYPE_MEMBERS_REMOVED
        assert sorted(m.event.user_ids) == removed
        assert m.event.actor_user_id == "alice"

    assert alice.send_ok(conv, b"after removal").seq == 7
    for u in remaining:
        wait_seq(dev[u], conv, 7)
    time.sleep(0.3)
    for u in removed:
        assert max(m.seq for m in dev[u].messages(conv)) == 6, f"{u} got a message after removal"
        ack = dev[u].send(conv, b"let me in")
        assert H.is_error(ack, "NOT_MEMBER"), H.describe(ack)
        assert ack.seq == 0 and ack.inbox_seq == 0
        r = dev[u].request(history=pb.HistoryRequest(conversation_id=conv))
        assert H.is_error(r, "NOT_MEMBER"), H.describe(r)
        r = dev[u].request(list_members=pb.ListMembers(conversation_id=conv))
        assert H.is_error(r, "NOT_MEMBER"), H.describe(r)
        msgs, _ = dev[u].sync_all()
        assert [m.seq for m in msgs if m.conversation_id == conv] == [1, 2, 3, 4, 5, 6]
    assert dev[over].messages() == [], "never a member: got nothing"

    r = alice.request(group_remove=pb.GroupRemoveMembers(conversation_id=conv,
                                                         user_ids=["u10"]))
    assert H.is_error(r, "NOT_FOUND"), H.describe(r)

    # every member saw the conversation in seq order, without gaps, from its join
    expected_from = {u: 1 for u in others}
    expected_from.update({u: 4 for u in add1})
    expected_from.update({u: 5 for u in add2})
    for u in remaining:
        seqs = [m.seq for m in dev[u].messages(conv)]
        want = list(range(expected_from[u], 8))
        if u == "u07" and seqs == [s for s in want if s != 3]:
            continue  # the sending device need not get its own message live
        assert seqs == want, f"{u} saw {seqs}"
    assert len(members_of(alice, conv)) == 58

    # creating a group above the limit
    r = alice.request(group_create=pb.GroupCreate(
        title="too big", member_ids=[f"x{i:02d}" for i in range(60)]))
    assert H.is_error(r, "GROUP_FULL"), H.describe(r)
    g2 = create(alice, [f"x{i:02d}" for i in range(59)], title="exactly full")
    assert g2.seq == 1 and g2.conversation_id != conv


def test_group_roles_and_leave(broker, connect):
    alice, bob, carol, dave, erin, frank = (connect(u) for u in
                                            ("alice", "bob", "carol", "dave", "erin", "frank"))
    conv = create(alice, ["bob", "carol", "dave", "erin"]).conversation_id

    def req(dev, **kw):
        return dev.request(**kw)

    r = req(carol, group_set_role=pb.GroupSetRole(conversation_id=conv, user_ids=["dave"],
                                                  role=pb.ROLE_ADMIN))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)

    r = alice.request_ok(group_set_role=pb.GroupSetRole(conversation_id=conv, user_ids=["bob"],
                                                        role=pb.ROLE_ADMIN))
    assert r.group.seq == 2
    m = wait_seq(carol, conv, 2)
    assert m.event.type == CE.TYPE_ROLE_CHANGED and list(m.event.user_ids) == ["bob"]
    assert m.event.role == pb.ROLE_ADMIN and m.event.actor_user_id == "alice"

    # only the owner changes roles
    r = req(bob, group_set_role=pb.GroupSetRole(conversation_id=conv, user_ids=["carol"],
                                                role=pb.ROLE_ADMIN))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)
    for role in (pb.ROLE_OWNER, pb.ROLE_UNSPECIFIED):
        r = req(alice, group_set_role=pb.GroupSetRole(conversation_id=conv, user_ids=["carol"],
                                                      role=role))
        assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)

    # an admin adds and removes members
    r = bob.request_ok(group_add=pb.GroupAddMembers(conversation_id=conv, user_ids=["frank"]))
    assert r.group.seq == 3
    assert wait_seq(frank, conv, 3).event.type == CE.TYPE_MEMBERS_ADDED
    r = bob.request_ok(group_remove=pb.GroupRemoveMembers(conversation_id=conv,
                                                          user_ids=["carol"]))
    assert r.group.seq == 4
    assert wait_seq(carol, conv, 4).event.type == CE.TYPE_MEMBERS_REMOVED
    # nobody removes the owner; only the owner removes admins
    r = req(bob, group_remove=pb.GroupRemoveMembers(conversation_id=conv, user_ids=["alice"]))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)
    alice.request_ok(group_set_role=pb.GroupSetRole(conversation_id=conv, user_ids=["dave"],
                                                    role=pb.ROLE_ADMIN))  # seq 5
    r = req(bob, group_remove=pb.GroupRemoveMembers(conversation_id=conv, user_ids=["dave"]))
    assert H.is_error(r, "PERMISSION_DENIED"), H.describe(r)

    # leave
    r = erin.request_ok(group_leave=pb.GroupLeave(conversation_id=conv))
    assert r.group.seq == 6
    m = wait_seq(bob, conv, 6)
    assert m.event.type == CE.TYPE_MEMBER_LEFT and m.event.actor_user_id == "erin"
    ack = erin.send(conv, b"still here?")
    assert H.is_error(ack, "NOT_MEMBER"), H.describe(ack)

    mem = {m.user_id: m.role for m in members_of(alice, conv)}
    assert mem == {"alice": pb.ROLE_OWNER, "bob": pb.ROLE_ADMIN, "dave": pb.ROLE_ADMIN,
                   "frank": pb.ROLE_MEMBER}
    assert [m.user_id for m in members_of(frank, conv)] == ["alice", "bob", "dave", "frank"]

    # group operations on a 1:1 conversation and on an unknown group
    r = req(alice, group_add=pb.GroupAddMembers(conversation_id=H.dm("alice", "bob"),
                                                user_ids=["carol"]))
    assert H.is_error(r, "INVALID_ARGUMENT"), H.describe(r)
    r = req(alice, group_add=pb.GroupAddMembers(conversation_id="g:nope", user_ids=["carol"]))
    assert H.is_error(r, "UNKNOWN_CONVERSATION"), H.describe(r)
    r = req(alice, list_members=pb.ListMembers(conversation_id="g:nope"))
    assert H.is_error(r, "UNKNOWN_CONVERSATION"), H.describe(r)


def test_list_conversations_paging(broker, connect):
    alice = connect("alice")
    bob = connect("bob")
    groups = [create(alice, ["bob"], title=f"t{i}").conversation_id for i in range(5)]
    alice.send_ok(groups[2], b"x")  # head 2 in one of them
    assert len(set(groups)) == 5

    got, pages, after = [], [], ""
    for _ in range(10):
        r = bob.request_ok(list_conversations=pb.ListConversations(
            after_conversation_id=after, limit=2))
        c = r.conversations
        pages.append((len(c.conversations), c.more))
        got.extend(c.conversations)
        if not c.more:
            break
        after = c.conversations[-1].conversation_id
    ids = [c.conversation_id for c in got]
    assert ids == sorted(groups, key=bkey), "by id, each once"
    assert pages == [(2, True), (2, True), (1, False)]
    heads = {c.conversation_id: c.head_seq for c in got}
    assert heads == {g: (2 if g == groups[2] else 1) for g in groups}
    assert all(c.role == pb.ROLE_MEMBER for c in got)
    titles = {c.conversation_id: c.title for c in got}  # kept from GroupCreate
    assert titles == {g: f"t{i}" for i, g in enumerate(groups)}

    r = alice.request_ok(list_conversations=pb.ListConversations())
    assert [c.conversation_id for c in r.conversations.conversations] == sorted(groups, key=bkey)
    assert all(c.role == pb.ROLE_OWNER for c in r.conversations.conversations)
    assert not r.conversations.more

    carol = connect("carol")
    r = carol.request_ok(list_conversations=pb.ListConversations())
    assert list(r.conversations.conversations) == [] and not r.conversations.more


def test_list_conversations_includes_one_to_one(broker, connect):
    """Reading chosen: a 1:1 conversation with messages is one of both users'
    conversations (what a chat list needs); role MEMBER."""
    alice = connect("alice")
    alice.send_ok(H.dm("alice", "bob"), b"x")
    alice.send_ok(H.dm("alice", "bob"), b"y")
    alice.send_ok(H.dm("alice", "carol"), b"z")
    r = alice.request_ok(list_conversations=pb.ListConversations())
    got = [(c.conversation_id, c.head_seq, c.role) for c in r.conversations.conversations]
    assert got == [("d:alice:bob", 2, pb.ROLE_MEMBER), ("d:alice:carol", 1, pb.ROLE_MEMBER)]
    bob = connect("bob")
    r = bob.request_ok(list_conversations=pb.ListConversations())
    assert [c.conversation_id for c in r.conversations.conversations] == ["d:alice:bob"]


def test_order_with_concurrent_senders(broker, connect):
    senders = [connect(f"s{i}") for i in range(5)]
    observers = [connect("obs1"), connect("obs2", "tablet")]
    owner = connect("owner")
    conv = create(owner, [d.user for d in senders + observers]).conversation_id
    per_sender = 40
    total = 1 + per_sender * len(senders)        # CREATED event + messages
    everyone = senders + observers + [owner]
    for d in everyone:
        wait_seq(d, conv, 1)

    acks = {}
    errors = []
    go = threading.Event()

    def run(dev):
        try:
            go.wait(H.WAIT)
            cmids = [dev.send_nowait(conv, f"{dev.user}#{k}".encode(),
                                     client_msg_id=f"{dev.user}-{k:03d}")[0]
                     for k in range(per_sender)]
            acks[dev.user] = [dev.take_ack(c) for c in cmids]
        except Exception as e:  # reported below
            errors.append(f"{dev}: {e!r}")

    threads = [threading.Thread(target=run, args=(d,)) for d in senders]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(H.WAIT * 3)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a sender thread did not finish"

    all_seqs = []
    for d in senders:
        a = acks[d.user]
        assert not any(x.HasField("error") for x in a), [H.describe(x) for x in a]
        seqs = [x.seq for x in a]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), \
            f"{d.user}: per-sender order not preserved: {seqs}"
        all_seqs += seqs
    assert sorted(all_seqs) == list(range(2, total + 1)), "seqs 2..N, each once"

    for d in observers + [owner]:
        msgs = d.wait_messages(total, conv)
        assert [m.seq for m in msgs] == list(range(1, total + 1)), \
            f"{d}: live seqs not 1..{total} strictly increasing"
        assert [m.inbox_seq for m in msgs] == list(range(1, total + 1)), \
            f"{d}: inbox seqs not contiguous"
        for s in senders:
            mine = [m.client_msg_id for m in msgs if m.sender_user_id == s.user]
            assert mine == sorted(mine) and len(mine) == per_sender, f"{d}: {s.user} order"
    for d in senders:
        # a sending device may or may not get its own messages live; what it
        # got must be strictly increasing, and with its own ACKs covers 1..N
        live = [m.seq for m in d.messages(conv)]
        assert live == sorted(set(live)), f"{d}: live seqs out of order: {live}"
        own = {x.seq for x in acks[d.user]}
        deadline = time.monotonic() + H.WAIT
        while set(live) | own != set(range(1, total + 1)) and time.monotonic() < deadline:
            time.sleep(0.05)
            live = [m.seq for m in d.messages(conv)]
        assert set(live) | own == set(range(1, total + 1)), f"{d}: missing seqs"
    # and the log says the same to a fresh device
    fresh = connect("obs1", "fresh")
    msgs, _ = fresh.sync_all(limit=50)
    assert [m.seq for m in msgs if m.conversation_id == conv] == list(range(1, total + 1))
    r = fresh.request_ok(history=pb.HistoryRequest(conversation_id=conv, limit=0))
    hist = [m.seq for m in r.history.messages]
    assert hist == list(range(total, total - len(hist), -1))


def test_group_receipts_and_typing(broker, connect):
    alice, bob, carol = (connect(u) for u in ("alice", "bob", "carol"))
    bob_tablet = connect("bob", "tablet")
    conv = create(alice, ["bob", "carol"]).conversation_id
    acks = alice.send_many(conv, [b"1", b"2", b"3"])
    assert [a.seq for a in acks] == [2, 3, 4]
    wait_seq(bob, conv, 4)
    bob.receipt(conv, pb.RECEIPT_TYPE_READ, 3)
    for d in (alice, carol, bob_tablet):
        r = d.wait_event(lambda e: e.WhichOneof("body") == "receipt",
                         what="bob's ReceiptUpdate").receipt
        assert (r.conversation_id, r.user_id, r.delivered_seq, r.read_seq) == \
            (conv, "bob", 3, 3)
    carol.typing(conv, True)
    for d in (alice, bob, bob_tablet):
        t = d.wait_event(lambda e: e.WhichOneof("body") == "typing", what="carol typing").typing
        assert (t.conversation_id, t.user_id, t.typing) == (conv, "carol", True)
    time.sleep(0.3)
    assert carol.events_of("typing") == []
    # a removed member's receipts are refused
    alice.request_ok(group_remove=pb.GroupRemoveMembers(conversation_id=conv,
                                                        user_ids=["carol"]))
    carol.receipt(conv, pb.RECEIPT_TYPE_READ, 4)
    r = carol.take_any_response(what="NOT_MEMBER for a removed member's receipt")
    assert H.is_error(r, "NOT_MEMBER"), H.describe(r)


def test_group_create_validation(broker, connect):
    alice = connect("alice")
    bad = {
        "bad member id": pb.GroupCreate(title="t", member_ids=["bob", "b@d"]),
        "member id with colon": pb.GroupCreate(title="t", member_ids=["bo:b"]),
        "title over 128 bytes": pb.GroupCreate(title="t" * 129, member_ids=["bob"]),
    }
    wrong = []
    for what, gc in bad.items():
        r = alice.request(group_create=gc)
        if not H.is_error(r, "INVALID_ARGUMENT"):
            wrong.append(f"{what}: {H.describe(r)}")
    # the creator listed among the members is deduplicated, not an error
    r = alice.request_ok(group_create=pb.GroupCreate(title="t" * 128, member_ids=["alice", "bob"]))
    mem = members_of(alice, r.group.conversation_id)
    assert [(m.user_id, m.role) for m in mem] == [("alice", pb.ROLE_OWNER), ("bob", pb.ROLE_MEMBER)]
    # a group with only the creator
    r = alice.request_ok(group_create=pb.GroupCreate(title="solo"))
    assert [m.user_id for m in members_of(alice, r.group.conversation_id)] == ["alice"]
    assert not wrong, "expected INVALID_ARGUMENT:\n  " + "\n  ".join(wrong)


def test_offline_group_member_syncs(broker, connect):
    alice = connect("alice")
    conv = create(alice, ["bob", "carol"]).conversation_id
    alice.send_many(conv, [b"g1", b"g2", b"g3"])
    bob = connect("bob")
    msgs, _ = bob.sync_all()
    assert [(m.conversation_id, m.seq) for m in msgs] == [(conv, s) for s in (1, 2, 3, 4)]
    assert msgs[0].kind == EVENT and msgs[0].event.type == CE.TYPE_CREATED
    assert [m.body for m in msgs[1:]] == [b"g1", b"g2", b"g3"]
    assert [m.inbox_seq for m in msgs] == [1, 2, 3, 4]
