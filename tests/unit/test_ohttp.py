"""Oblivious HTTP (staycheck.client.ohttp) against RFC 9458.

Expected bytes are copied from the RFCs, never from running this code: RFC 9458 Appendix A
("Complete Example of a Request and Response") and RFC 9180 Appendix A.1.1 (DeriveKeyPair
of DHKEM(X25519, HKDF-SHA256)). The other tests use fresh keys; each refusal is named after
the rule it checks and asserts the documented :class:`Reason`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from staycheck.client import bhttp
from staycheck.client.ohttp import (
    AEAD_AES_128_GCM,
    AEAD_AES_256_GCM,
    AEAD_CHACHA20_POLY1305,
    DEFAULT_SYMMETRIC,
    KDF_HKDF_SHA256,
    KDF_HKDF_SHA384,
    KEM_X25519_HKDF_SHA256,
    ClientContext,
    GatewayKey,
    GatewayKeys,
    KeyConfig,
    ObliviousError,
    Reason,
    SymmetricSuite,
    _header,
    _request_info,
    _response_key_nonce,
    decode_key_configs,
    encapsulate_request,
    encode_key_configs,
)
from staycheck.geo.errors import ConfigurationError, InvalidInputError


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 9458 Appendix A, in the order the appendix gives them.
GATEWAY_SECRET_KEY = unhex("3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a")
KEY_CONFIG = unhex("""
    01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e
    79815500080001000100010003
""")
REQUEST = unhex("00034745540568747470730b6578616d706c652e636f6d012f")
EPHEMERAL_SECRET_KEY = unhex("bc51d5e930bda26589890ac7032f70ad12e4ecb37abb1b65b1256c9c48999c73")
EPHEMERAL_PUBLIC_KEY = unhex("4b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472")
INFO = unhex("6d6573736167652f626874747020726571756573740001002000010001")
ENCAPSULATED_REQUEST = unhex("""
    010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad1
    9dec96c208b4726374e469135906992e1268c594d2a10c695d858c40a026e796
    5e7d86b83dd440b2c0185204b4d63525
""")
RESPONSE = unhex("0140c8")
EXPORTED_SECRET = unhex("62d87a6ba569ee81014c2641f52bea36")
SALT = unhex("""
    4b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472
    c789e7151fcba46158ca84b04464910d
""")
AEAD_KEY = unhex("5d0172a080e428b16d298c4ea0db620d")
AEAD_NONCE = unhex("f6bf1aeb88d6df87007fa263")
ENCAPSULATED_RESPONSE = unhex("""
    c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f
    857fbd
""")
RESPONSE_NONCE = SALT[32:]  # the salt is enc || response_nonce

# The key configuration lists HKDF-SHA256 with AES-128-GCM and with ChaCha20Poly1305.
RFC_SYMMETRIC = (
    SymmetricSuite(KDF_HKDF_SHA256, AEAD_AES_128_GCM),
    SymmetricSuite(KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305),
)
AES_128 = RFC_SYMMETRIC[0]


def rfc_gateway_key() -> GatewayKey:
    return GatewayKey.from_private_bytes(1, GATEWAY_SECRET_KEY, symmetric=RFC_SYMMETRIC)


def rfc_client() -> tuple[bytes, ClientContext]:
    config = KeyConfig.decode(KEY_CONFIG)
    return encapsulate_request(config, REQUEST, ephemeral_key=EPHEMERAL_SECRET_KEY)


def test_rfc9458_key_configuration_encodes_byte_for_byte() -> None:
    assert rfc_gateway_key().config.encode() == KEY_CONFIG


def test_rfc9458_key_configuration_decodes() -> None:
    config = KeyConfig.decode(KEY_CONFIG)
    assert config.key_id == 1
    assert config.kem_id == KEM_X25519_HKDF_SHA256
    assert config.public_key == KEY_CONFIG[3:35]
    assert config.symmetric == RFC_SYMMETRIC


def test_rfc9458_request_info() -> None:
    assert _request_info(_header(1, KEM_X25519_HKDF_SHA256, AES_128)) == INFO


def test_rfc9458_request_is_the_binary_request_for_example_com() -> None:
    assert bhttp.Request.decode(REQUEST) == bhttp.Request("GET", "https", "example.com", "/")


def test_rfc9458_encapsulated_request_byte_for_byte() -> None:
    enc_request, _ = rfc_client()
    assert enc_request == ENCAPSULATED_REQUEST
    assert enc_request[7:39] == EPHEMERAL_PUBLIC_KEY


def test_rfc9458_gateway_decapsulates_the_request() -> None:
    request, context = GatewayKeys([rfc_gateway_key()]).decapsulate_request(ENCAPSULATED_REQUEST)
    assert request == REQUEST
    assert context.key_id == 1
    assert context.suite == AES_128


def test_rfc9458_response_key_and_nonce() -> None:
    enc, response_nonce = SALT[:32], SALT[32:]
    assert _response_key_nonce(AES_128, EXPORTED_SECRET, enc, response_nonce) == (
        AEAD_KEY,
        AEAD_NONCE,
    )


def test_rfc9458_encapsulated_response_byte_for_byte() -> None:
    _, context = GatewayKeys([rfc_gateway_key()]).decapsulate_request(ENCAPSULATED_REQUEST)
    assert context.encapsulate_response(RESPONSE, response_nonce=RESPONSE_NONCE) == (
        ENCAPSULATED_RESPONSE
    )


def test_rfc9458_client_opens_the_response() -> None:
    _, client = rfc_client()
    assert client.decapsulate_response(ENCAPSULATED_RESPONSE) == RESPONSE
    assert bhttp.Response.decode(RESPONSE) == bhttp.Response(200)


def test_rfc9180_derive_key_pair_from_seed() -> None:
    # RFC 9180 Appendix A.1.1: ikmR, skRm and pkRm of DHKEM(X25519, HKDF-SHA256).
    ikm = unhex("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037")
    key = GatewayKey.from_seed(7, ikm)
    assert key.private_bytes() == unhex(
        "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8"
    )
    assert key.config.public_key == unhex(
        "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
    )


# --- fresh keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "suite",
    [
        SymmetricSuite(KDF_HKDF_SHA256, AEAD_AES_128_GCM),
        SymmetricSuite(KDF_HKDF_SHA256, AEAD_AES_256_GCM),
        SymmetricSuite(KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305),
        SymmetricSuite(KDF_HKDF_SHA384, AEAD_AES_256_GCM),
    ],
    ids=lambda s: f"kdf{s.kdf_id}-aead{s.aead_id}",
)
def test_round_trip_with_fresh_keys(suite: SymmetricSuite) -> None:
    key = GatewayKey.generate(3, symmetric=[suite])
    gateway = GatewayKeys([key])
    (config,) = decode_key_configs(gateway.encode_configs())
    request = bhttp.Request("POST", "https", "", "/v1/submit", content=b"itinerary").encode()
    enc_request, client = encapsulate_request(config, request)
    opened, context = gateway.decapsulate_request(enc_request)
    assert opened == request
    response = bhttp.Response(200, content=b"verdict").encode()
    assert client.decapsulate_response(context.encapsulate_response(response)) == response


def test_each_request_gets_a_fresh_ephemeral_key() -> None:
    config = GatewayKey.generate(1).config
    first, _ = encapsulate_request(config, REQUEST)
    second, _ = encapsulate_request(config, REQUEST)
    assert first[7:39] != second[7:39]


def test_rotation_both_key_ids_decrypt() -> None:
    old, new = GatewayKey.generate(1), GatewayKey.generate(2)
    gateway = GatewayKeys([new], retired=[old])
    assert gateway.configs == (new.config,)
    for key in (old, new):
        enc_request, _ = encapsulate_request(key.config, REQUEST)
        request, context = gateway.decapsulate_request(enc_request)
        assert request == REQUEST
        assert context.key_id == key.key_id


def test_rotation_publishes_only_the_published_keys() -> None:
    old, new, next_ = GatewayKey.generate(1), GatewayKey.generate(2), GatewayKey.generate(3)
    gateway = GatewayKeys([new, next_], retired=[old])
    assert decode_key_configs(gateway.encode_configs()) == (new.config, next_.config)


def refusal(call: Callable[[], object]) -> ObliviousError:
    with pytest.raises(ObliviousError) as caught:
        call()
    return caught.value


def fresh() -> tuple[GatewayKeys, bytes, ClientContext]:
    key = GatewayKey.generate(5, symmetric=RFC_SYMMETRIC)
    enc_request, client = encapsulate_request(key.config, REQUEST)
    return GatewayKeys([key]), enc_request, client


def with_header(enc_request: bytes, **fields: int) -> bytes:
    header = bytearray(enc_request[:7])
    offsets = {"key_id": (0, 1), "kem_id": (1, 2), "kdf_id": (3, 2), "aead_id": (5, 2)}
    for name, value in fields.items():
        at, size = offsets[name]
        header[at : at + size] = value.to_bytes(size, "big")
    return bytes(header) + enc_request[7:]


def test_tampered_ciphertext_is_decryption_failed() -> None:
    gateway, enc_request, _ = fresh()
    tampered = enc_request[:-1] + bytes([enc_request[-1] ^ 1])
    error = refusal(lambda: gateway.decapsulate_request(tampered))
    assert error.reason is Reason.DECRYPTION_FAILED
    assert error.field == "ciphertext"


def test_tampered_enc_is_decryption_failed() -> None:
    gateway, enc_request, _ = fresh()
    tampered = enc_request[:7] + bytes([enc_request[7] ^ 1]) + enc_request[8:]
    assert refusal(lambda: gateway.decapsulate_request(tampered)).reason is (
        Reason.DECRYPTION_FAILED
    )


def test_tampered_header_is_decryption_failed() -> None:
    # The header is in the HPKE info: a request re-labelled with another offered AEAD
    # (ChaCha20Poly1305 instead of AES-128-GCM) does not open.
    gateway, enc_request, _ = fresh()
    relabelled = with_header(enc_request, aead_id=AEAD_CHACHA20_POLY1305)
    assert refusal(lambda: gateway.decapsulate_request(relabelled)).reason is (
        Reason.DECRYPTION_FAILED
    )


def test_low_order_enc_is_decryption_failed() -> None:
    # An all-zero X25519 point makes a zero Diffie-Hellman result (RFC 7748 Section 6.1).
    gateway, enc_request, _ = fresh()
    forged = enc_request[:7] + bytes(32) + enc_request[39:]
    error = refusal(lambda: gateway.decapsulate_request(forged))
    assert error.reason is Reason.DECRYPTION_FAILED
    assert error.field == "enc"


def test_low_order_gateway_public_key_is_malformed() -> None:
    config = KeyConfig(1, KEM_X25519_HKDF_SHA256, bytes(32), DEFAULT_SYMMETRIC)
    error = refusal(lambda: encapsulate_request(config, REQUEST))
    assert error.reason is Reason.MALFORMED
    assert error.field == "public_key"


def test_wrong_key_id_is_unknown_key() -> None:
    gateway, enc_request, _ = fresh()
    error = refusal(lambda: gateway.decapsulate_request(with_header(enc_request, key_id=6)))
    assert error.reason is Reason.UNKNOWN_KEY
    assert error.field == "key_id"


@pytest.mark.parametrize(
    ("fields", "part"),
    [
        pytest.param({"kem_id": 0x0010}, "kem_id", id="unknown-kem-p256"),
        pytest.param({"kdf_id": 0x0004}, "kdf_id", id="unknown-kdf"),
        pytest.param({"aead_id": 0xFFFF}, "aead_id", id="export-only-aead"),
        pytest.param({"aead_id": 0x0004}, "aead_id", id="unknown-aead"),
        pytest.param({"aead_id": AEAD_AES_256_GCM}, "kdf_id, aead_id", id="aead-not-offered"),
    ],
)
def test_unknown_algorithms_are_unsupported_suite(fields: dict[str, int], part: str) -> None:
    gateway, enc_request, _ = fresh()
    error = refusal(lambda: gateway.decapsulate_request(with_header(enc_request, **fields)))
    assert error.reason is Reason.UNSUPPORTED_SUITE
    assert error.field == part


@pytest.mark.parametrize("length", [0, 6, 7, 38, 39 + 15])
def test_short_encapsulated_request_is_malformed(length: int) -> None:
    gateway, enc_request, _ = fresh()
    assert refusal(lambda: gateway.decapsulate_request(enc_request[:length])).reason is (
        Reason.MALFORMED
    )


def test_oversized_encapsulated_request_is_malformed() -> None:
    gateway, enc_request, _ = fresh()
    error = refusal(lambda: gateway.decapsulate_request(enc_request, max_size=20))
    assert error.reason is Reason.MALFORMED


def test_response_for_one_request_does_not_open_with_another() -> None:
    gateway, first_request, first_client = fresh()
    second_request, second_client = encapsulate_request(gateway.configs[0], REQUEST)
    _, first_context = gateway.decapsulate_request(first_request)
    _, second_context = gateway.decapsulate_request(second_request)
    first_response = first_context.encapsulate_response(RESPONSE)
    second_response = second_context.encapsulate_response(RESPONSE)
    assert first_client.decapsulate_response(first_response) == RESPONSE
    assert second_client.decapsulate_response(second_response) == RESPONSE
    for client, response in ((second_client, first_response), (first_client, second_response)):
        error = refusal(lambda: client.decapsulate_response(response))  # noqa: B023
        assert error.reason is Reason.DECRYPTION_FAILED


def test_tampered_response_is_decryption_failed() -> None:
    gateway, enc_request, client = fresh()
    _, context = gateway.decapsulate_request(enc_request)
    response = bytearray(context.encapsulate_response(RESPONSE))
    response[3] ^= 0x80  # inside the response nonce
    assert refusal(lambda: client.decapsulate_response(bytes(response))).reason is (
        Reason.DECRYPTION_FAILED
    )


def test_short_response_is_malformed() -> None:
    _, client = rfc_client()
    short = ENCAPSULATED_RESPONSE[: 16 + 15]
    assert refusal(lambda: client.decapsulate_response(short)).reason is Reason.MALFORMED


def test_response_nonce_of_the_wrong_length_is_refused() -> None:
    _, context = GatewayKeys([rfc_gateway_key()]).decapsulate_request(ENCAPSULATED_REQUEST)
    error = refusal(lambda: context.encapsulate_response(RESPONSE, response_nonce=bytes(12)))
    assert error.field == "response_nonce"


# --- key configurations --------------------------------------------------------------


def test_key_config_list_round_trips() -> None:
    configs = (rfc_gateway_key().config, GatewayKey.generate(9).config)
    assert decode_key_configs(encode_key_configs(configs)) == configs


def test_key_config_list_encoding_is_length_prefixed() -> None:
    # RFC 9458 Section 3.2: each configuration prefixed with its 2-byte length.
    assert encode_key_configs([KeyConfig.decode(KEY_CONFIG)]) == b"\x00\x2d" + KEY_CONFIG


def test_key_config_list_skips_configs_of_another_kem() -> None:
    other_kem = b"\x02\x00\x10" + bytes(65) + b"\x00\x04\x00\x01\x00\x01"  # P-256, 65 bytes
    body = len(other_kem).to_bytes(2, "big") + other_kem + b"\x00\x2d" + KEY_CONFIG
    assert decode_key_configs(body) == (KeyConfig.decode(KEY_CONFIG),)


def test_key_config_list_of_only_other_kems_is_unsupported_suite() -> None:
    other_kem = b"\x02\x00\x10" + bytes(65) + b"\x00\x04\x00\x01\x00\x01"
    body = len(other_kem).to_bytes(2, "big") + other_kem
    assert refusal(lambda: decode_key_configs(body)).reason is Reason.UNSUPPORTED_SUITE


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty-list"),
        pytest.param(b"\x00", id="length-truncated"),
        pytest.param(b"\x00\x2e" + KEY_CONFIG, id="config-truncated"),
        pytest.param(b"\x00\x2c" + KEY_CONFIG[:-1], id="symmetric-length-mismatch"),
        pytest.param(b"\x00\x2d" + KEY_CONFIG + b"\x00", id="trailing-byte"),
        pytest.param(b"\x00\x2e" + KEY_CONFIG + b"\x00", id="trailing-byte-inside-config"),
    ],
)
def test_badly_encoded_key_config_list_is_refused_whole(body: bytes) -> None:
    # RFC 9458 Section 3.2: clients MUST discard incorrectly encoded collections.
    assert refusal(lambda: decode_key_configs(body)).reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(KEY_CONFIG[:35] + b"\x00\x00", id="no-symmetric-algorithms"),
        pytest.param(KEY_CONFIG[:35] + b"\x00\x06" + KEY_CONFIG[37:43], id="length-not-4n"),
        pytest.param(KEY_CONFIG[:20], id="public-key-truncated"),
    ],
)
def test_malformed_key_config_is_refused(data: bytes) -> None:
    assert refusal(lambda: KeyConfig.decode(data)).reason is Reason.MALFORMED


def test_config_without_a_pair_we_implement_is_unsupported_suite() -> None:
    config = KeyConfig(1, KEM_X25519_HKDF_SHA256, bytes(range(32)), (SymmetricSuite(9, 9),))
    error = refusal(lambda: encapsulate_request(config, REQUEST))
    assert error.reason is Reason.UNSUPPORTED_SUITE


def test_client_cannot_pick_a_pair_the_gateway_does_not_offer() -> None:
    config = KeyConfig.decode(KEY_CONFIG)
    chosen = SymmetricSuite(KDF_HKDF_SHA256, AEAD_AES_256_GCM)
    error = refusal(lambda: encapsulate_request(config, REQUEST, suite=chosen))
    assert error.reason is Reason.UNSUPPORTED_SUITE


def test_client_may_pick_another_offered_pair() -> None:
    chacha = RFC_SYMMETRIC[1]
    enc_request, client = encapsulate_request(KeyConfig.decode(KEY_CONFIG), REQUEST, suite=chacha)
    assert enc_request[3:7] == b"\x00\x01\x00\x03"
    request, context = GatewayKeys([rfc_gateway_key()]).decapsulate_request(enc_request)
    assert request == REQUEST
    assert client.decapsulate_response(context.encapsulate_response(RESPONSE)) == RESPONSE


# --- gateway keys ---------------------------------------------------------------------


def test_the_same_seed_gives_the_same_key() -> None:
    seed = bytes(range(32))
    assert GatewayKey.from_seed(1, seed).config == GatewayKey.from_seed(1, seed).config
    assert GatewayKey.from_seed(1, seed).config != GatewayKey.from_seed(1, bytes(32)).config


def test_seed_must_be_32_bytes() -> None:
    assert refusal(lambda: GatewayKey.from_seed(1, bytes(31))).field == "seed"


def test_stored_private_bytes_give_the_same_key() -> None:
    key = GatewayKey.generate(4)
    assert GatewayKey.from_private_bytes(4, key.private_bytes()).config == key.config


def test_repr_hides_the_private_key() -> None:
    key = GatewayKey.from_private_bytes(1, GATEWAY_SECRET_KEY)
    assert GATEWAY_SECRET_KEY.hex() not in repr(key)
    assert "key_id=1" in repr(key)


def test_default_offer_is_hkdf_sha256_with_aes_128_gcm() -> None:
    assert GatewayKey.generate(1).symmetric == DEFAULT_SYMMETRIC == (AES_128,)


def test_gateway_key_refuses_a_pair_we_do_not_implement() -> None:
    error = refusal(lambda: GatewayKey.generate(1, symmetric=[SymmetricSuite(1, 0xFFFF)]))
    assert error.reason is Reason.UNSUPPORTED_SUITE


def test_key_id_must_fit_one_byte() -> None:
    assert refusal(lambda: GatewayKey.generate(256)).field == "key_id"


def test_duplicate_key_ids_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="key id 1 used twice"):
        GatewayKeys([GatewayKey.generate(1)], retired=[GatewayKey.generate(1)])


def test_gateway_needs_a_published_key() -> None:
    with pytest.raises(ConfigurationError, match="no published key"):
        GatewayKeys([], retired=[GatewayKey.generate(1)])


def test_error_is_a_value_error_and_an_input_error() -> None:
    error = refusal(lambda: KeyConfig.decode(b""))
    assert isinstance(error, ValueError)
    assert isinstance(error, InvalidInputError)
    assert str(error).startswith("key_config: ")
