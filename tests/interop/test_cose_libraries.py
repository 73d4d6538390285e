"""Interoperability: libraries that are not ours read and write verdict tokens and key sets.

- pycose 1.1.0 (github.com/TimothyClaeys/pycose): a COSE implementation (RFC 9052/9053) in
  Python. It decodes and verifies our tokens, and it makes tokens to our documented format
  that our verifier must accept.
- jwcrypto 1.6.1 (github.com/latchset/jwcrypto): a JOSE implementation (RFC 7515-7518,
  RFC 8037). It reads our JWKS output and generates the JWKs of the issuers whose tokens
  pycose makes.

Nothing is mocked: real keys, real signatures, our real ``TokenSigner``, ``KeySet`` and
``verify_token``. Both libraries do their arithmetic with pyca/cryptography, as we do, so
what this checks is the framing (COSE_Sign1, the Sig_structure, header labels and their
encoding, tags), the CWT claims and the key formats (JWK, PEM, our kid), not Ed25519 or
ECDSA themselves (Wycheproof's vectors check those, tests/unit/test_keys.py).

The format, from ``staycheck.trust.verdict``: a tagged COSE_Sign1, protected header
``{1: alg, 4: kid}`` in deterministic CBOR, empty unprotected header, the claims map
deterministic too; the text form ``SC1:`` + base45. The kid is the hex of the first 8
bytes of SHA-256 of the raw public key.

Findings the tests below pin down:

- pycose 1.1.0's ``Sign1Message.decode`` reads no tagged COSE message at all with cbor2 6
  (the version our ``cbor2>=5.6`` resolves to): cbor2 6 decodes the contents of a tag as a
  tuple, and pycose insists on a list (TimothyClaeys/pycose#141, open). The tests hand
  pycose the decoded array instead (:func:`pycose_decode`, through pycose's own
  ``from_cose_obj``); everything after that, headers, Sig_structure, verification, is
  pycose's.
- pycose encodes the protected header in the order of the dict it is given. With ``alg``
  first (``{Algorithm: ..., KID: ...}``) its bytes are the deterministic ones and we accept
  the token; with ``kid`` first the token is a valid COSE_Sign1 that pycose verifies, and
  our verifier refuses it as malformed (not deterministic CBOR). A token maker using
  pycose must put ``alg`` first.
- A kid in the unprotected header (common in COSE, allowed by EU DCC) is refused too.
- jwcrypto's own key id (the RFC 7638 thumbprint) is not our kid; a JWK carrying it is
  refused by ``KeySet.from_jwks``: issuers must set our kid explicitly.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwcrypto.jwk import JWK, JWKSet
from pycose.algorithms import EdDSA, Es256
from pycose.headers import KID, Algorithm
from pycose.keys import CoseKey, EC2Key, OKPKey
from pycose.keys.curves import P256, Ed25519
from pycose.messages import Sign1Message
from staycheck.geo.errors import ConfigurationError, MalformedError, SignedDataError
from staycheck.geo.itinerary import Status
from staycheck.trust.base45 import b45decode, b45encode
from staycheck.trust.binding import BindingParameters, compute_binding
from staycheck.trust.keys import Ed25519Signer, KeySet, P256Signer, VerdictKeySet
from staycheck.trust.presentation import present, read_presentation
from staycheck.trust.verdict import TokenSigner, Verdict, issue_verdict
from staycheck.trust.verifier import NO_BINDING_CHECK, SubjectId, reason, verify_token

from tests.helpers import DAY, NOW

ISSUER = "110000"
VERSION = 7
IAT = NOW - NOW % 300  # verdict.py: iat rounded down to 5 minutes
EXP = IAT + DAY
CTI = bytes(range(16))
SALT = bytes(range(0x30, 0x40))
ID_NUMBER = "11010519491231002X"
FAST = BindingParameters(memory_kib=19 * 1024, iterations=2, lanes=1)  # cheapest valid


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def our_kid(raw_public_key: bytes) -> bytes:
    """keys.py: the first 8 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public_key).digest()[:8]


def cose_bytes(token: str) -> bytes:
    assert token.startswith("SC1:")
    return b45decode(token[len("SC1:") :])


def documented_claims(
    *, binding: bytes | None = None, params: BindingParameters | None = None
) -> dict[int, Any]:
    """The claims map verdict.py documents: iss, exp, iat, cti and StayCheck's (-65537)."""
    sc: dict[int, Any] = {1: int(Status.REVIEW_REQUIRED), 2: VERSION}
    if binding is not None and params is not None:
        sc |= {3: binding, 4: [params.memory_kib, params.iterations, params.lanes]}
    return {1: ISSUER, 4: EXP, 6: IAT, 7: CTI, -65537: sc}


def our_verdict(*, bound: bool) -> Verdict:
    binding = compute_binding(ID_NUMBER, SALT, FAST) if bound else b""
    v = issue_verdict(
        Status.REVIEW_REQUIRED,
        now=NOW,
        issuer=ISSUER,
        riskset_version=VERSION,
        bundle_expires_at=NOW + 2 * DAY,
        binding=binding,
        binding_params=FAST if bound else None,
    )
    return replace(v, verdict_id=CTI)


def jwcrypto_ed25519() -> tuple[JWK, dict[str, Any]]:
    """An Ed25519 key jwcrypto generated, and its public JWK as our key set holds it: with
    our kid convention and ``alg``."""
    jwk = JWK.generate(kty="OKP", crv="Ed25519")
    public = jwk.export_public(as_dict=True)
    kid = our_kid(b64url_decode(public["x"]))
    return jwk, {**public, "kid": kid.hex(), "alg": "EdDSA", "use": "sig"}


def jwcrypto_p256() -> tuple[JWK, dict[str, Any]]:
    jwk = JWK.generate(kty="EC", crv="P-256")
    public = jwk.export_public(as_dict=True)
    point = b"\x04" + b64url_decode(public["x"]) + b64url_decode(public["y"])
    return jwk, {**public, "kid": our_kid(point).hex(), "alg": "ES256", "use": "sig"}


def pycose_okp_private(jwk: JWK) -> OKPKey:
    private = jwk.export_private(as_dict=True)
    return OKPKey(crv=Ed25519, x=b64url_decode(private["x"]), d=b64url_decode(private["d"]))


def pycose_ec2_private(jwk: JWK) -> EC2Key:
    private = jwk.export_private(as_dict=True)
    return EC2Key(
        crv=P256,
        x=b64url_decode(private["x"]),
        y=b64url_decode(private["y"]),
        d=b64url_decode(private["d"]),
    )


def key_set(*jwks: dict[str, Any]) -> VerdictKeySet:
    return VerdictKeySet(KeySet.from_jwks({"issuer": ISSUER, "keys": list(jwks)}))


def pycose_decode(data: bytes) -> Sign1Message:
    """``Sign1Message.decode``, or, where cbor2 gives the tag's array as a tuple (cbor2 6,
    pycose#141), the same through pycose's ``from_cose_obj`` with a list and a dict."""
    tagged = cbor2.loads(data)
    assert isinstance(tagged, cbor2.CBORTag) and tagged.tag == 18
    if isinstance(tagged.value, list):
        return Sign1Message.decode(data)
    protected, unprotected, payload, signature = tagged.value
    msg = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)
    assert isinstance(msg, Sign1Message)
    return msg


def refusal(token: str, keys: VerdictKeySet) -> SignedDataError:
    with pytest.raises(SignedDataError) as info:
        verify_token(token, keys, now=NOW, identity=NO_BINDING_CHECK)
    return info.value


# --- pycose reads what we make ------------------------------------------------------------


def test_pycose_verifies_our_token_with_the_key_jwcrypto_reads_from_our_jwks():
    signer = Ed25519Signer.generate()
    verdict = our_verdict(bound=True)
    token = TokenSigner(signer).sign(verdict)
    jwks_text = KeySet([signer.public_key], issuer=ISSUER).to_json()

    jwk = JWKSet.from_json(jwks_text).get_key(signer.kid.hex())
    assert jwk is not None and jwk.export_public(as_dict=True)["crv"] == "Ed25519"
    # Through PEM: jwcrypto writes SubjectPublicKeyInfo, pycose reads it.
    key = CoseKey.from_pem_public_key(jwk.export_to_pem().decode("ascii"))

    msg = pycose_decode(cose_bytes(token))
    assert msg.phdr == {Algorithm: EdDSA, KID: signer.kid}
    assert msg.uhdr == {}
    msg.key = key
    assert msg.verify_signature()
    assert cbor2.loads(msg.payload) == documented_claims(binding=verdict.binding, params=FAST)
    # pycose agrees that the claims map is in its deterministic encoding.
    assert msg.payload == cbor2.dumps(cbor2.loads(msg.payload), canonical=True)

    # And it refuses a token altered by one bit, so the check above can fail.
    data = bytearray(cose_bytes(token))
    data[-1] ^= 0x01
    forged = pycose_decode(bytes(data))
    forged.key = key
    assert not forged.verify_signature()


def test_pycose_verifies_our_es256_token_with_the_key_from_our_jwks():
    signer = P256Signer.generate()
    token = TokenSigner(signer).sign(our_verdict(bound=False))
    jwk = JWKSet.from_json(KeySet([signer.public_key]).to_json()).get_key(signer.kid.hex())
    assert jwk is not None
    public = jwk.export_public(as_dict=True)
    key = EC2Key(crv=P256, x=b64url_decode(public["x"]), y=b64url_decode(public["y"]))

    msg = pycose_decode(cose_bytes(token))
    assert msg.phdr == {Algorithm: Es256, KID: signer.kid}
    msg.key = key
    assert msg.verify_signature()
    assert cbor2.loads(msg.payload) == documented_claims()


# --- we read what pycose makes ------------------------------------------------------------


def pycose_token(
    private: OKPKey | EC2Key,
    phdr: dict[Any, Any],
    claims: dict[int, Any],
    *,
    uhdr: dict[Any, Any] | None = None,
) -> tuple[str, Sign1Message]:
    """A tagged COSE_Sign1 made and signed by pycose, claims encoded deterministically."""
    msg = Sign1Message(phdr=phdr, uhdr=uhdr or {}, payload=cbor2.dumps(claims, canonical=True))
    msg.key = private
    data = msg.encode()  # tag 18 by default
    return "SC1:" + b45encode(data), pycose_decode(data)


def test_we_accept_a_pycose_token_signed_with_a_jwcrypto_key():
    jwk, public = jwcrypto_ed25519()
    kid = bytes.fromhex(public["kid"])
    token, _ = pycose_token(
        pycose_okp_private(jwk), {Algorithm: EdDSA, KID: kid}, documented_claims()
    )

    verdict = verify_token(token, key_set(public), now=NOW, identity=NO_BINDING_CHECK)
    assert (verdict.status, verdict.issuer, verdict.riskset_version) == (
        Status.REVIEW_REQUIRED,
        ISSUER,
        VERSION,
    )
    assert (verdict.issued_at, verdict.expires_at, verdict.verdict_id) == (IAT, EXP, CTI)
    assert not verdict.binding

    # Ed25519 is deterministic: our signer, given the same key and verdict, makes the very
    # same bytes, so pycose and we agree on every byte of the format.
    seed = b64url_decode(jwk.export_private(as_dict=True)["d"])
    ours = TokenSigner(Ed25519Signer(Ed25519PrivateKey.from_private_bytes(seed)))
    assert ours.sign(our_verdict(bound=False)) == token


def test_we_accept_a_bound_pycose_token_and_check_its_bearer():
    jwk, public = jwcrypto_ed25519()
    binding = compute_binding(ID_NUMBER, SALT, FAST)
    token, _ = pycose_token(
        pycose_okp_private(jwk),
        {Algorithm: EdDSA, KID: bytes.fromhex(public["kid"])},
        documented_claims(binding=binding, params=FAST),
    )
    p = read_presentation(present(token, SALT))
    keys = key_set(public)
    verdict = verify_token(p.token, keys, now=NOW, identity=SubjectId(ID_NUMBER, p.salt))
    assert verdict.binding == binding and verdict.binding_params == FAST
    with pytest.raises(SignedDataError) as info:
        verify_token(p.token, keys, now=NOW, identity=SubjectId("110105194912310037", p.salt))
    assert reason(info.value) == "binding mismatch"


def test_we_accept_an_es256_issuer_with_a_jwcrypto_p256_key():
    jwk, public = jwcrypto_p256()
    token, _ = pycose_token(
        pycose_ec2_private(jwk),
        {Algorithm: Es256, KID: bytes.fromhex(public["kid"])},
        documented_claims(),
    )
    verdict = verify_token(token, key_set(public), now=NOW, identity=NO_BINDING_CHECK)
    assert (verdict.issuer, verdict.issued_at) == (ISSUER, IAT)


def test_an_es256_token_under_the_kid_of_an_ed25519_key_is_refused():
    """pycose signs ES256 with a P-256 key, naming the kid of the Ed25519 key our set
    holds: the header's alg is not that key's, so the signature is not even tried."""
    _, ed_public = jwcrypto_ed25519()
    p256, _ = jwcrypto_p256()
    token, msg = pycose_token(
        pycose_ec2_private(p256),
        {Algorithm: Es256, KID: bytes.fromhex(ed_public["kid"])},
        documented_claims(),
    )
    msg.key = pycose_ec2_private(p256)
    assert msg.verify_signature()  # a valid ES256 token, for whoever holds the P-256 key
    assert reason(refusal(token, key_set(ed_public))) == "bad signature"


def test_an_ed25519_signature_under_an_es256_header_is_refused():
    """The right key's right signature, but a header that names ES256: the key decides the
    algorithm, and a header naming another is refused, not obeyed. pycose will not sign
    so (it checks the key type against the alg), so its Sig_structure is signed here."""
    jwk, public = jwcrypto_ed25519()
    kid = bytes.fromhex(public["kid"])
    msg = Sign1Message(phdr={Algorithm: Es256, KID: kid}, payload=cbor2.dumps(documented_claims()))
    to_be_signed = cbor2.dumps(["Signature1", msg.phdr_encoded, b"", msg.payload])
    msg.signature = jwk.get_op_key("sign").sign(to_be_signed)
    token = "SC1:" + b45encode(msg.encode(sign=False))
    assert reason(refusal(token, key_set(public))) == "bad signature"

    # The same signature under the EdDSA header is accepted: only the alg differs.
    msg_ok = Sign1Message(phdr={Algorithm: EdDSA, KID: kid}, payload=msg.payload)
    msg_ok.signature = jwk.get_op_key("sign").sign(
        cbor2.dumps(["Signature1", msg_ok.phdr_encoded, b"", msg_ok.payload])
    )
    token_ok = "SC1:" + b45encode(msg_ok.encode(sign=False))
    verify_token(token_ok, key_set(public), now=NOW, identity=NO_BINDING_CHECK)


# --- what a pycose user must know ---------------------------------------------------------


def test_pycose_decode_cannot_read_a_tagged_message_under_cbor2_6():
    """Why :func:`pycose_decode` exists (pycose#141). When this fails, pycose or cbor2 has
    changed: decode directly again."""
    token = TokenSigner(Ed25519Signer.generate()).sign(our_verdict(bound=False))
    data = cose_bytes(token)
    if not isinstance(cbor2.loads(data).value, tuple):
        pytest.skip("this cbor2 decodes a tag's array as a list")
    with pytest.raises(TypeError, match="cannot be decoded as COSE message"):
        Sign1Message.decode(data)


def test_pycose_encodes_the_header_in_dict_order_and_kid_first_is_refused():
    """Finding: pycose encodes the protected header in the order of the dict it is given.
    kid before alg is a valid COSE_Sign1 (RFC 9052 asks for no particular order), pycose
    verifies it, and we refuse it: our format allows the deterministic encoding only."""
    jwk, public = jwcrypto_ed25519()
    kid = bytes.fromhex(public["kid"])
    private = pycose_okp_private(jwk)

    token, msg = pycose_token(private, {KID: kid, Algorithm: EdDSA}, documented_claims())
    assert msg.phdr_encoded == cbor2.dumps({4: kid, 1: -8})  # as given, kid first
    assert msg.phdr_encoded != cbor2.dumps({4: kid, 1: -8}, canonical=True)
    msg.key = private
    assert msg.verify_signature()
    error = refusal(token, key_set(public))
    assert isinstance(error, MalformedError) and reason(error) == "malformed"
    assert "deterministic" in str(error)

    # alg first: the deterministic bytes, accepted.
    token, msg = pycose_token(private, {Algorithm: EdDSA, KID: kid}, documented_claims())
    assert msg.phdr_encoded == cbor2.dumps({1: -8, 4: kid}, canonical=True)
    verify_token(token, key_set(public), now=NOW, identity=NO_BINDING_CHECK)


def test_a_pycose_token_with_the_kid_unprotected_is_refused():
    """Finding: COSE (and EU DCC) allow the kid in the unprotected header; our format has
    an empty unprotected header and the kid under the signature."""
    jwk, public = jwcrypto_ed25519()
    private = pycose_okp_private(jwk)
    token, msg = pycose_token(
        private, {Algorithm: EdDSA}, documented_claims(), uhdr={KID: bytes.fromhex(public["kid"])}
    )
    msg.key = private
    assert msg.verify_signature()
    assert reason(refusal(token, key_set(public))) == "malformed"


def test_a_non_deterministic_claims_map_from_pycose_is_refused():
    """The payload is the token maker's: encoded without canonical=True, a map built in
    another order is not deterministic, and we refuse it, whoever signed it."""
    jwk, public = jwcrypto_ed25519()
    private = pycose_okp_private(jwk)
    claims = documented_claims()
    reordered = {-65537: claims[-65537], **{k: v for k, v in claims.items() if k != -65537}}
    msg = Sign1Message(
        phdr={Algorithm: EdDSA, KID: bytes.fromhex(public["kid"])},
        payload=cbor2.dumps(reordered),
    )
    msg.key = private
    token = "SC1:" + b45encode(msg.encode())
    assert reason(refusal(token, key_set(public))) == "malformed"


def test_jwcryptos_thumbprint_is_not_our_kid():
    """Finding: a JOSE tool's usual key id, the RFC 7638 thumbprint, is not our kid (8 bytes
    of SHA-256 of the raw key, in hex); a JWK carrying it is refused, so an issuer must set
    our kid explicitly."""
    jwk, public = jwcrypto_ed25519()
    thumbprint = jwk.thumbprint()
    assert thumbprint != public["kid"]
    with pytest.raises(ConfigurationError, match="kid does not match"):
        KeySet.from_jwks({"keys": [{**public, "kid": thumbprint}]})
    # Without a kid, the key set computes ours.
    (key,) = KeySet.from_jwks({"keys": [{k: v for k, v in public.items() if k != "kid"}]})
    assert key.kid.hex() == public["kid"]
