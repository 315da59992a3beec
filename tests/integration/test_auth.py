"""Authentication: JWT checks and the MQTT identity (username, client id)."""

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import mqchat_harness as H

# CONNACK codes that mean "refused" for an auth failure.
REFUSED_311 = (4, 5)            # bad user name or password / not authorised
REFUSED_V5 = (0x86, 0x87, 0x8C)  # bad user name or password / not authorised / bad auth method

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())


def assert_refused(connect, user, device="phone", v5=False, **kw):
    with pytest.raises(H.ConnectRefused) as ei:
        connect(user, device, v5=v5, **kw)
    rc = ei.value.rc
    allowed = REFUSED_V5 if v5 else REFUSED_311
    assert rc in allowed, f"CONNACK {rc!r}, expected one of {allowed}"


@pytest.mark.parametrize("v5", [False, True], ids=["mqtt311", "mqtt5"])
def test_good_token_connects(broker, connect, v5):
    d = connect("alice", "phone", v5=v5)
    assert d.connected
    ack = d.send_ok(H.dm("alice", "bob"), b"x")
    assert ack.seq >= 1


def test_token_with_nbf_in_past_connects(broker, connect):
    tok = H.make_token("alice", "phone", nbf=int(time.time()) - 60)
    connect("alice", "phone", token=tok)


def test_audience_as_array_connects(broker, connect):
    tok = H.make_token("alice", "phone", aud=["other", H.AUDIENCE])
    connect("alice", "phone", token=tok)


BAD_TOKENS = {
    "expired": lambda: H.make_token("alice", "phone", exp_in=-3600),
    "not_yet_valid": lambda: H.make_token("alice", "phone", nbf=int(time.time()) + 3600),
    "wrong_signature": lambda: H.make_token("alice", "phone",
                                            secret="another-secret-0123456789abcdef0123456789"),
    "tampered_payload": lambda: _tamper(H.make_token("alice", "phone")),
    "alg_none": lambda: H.make_token("alice", "phone", alg="none"),
    "alg_none_with_hs_sig": lambda: H.make_token(
        "alice", "phone", header={"alg": "none", "typ": "JWT"}),
    "wrong_audience": lambda: H.make_token("alice", "phone", aud="someone-else"),
    "no_audience": lambda: H.make_token("alice", "phone", aud=None),
    "wrong_issuer": lambda: H.make_token("alice", "phone", iss="evil-issuer"),
    "rs256_when_only_hs256": lambda: H.make_token("alice", "phone", alg="RS256", key=_RSA),
    "es256_when_only_hs256": lambda: H.make_token("alice", "phone", alg="ES256", key=_EC),
    "missing_did": lambda: H.make_token("alice", "phone", drop=("did",)),
    "missing_exp": lambda: H.make_token("alice", "phone", drop=("exp",)),
    "garbage": lambda: "not-a-jwt",
    "empty": lambda: "",
}


def _tamper(tok):
    h, p, s = tok.split(".")
    claims = H.json.loads(H.base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["sub"] = "mallory"
    return h + "." + H.b64u(H.json.dumps(claims, separators=(",", ":"))) + "." + s


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_bad_token_refused(broker, connect, name):
    assert_refused(connect, "alice", "phone", token=BAD_TOKENS[name]())
    # the broker still serves
    d = connect("alice", "phone")
    assert d.send_ok(H.dm("alice", "bob"), b"still fine").seq >= 1


def test_bad_token_refused_mqtt5(broker, connect):
    assert_refused(connect, "alice", "phone", v5=True,
                   token=H.make_token("alice", "phone", exp_in=-3600))


def test_client_id_must_match_token_device(broker, connect):
    tok = H.make_token("alice", "phone")
    assert_refused(connect, "alice", "phone", token=tok, client_id="alice:tablet")
    assert_refused(connect, "alice", "phone", token=tok, client_id="alice")
    assert_refused(connect, "alice", "phone", token=tok, client_id="bob:phone")
    assert_refused(connect, "alice", "phone", token=tok, client_id="alice:phone:x")


def test_username_must_match_token_sub(broker, connect):
    tok = H.make_token("alice", "phone")
    # bob's name with alice's token (client id matching the name, then the token)
    assert_refused(connect, "bob", "phone", token=tok)
    assert_refused(connect, "alice", "phone", token=tok, username="bob")
    assert_refused(connect, "alice", "phone", token=tok, username="")


def test_no_password_refused(broker, connect):
    d = H.Device(broker, "alice", "phone", connect=False)
    d.client.username_pw_set("alice", None)
    connect.devices.append(d)
    with pytest.raises(H.ConnectRefused) as ei:
        d.connect()
    assert ei.value.rc in REFUSED_311


@pytest.fixture
def rsa_broker(make_broker, tmp_path):
    pem = H.write_public_key(_RSA, tmp_path / "rsa.pub.pem")
    return make_broker(opts={"jwt_hs256_secret": None, "jwt_public_key_file": pem})


@pytest.fixture
def ec_broker(make_broker, tmp_path):
    pem = H.write_public_key(_EC, tmp_path / "ec.pub.pem")
    return make_broker(opts={"jwt_hs256_secret": None, "jwt_public_key_file": pem})


def test_rs256_with_public_key(rsa_broker, connect):
    tok = H.make_token("alice", "phone", alg="RS256", key=_RSA)
    d = connect("alice", "phone", broker=rsa_broker, token=tok)
    assert d.send_ok(H.dm("alice", "bob"), b"rs").seq == 1
    # an HS256 token is not accepted by an RS256-only broker
    assert_refused(connect, "alice", "tablet", broker=rsa_broker)
    # nor one signed by another RSA key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_refused(connect, "alice", "tablet", broker=rsa_broker,
                   token=H.make_token("alice", "tablet", alg="RS256", key=other))


def test_es256_with_public_key(ec_broker, connect):
    tok = H.make_token("alice", "phone", alg="ES256", key=_EC)
    d = connect("alice", "phone", broker=ec_broker, token=tok)
    assert d.send_ok(H.dm("alice", "bob"), b"es").seq == 1
    assert_refused(connect, "alice", "tablet", broker=ec_broker,
                   token=H.make_token("alice", "tablet", alg="RS256", key=_RSA))


def test_leeway(make_broker, connect):
    b = make_broker(opts={"jwt_leeway_s": "120"})
    late = H.make_token("alice", "phone", exp_in=-30)
    connect("alice", "phone", broker=b, token=late)
    assert_refused(connect, "alice", "tablet", broker=b,
                   token=H.make_token("alice", "tablet", exp_in=-600))
    early = H.make_token("alice", "watch", nbf=int(H.time.time()) + 30)
    connect("alice", "watch", broker=b, token=early)


def test_secret_file(make_broker, connect, tmp_path):
    f = tmp_path / "jwt.secret"
    f.write_text(H.HS256_SECRET + "\n")  # trailing newline ignored
    b = make_broker(opts={"jwt_hs256_secret": None, "jwt_hs256_secret_file": str(f)})
    d = connect("alice", "phone", broker=b)
    assert d.send_ok(H.dm("alice", "bob"), b"x").seq == 1
    assert_refused(connect, "alice", "tablet", broker=b,
                   token=H.make_token("alice", "tablet", secret=H.HS256_SECRET + "x"))


def test_token_tool_tokens_accepted(broker, connect, tmp_path):
    tool = H.os.environ.get("MQCHAT_TOKEN_TOOL")
    if not tool:
        pytest.skip("MQCHAT_TOKEN_TOOL not set")
    f = tmp_path / "jwt.secret"
    f.write_text(H.HS256_SECRET)
    out = H.subprocess.run([tool, "--secret-file", str(f), "--user", "alice", "--device", "cli",
                            "--iss", H.ISSUER, "--aud", H.AUDIENCE, "--ttl", "600"],
                           capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    d = connect("alice", "cli", token=out.stdout.strip())
    assert d.send_ok(H.dm("alice", "bob"), b"x").seq == 1
