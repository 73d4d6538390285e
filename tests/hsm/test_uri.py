"""RFC 7512 PKCS#11 URIs and the encodings a token hands back (staycheck.server.pkcs11).

Rules (RFC 7512 section 2.3, issue 12): path attributes before ``?`` separated by ``;``,
query attributes after it separated by ``&``; values percent-decoded (``id`` is bytes); an
attribute given twice is refused; ``pin-value`` is accepted but never shown: not in
``str()``, ``repr()`` or any error. Errors name the attribute, never the value.
``CKA_EC_POINT`` of an Ed25519 key is a DER OCTET STRING of the 32 raw bytes; ``CKM_ECDSA``
answers r || s, which COSE wants; a DER signature is converted. No token is needed here.
"""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from staycheck.geo.errors import ConfigurationError
from staycheck.server.config import build_config, effective
from staycheck.server.pkcs11 import Pkcs11Uri, public_key_from_token, raw_ecdsa_signature
from staycheck.trust.cose import ALG_EDDSA, ALG_ES256

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SECRET = "s3cr%20t-PIN-4711"  # percent-encoded in the URI: the PIN is "s3cr t-PIN-4711"


def test_the_issues_example_parses():
    uri = Pkcs11Uri.parse(
        "pkcs11:token=staycheck;object=verdict-2026-12"
        f"?module-path={MODULE}&pin-source=file:/run/secrets/pin"
    )
    assert (uri.token, uri.object, uri.module_path) == ("staycheck", "verdict-2026-12", MODULE)
    assert uri.pin_source == "file:/run/secrets/pin" and uri.pin_value is None


def test_values_are_percent_decoded_and_id_is_bytes():
    uri = Pkcs11Uri.parse(
        f"pkcs11:token=Stay%20Check;object=a%3Bb;id=%01%FE;serial=42;slot-id=7"
        f"?module-path={MODULE}&pin-value={SECRET}"
    )
    assert uri.token == "Stay Check" and uri.object == "a;b" and uri.id == b"\x01\xfe"
    assert uri.serial == "42" and uri.slot_id == 7
    assert uri.read_pin() == "s3cr t-PIN-4711"
    # Printed back encoded, so that it parses to the same URI (without the PIN).
    again = Pkcs11Uri.parse(str(uri))
    assert again == uri and again.pin_value is None


def test_pin_value_is_never_shown():
    uri = Pkcs11Uri.parse(f"pkcs11:object=k?module-path={MODULE}&pin-value={SECRET}")
    for shown in (str(uri), repr(uri), f"{uri}", f"{uri!r}", str([uri]), str({"u": uri})):
        assert "s3cr" not in shown and "4711" not in shown
    assert "pin-value=<hidden>" in repr(uri) and "pin-value" not in str(uri)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("token=x;object=k", "must start with pkcs11:"),
        ("pkcs11:object=k", "module-path: required"),
        ("pkcs11:object=k?module-path=lib.so", "module-path: must be an absolute path"),
        ("pkcs11:token=a;token=b;object=k?module-path=/m.so", "token: given twice"),
        ("pkcs11:object=k;colour=red?module-path=/m.so", "colour: not a path"),
        ("pkcs11:object=k;module-path=/m.so", "module-path: not a path (before ?) attribute"),
        ("pkcs11:object=k?module-path=/m.so&pin-value=1&pin-source=/p", "give one, not both"),
        ("pkcs11:object=k?module-path=/m.so&module-name=softhsm2", "module-name: not supported"),
        ("pkcs11:token=t?module-path=/m.so", "object or id: required"),
        ("pkcs11:object=k%zz?module-path=/m.so", "object: a character that must be percent"),
        ("pkcs11:object=a b?module-path=/m.so", "object: a character that must be percent"),
        ("pkcs11:object=k;type=cert?module-path=/m.so", "type: must be private or public"),
        ("pkcs11:object=k;slot-id=one?module-path=/m.so", "slot-id: must be a decimal"),
        ("pkcs11:object=k;id=?module-path=/m.so", "id: must not be empty"),
        ("pkcs11:object=k?module-path=/m.so&pin-source=|/bin/cat", "only a file is supported"),
        ("pkcs11:object=k;novalue?module-path=/m.so", "each attribute is NAME=VALUE"),
        ("pkcs11:object=%FF?module-path=/m.so", "object: not UTF-8"),
    ],
)
def test_a_bad_uri_is_refused_naming_the_attribute(text, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Pkcs11Uri.parse(text)


def test_an_error_about_the_pin_does_not_quote_it():
    with pytest.raises(ConfigurationError) as e:
        Pkcs11Uri.parse(f"pkcs11:object=k?module-path={MODULE}&pin-value={SECRET}%zz")
    assert "pin-value" in str(e.value) and "s3cr" not in str(e.value)


def test_vendor_attributes_are_left_alone():
    uri = Pkcs11Uri.parse(f"pkcs11:object=k;x-vendor=1?module-path={MODULE}&x-other=2")
    assert uri.object == "k"


def test_the_pin_file_is_read_at_login_without_its_newline(tmp_path):
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    for source in (f"file:{pin}", f"file://{pin}", str(pin)):
        uri = Pkcs11Uri.parse(f"pkcs11:object=k?module-path={MODULE}&pin-source={source}")
        assert uri.read_pin() == "1234"
    pin.write_text("")
    with pytest.raises(ConfigurationError, match="is empty"):
        Pkcs11Uri.parse(f"pkcs11:object=k?module-path={MODULE}&pin-source={pin}").read_pin()
    missing = Pkcs11Uri.parse(f"pkcs11:object=k?module-path={MODULE}&pin-source={tmp_path}/none")
    with pytest.raises(ConfigurationError, match=r"pin-source: cannot read .*none"):
        missing.read_pin()


def test_the_configuration_shows_the_verdict_key_without_its_pin(tmp_path):
    flags = {
        "listen": "127.0.0.1:0",
        "repository": str(tmp_path / "repository"),
        "trusted_root": str(tmp_path / "root.json"),
        "state_dir": str(tmp_path / "s"),
        "issuer": "110000",
        "verdict_key": f"pkcs11:object=k?module-path={MODULE}&pin-value={SECRET}",
    }
    config = build_config(flags=flags)
    shown = effective(config)["verdict_key"]
    assert shown == f"pkcs11:object=k?module-path={MODULE}"
    assert "s3cr" not in repr(config)
    with pytest.raises(ConfigurationError, match="verdict_key: pkcs11 URI: module-path"):
        build_config(flags={**flags, "verdict_key": "pkcs11:object=k"})


# --- what a token hands back ---------------------------------------------------------------


def test_an_ed25519_ec_point_is_an_octet_string_of_the_raw_key():
    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for params in (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519"):
        pk = public_key_from_token(0x40, params, b"\x04\x20" + raw)
        assert pk.raw == raw and pk.alg == ALG_EDDSA
    assert public_key_from_token(0x40, bytes.fromhex("06032b6570"), raw).raw == raw  # bare
    with pytest.raises(ConfigurationError, match="other than Ed25519"):
        public_key_from_token(0x40, bytes.fromhex("06032b6571"), b"\x04\x39" + bytes(57))
    with pytest.raises(ConfigurationError, match="not a DER OCTET STRING"):
        public_key_from_token(0x40, bytes.fromhex("06032b6570"), b"\x04\x21" + raw)


def test_a_p256_ec_point_is_an_octet_string_of_the_uncompressed_point():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    pk = public_key_from_token(0x3, bytes.fromhex("06082a8648ce3d030107"), b"\x04\x41" + point)
    assert pk.raw == point and pk.alg == ALG_ES256
    with pytest.raises(ConfigurationError, match="other than P-256"):
        public_key_from_token(0x3, bytes.fromhex("06052b81040022"), b"\x04\x41" + point)


def test_a_der_ecdsa_signature_becomes_r_and_s_of_32_bytes_each():
    r, s = 0x1234, (1 << 255) + 5
    assert raw_ecdsa_signature(encode_dss_signature(r, s)) == r.to_bytes(32, "big") + s.to_bytes(
        32, "big"
    )
    already = bytes(range(64))
    assert raw_ecdsa_signature(already) == already
    with pytest.raises(ValueError):
        raw_ecdsa_signature(b"\x30\x02\x01")


def test_an_unencoded_ampersand_in_a_pin_value_does_not_show_the_pin():
    """``pin-value=s3cr&et=99`` splits the PIN into a "query attribute" named ``et``: the
    error must name neither part."""
    import pytest
    from staycheck.geo.errors import ConfigurationError
    from staycheck.server.pkcs11 import Pkcs11Uri

    with pytest.raises(ConfigurationError) as info:
        Pkcs11Uri.parse("pkcs11:token=t;object=o?module-path=/usr/lib/x.so&pin-value=s3cr&et=99")
    assert "s3cr" not in str(info.value) and "et" not in str(info.value).split(":")[-1].split()[0]
