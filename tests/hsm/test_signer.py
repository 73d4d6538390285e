"""The PKCS#11 signer against a real SoftHSM2 token, in this process (issue 12).

Keys are made by OpenSC's ``pkcs11-tool`` (and by our own ``generate_key_pair``); what the
token holds is read back with ``pkcs11-tool --read-object``, independently of our code,
and signatures are checked with ``cryptography`` against that key. No mock of the token.
"""

from __future__ import annotations

import secrets
import threading

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from staycheck.geo.errors import ConfigurationError
from staycheck.server.config import ServerConfig
from staycheck.server.pkcs11 import MAX_SESSIONS, Pkcs11Signer, generate_key_pair
from staycheck.trust.cose import ALG_EDDSA, ALG_ES256
from staycheck.trust.keys import key_id

from tests.hsm.softhsm import SoftHsm

HANDLER_THREADS = ServerConfig.__dataclass_fields__["max_workers"].default  # 16


def label(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def raw_ed25519(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_a_pkcs11_tool_ed25519_key_signs_and_its_key_id_is_the_tokens(hsm: SoftHsm):
    name = label("verdict")
    signer = Pkcs11Signer(hsm.keygen(name))
    on_token = hsm.read_public_key(name)  # pkcs11-tool --read-object --type pubkey
    assert isinstance(on_token, Ed25519PublicKey)
    assert signer.alg == ALG_EDDSA
    assert signer.public_key.raw == raw_ed25519(on_token)
    assert signer.kid == key_id(raw_ed25519(on_token))  # first 8 bytes of SHA-256
    data = b"a Sig_structure of a verdict"
    signature = signer.sign(data)
    assert len(signature) == 64
    on_token.verify(signature, data)  # cryptography, with the key pkcs11-tool read


def test_a_p256_key_signs_raw_r_and_s_over_sha256(hsm: SoftHsm):
    name = label("p256")
    signer = Pkcs11Signer(hsm.keygen(name, key_type="EC:prime256v1"))
    on_token = hsm.read_public_key(name)
    assert isinstance(on_token, ec.EllipticCurvePublicKey) and signer.alg == ALG_ES256
    point = on_token.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert signer.kid == key_id(point)
    data = b"ES256 over these bytes"
    signature = signer.sign(data)
    assert len(signature) == 64  # COSE: r || s, not DER
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    on_token.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))


def test_our_key_pair_is_sensitive_never_extractable_and_cannot_be_exported(hsm: SoftHsm):
    import PyKCS11

    name = label("made-here")
    signer = generate_key_pair(hsm.uri(name))
    assert signer.flags is not None
    assert signer.flags.sensitive and not signer.flags.extractable
    assert signer.flags.always_sensitive and signer.flags.never_extractable
    assert signer.uri.id is not None and f"object={name}" in str(signer.uri)
    # C_GetAttributeValue of CKA_VALUE through the library itself: the token refuses.
    lib = PyKCS11.PyKCS11Lib().load(hsm.module)
    slot = next(
        s
        for s in lib.getSlotList(tokenPresent=True)
        if lib.getTokenInfo(s).label.strip() == hsm.label
    )
    session = lib.openSession(slot)
    with pytest.raises(PyKCS11.PyKCS11Error) as refused:
        try:
            session.login(hsm.pin)
        except PyKCS11.PyKCS11Error as e:
            assert e.value == PyKCS11.CKR_USER_ALREADY_LOGGED_IN  # this process is logged in
        (private,) = session.findObjects(
            [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, name)]
        )
        template = PyKCS11.LowLevel.ckattrlist(1)
        template[0].SetType(PyKCS11.CKA_VALUE)
        rv = lib.lib.C_GetAttributeValue(session.session, private, template)
        raise PyKCS11.PyKCS11Error(rv)
    assert refused.value.value == PyKCS11.CKR_ATTRIBUTE_SENSITIVE
    assert str(refused.value) == "CKR_ATTRIBUTE_SENSITIVE (0x00000011)"
    session.closeSession()


def test_making_a_key_where_one_exists_is_refused(hsm: SoftHsm):
    name = label("taken")
    hsm.keygen(name)
    with pytest.raises(ConfigurationError, match="a key already exists"):
        generate_key_pair(hsm.uri(name))


def test_sixteen_threads_sign_at_once_each_on_a_session(hsm: SoftHsm):
    signer = Pkcs11Signer(hsm.keygen(label("threads")))
    public = Ed25519PublicKey.from_public_bytes(signer.public_key.raw)
    start = threading.Barrier(16)
    failures: list[BaseException] = []
    done: list[int] = []

    def work(k: int) -> None:
        start.wait()
        try:
            for i in range(60):
                data = f"thread {k} item {i}".encode()
                public.verify(signer.sign(data), data)
            done.append(k)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == [] and sorted(done) == list(range(16))
    assert 1 <= signer.sessions_open <= MAX_SESSIONS


def test_sixteen_operations_hold_sixteen_sessions_at_once_and_a_seventeenth_waits_bounded(
    hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
):
    """16 handler threads are each inside an operation on a session of their own at the
    same moment (the barrier passes only if none waits for another's session); one more
    waits at most SESSION_WAIT_S and fails as overload, without taking the key down."""
    import staycheck.server.pkcs11 as pkcs11

    monkeypatch.setattr(pkcs11, "SESSION_WAIT_S", 0.3)
    signer = Pkcs11Signer(hsm.keygen(label("pool")))
    pool = signer._pool  # the sessions a signing call borrows, one per call
    inside = threading.Barrier(HANDLER_THREADS + 1, timeout=20)
    leave = threading.Event()
    handles: list[object] = []
    errors: list[BaseException] = []

    def operation() -> None:
        try:
            with pool.module.gate.shared(), pool.session() as session:
                handles.append(session.session.value())
                inside.wait()
                leave.wait(20)
        except BaseException as e:
            errors.append(e)
            inside.abort()

    threads = [threading.Thread(target=operation) for _ in range(HANDLER_THREADS)]
    for t in threads:
        t.start()
    inside.wait()  # all 16 are inside an operation, each on its own session
    assert len(set(handles)) == HANDLER_THREADS and errors == []
    with pytest.raises(pkcs11.TokenUnavailableError, match="no PKCS#11 session free within"):
        signer.sign(b"a seventeenth call")
    assert signer.healthy  # overload is not a token that went away
    leave.set()
    for t in threads:
        t.join(timeout=20)
    assert errors == []
    data = b"after the crowd"
    Ed25519PublicKey.from_public_bytes(signer.public_key.raw).verify(signer.sign(data), data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"object": "no-such-key"}, "no private key matches pkcs11:token=staycheck;object=no-such"),
        ({"token": "no-such-token"}, "no token matches pkcs11:token=no-such-token"),
    ],
)
def test_a_uri_that_names_nothing_says_so_without_the_pin(hsm: SoftHsm, change, message):
    name = change.get("object", "anything")
    uri = hsm.uri(name, pin="value")
    if "token" in change:
        uri = uri.replace(f"token={hsm.label}", f"token={change['token']}")
    with pytest.raises(ConfigurationError, match=message) as e:
        Pkcs11Signer(uri)
    assert hsm.pin not in str(e.value)


def test_the_module_path_must_be_a_module():
    with pytest.raises(ConfigurationError, match=r"module-path: no file /nonexistent/lib\.so"):
        Pkcs11Signer("pkcs11:object=k?module-path=/nonexistent/lib.so")


def test_pkcs11_tool_agrees_the_key_is_on_the_token(hsm: SoftHsm):
    """The listing of the token shows our key as sensitive and never extractable (what an
    auditor would run)."""
    name = label("audited")
    generate_key_pair(hsm.uri(name))
    listing = hsm.tool("--list-objects", "--type", "privkey").stdout
    block = listing.split(f"label:      {name}")[1].split("Private Key Object")[0]
    assert "sensitive" in block and "never extractable" in block
