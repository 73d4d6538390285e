"""Oblivious HTTP (RFC 9458): key configurations and the encapsulation of one request and
its response, for both the client and the gateway.

What this module does:

- :class:`KeyConfig`: one key configuration (Section 3.1), and :func:`encode_key_configs`
  / :func:`decode_key_configs` for the ``application/ohttp-keys`` list (Section 3.2).
- The client: :func:`encapsulate_request` (Section 4.3) returns the Encapsulated Request
  and a :class:`ClientContext`, whose :meth:`~ClientContext.decapsulate_response`
  opens the gateway's Encapsulated Response (Section 4.4).
- The gateway: :class:`GatewayKey` (an X25519 key with its id and allowed algorithms,
  made from the OS RNG, a 32-byte seed or stored private bytes) and :class:`GatewayKeys`,
  which publishes some keys and still decrypts with retired ones during a rotation.
  :meth:`GatewayKeys.decapsulate_request` returns the request and a
  :class:`ResponseContext`, whose :meth:`~ResponseContext.encapsulate_response` seals
  the answer.
- One error, :class:`ObliviousError`, with a :class:`Reason` the gateway maps to its
  unencrypted 4xx answer (Section 5.2).

HPKE (RFC 9180, base mode) is pyhpke's: its sender and recipient contexts, their
``export()``, and its DHKEM(X25519, HKDF-SHA256). The response keys use cryptography's
HMAC (HKDF-Extract, RFC 5869 Section 2.2), HKDF-Expand and AEADs (docs/adr/0012).

What it deliberately does not do: HTTP (relays, media-type headers, problem documents),
Binary HTTP (:mod:`staycheck.client.bhttp`), storing keys, clocks or replay protection
(RFC 9458 Section 6.5), or any KEM but DHKEM(X25519, HKDF-SHA256). Randomness comes from
the OS (through pyhpke and :func:`os.urandom`); the ``ephemeral_key`` and
``response_nonce`` parameters exist only to reproduce the RFC's worked example.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyhpke import (
    AEADId,
    CipherSuite,
    ContextInterface,
    KDFId,
    KEMId,
    KEMKey,
    KEMKeyInterface,
    KEMKeyPair,
    OpenError,
    PyHPKEError,
)
from staycheck.client.bhttp import MAX_MESSAGE_BYTES
from staycheck.geo.errors import ConfigurationError, InvalidInputError

KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
KDF_HKDF_SHA384 = 0x0002
KDF_HKDF_SHA512 = 0x0003
AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0003

REQUEST_INFO_LABEL = b"message/bhttp request"
"""The start of the HPKE ``info`` of a request (RFC 9458 Section 4.3)."""
RESPONSE_EXPORT_LABEL = b"message/bhttp response"
"""The ``exporter_context`` of the response secret (RFC 9458 Section 4.4)."""
KEYS_MEDIA_TYPE = "application/ohttp-keys"
REQUEST_MEDIA_TYPE = "message/ohttp-req"
RESPONSE_MEDIA_TYPE = "message/ohttp-res"

HEADER_LENGTH = 7
"""key_id (1 byte), kem_id, kdf_id, aead_id (2 bytes each)."""
SEED_LENGTH = 32
"""Bytes of input keying material for :meth:`GatewayKey.from_seed` (Nsk of X25519)."""
MAX_ENCAPSULATED_BYTES = MAX_MESSAGE_BYTES + 1024
"""An Encapsulated Request or Response longer than this (bytes) is refused before any
decryption: its plaintext could not be a Binary HTTP message within
:data:`~staycheck.client.bhttp.MAX_MESSAGE_BYTES`."""


class Reason(enum.Enum):
    """Why an encapsulation was refused, and how a gateway answers (RFC 9458 Section 5.2:
    errors before the protection is removed are sent without protection, with a 4xx)."""

    UNKNOWN_KEY = "unknown key"
    """The key id names no key of the gateway, or a key of another KEM: 400, with the
    ``ohttp-key`` problem type (Section 5.3) so the client refreshes its configuration."""
    UNSUPPORTED_SUITE = "unsupported suite"
    """The KEM, KDF or AEAD is not one we implement, or not one offered with that key:
    400 with the ``ohttp-key`` problem type (the client's configuration is wrong)."""
    MALFORMED = "malformed"
    """Too short, too long, or badly encoded (a key configuration, an encapsulation):
    400."""
    DECRYPTION_FAILED = "decryption failed"
    """The KEM or the AEAD refused the ciphertext (tampered, or for another key or
    request): 400. Nothing about the plaintext is known."""


class ObliviousError(InvalidInputError, ValueError):
    """An Oblivious HTTP encoding or encapsulation that cannot be used.

    ``reason`` is a :class:`Reason`; ``field`` names the part (``key_id``, ``aead_id``,
    ``ciphertext``, ``key_configs[1].public_key``) and ``rule`` the rule, never bytes of
    the message.
    """

    def __init__(self, reason: Reason, field: str, rule: str) -> None:
        self.reason = reason
        super().__init__(field, rule)


@dataclass(frozen=True)
class SymmetricSuite:
    """An HPKE KDF and AEAD pair, as listed in a key configuration."""

    kdf_id: int
    aead_id: int

    def __post_init__(self) -> None:
        for name in ("kdf_id", "aead_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
                raise ObliviousError(Reason.MALFORMED, name, "must be a 16-bit integer")

    @property
    def supported(self) -> bool:
        """Whether this module implements both algorithms."""
        return self.kdf_id in _KDFS and self.aead_id in _AEADS


DEFAULT_SYMMETRIC = (SymmetricSuite(KDF_HKDF_SHA256, AEAD_AES_128_GCM),)
"""What a :class:`GatewayKey` offers unless told otherwise: HKDF-SHA256 with AES-128-GCM,
the pair the RFC's example uses."""


@dataclass(frozen=True)
class _Kem:
    npk: int
    nenc: int
    pyhpke_id: KEMId


@dataclass(frozen=True)
class _Kdf:
    hash: type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]
    pyhpke_id: KDFId


@dataclass(frozen=True)
class _Aead:
    cipher: type[AESGCM] | type[ChaCha20Poly1305]
    nk: int
    nn: int
    pyhpke_id: AEADId
    nt: int = 16


_KEMS = {KEM_X25519_HKDF_SHA256: _Kem(32, 32, KEMId.DHKEM_X25519_HKDF_SHA256)}
_KDFS = {
    KDF_HKDF_SHA256: _Kdf(hashes.SHA256, KDFId.HKDF_SHA256),
    KDF_HKDF_SHA384: _Kdf(hashes.SHA384, KDFId.HKDF_SHA384),
    KDF_HKDF_SHA512: _Kdf(hashes.SHA512, KDFId.HKDF_SHA512),
}
_AEADS = {
    AEAD_AES_128_GCM: _Aead(AESGCM, 16, 12, AEADId.AES128_GCM),
    AEAD_AES_256_GCM: _Aead(AESGCM, 32, 12, AEADId.AES256_GCM),
    AEAD_CHACHA20_POLY1305: _Aead(ChaCha20Poly1305, 32, 12, AEADId.CHACHA20_POLY1305),
}


@dataclass(frozen=True)
class KeyConfig:
    """A gateway's public key configuration (RFC 9458 Section 3.1).

    ``symmetric`` lists every KDF and AEAD pair the gateway accepts with this key, in its
    order of preference; pairs this module does not implement may be listed (a client
    skips them).
    """

    key_id: int
    kem_id: int
    public_key: bytes
    symmetric: tuple[SymmetricSuite, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "symmetric", tuple(self.symmetric))
        if not isinstance(self.key_id, int) or not 0 <= self.key_id <= 0xFF:
            raise ObliviousError(Reason.MALFORMED, "key_id", "must be an 8-bit integer")
        kem = _KEMS.get(self.kem_id)
        if kem is None:
            raise ObliviousError(Reason.UNSUPPORTED_SUITE, "kem_id", "not a supported KEM")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != kem.npk:
            raise ObliviousError(
                Reason.MALFORMED, "public_key", f"must be {kem.npk} bytes for this KEM"
            )
        if not 1 <= len(self.symmetric) <= 0xFFFC // 4:
            raise ObliviousError(Reason.MALFORMED, "symmetric", "must list 1 to 16383 pairs")
        if not all(isinstance(s, SymmetricSuite) for s in self.symmetric):
            raise ObliviousError(Reason.MALFORMED, "symmetric", "must be SymmetricSuite values")

    def encode(self) -> bytes:
        """The encoding of RFC 9458 Figure 2."""
        algorithms = b"".join(struct.pack(">HH", s.kdf_id, s.aead_id) for s in self.symmetric)
        return (
            struct.pack(">BH", self.key_id, self.kem_id)
            + self.public_key
            + struct.pack(">H", len(algorithms))
            + algorithms
        )

    @classmethod
    def decode(cls, data: bytes) -> KeyConfig:
        """The key configuration encoded in ``data``, all of it.

        :class:`ObliviousError`: ``UNSUPPORTED_SUITE`` for a KEM we do not implement (its
        key length is unknown, so the rest cannot be read); ``MALFORMED`` otherwise.
        """
        return _decode_key_config(bytes(data), "key_config")

    def select(self, suite: SymmetricSuite | None = None) -> SymmetricSuite:
        """``suite`` if this configuration offers it, else the first pair offered that
        this module implements; ``UNSUPPORTED_SUITE`` if there is none."""
        if suite is not None:
            if suite not in self.symmetric:
                raise ObliviousError(
                    Reason.UNSUPPORTED_SUITE, "suite", "not offered by this key configuration"
                )
            if not suite.supported:
                raise ObliviousError(Reason.UNSUPPORTED_SUITE, "suite", "not implemented")
            return suite
        for offered in self.symmetric:
            if offered.supported:
                return offered
        raise ObliviousError(
            Reason.UNSUPPORTED_SUITE, "symmetric", "no KDF and AEAD pair we implement"
        )


def encode_key_configs(configs: Iterable[KeyConfig]) -> bytes:
    """The ``application/ohttp-keys`` encoding: each configuration prefixed with its
    2-byte length (RFC 9458 Section 3.2)."""
    out = bytearray()
    for config in configs:
        encoded = config.encode()
        out += struct.pack(">H", len(encoded)) + encoded
    if not out:
        raise ObliviousError(Reason.MALFORMED, "key_configs", "must hold one or more")
    return bytes(out)


def decode_key_configs(data: bytes) -> tuple[KeyConfig, ...]:
    """The key configurations of an ``application/ohttp-keys`` body that use a KEM we
    implement, in their order.

    Any encoding error refuses the whole list (``MALFORMED``), as Section 3.2 requires of
    clients; configurations of another KEM are skipped, and a list with none left is
    ``UNSUPPORTED_SUITE``.
    """
    data = bytes(data)
    if len(data) > MAX_ENCAPSULATED_BYTES:
        raise ObliviousError(Reason.MALFORMED, "key_configs", "too long")
    configs: list[KeyConfig] = []
    pos = 0
    index = 0
    while pos < len(data):
        part = f"key_configs[{index}]"
        if pos + 2 > len(data):
            raise ObliviousError(Reason.MALFORMED, f"{part} length", "truncated")
        (length,) = struct.unpack_from(">H", data, pos)
        end = pos + 2 + length
        if end > len(data):
            raise ObliviousError(Reason.MALFORMED, part, "truncated")
        try:
            configs.append(_decode_key_config(data[pos + 2 : end], part))
        except ObliviousError as e:
            if e.reason is not Reason.UNSUPPORTED_SUITE:
                raise
        pos = end
        index += 1
    if index == 0:
        raise ObliviousError(Reason.MALFORMED, "key_configs", "must hold one or more")
    if not configs:
        raise ObliviousError(Reason.UNSUPPORTED_SUITE, "key_configs", "none with a KEM we use")
    return tuple(configs)


def _decode_key_config(data: bytes, part: str) -> KeyConfig:
    if len(data) < 3:
        raise ObliviousError(Reason.MALFORMED, part, "truncated")
    key_id, kem_id = struct.unpack_from(">BH", data, 0)
    kem = _KEMS.get(kem_id)
    if kem is None:
        raise ObliviousError(Reason.UNSUPPORTED_SUITE, f"{part}.kem_id", "not a supported KEM")
    pos = 3 + kem.npk
    if len(data) < pos + 2:
        raise ObliviousError(Reason.MALFORMED, part, "truncated")
    public_key = data[3:pos]
    (length,) = struct.unpack_from(">H", data, pos)
    pos += 2
    if not 4 <= length <= 0xFFFC or length % 4:
        raise ObliviousError(
            Reason.MALFORMED, f"{part}.symmetric", "length must be a multiple of 4, 4 to 65532"
        )
    if len(data) != pos + length:
        raise ObliviousError(Reason.MALFORMED, part, "length does not match its content")
    symmetric = tuple(
        SymmetricSuite(*struct.unpack_from(">HH", data, offset))
        for offset in range(pos, pos + length, 4)
    )
    return KeyConfig(key_id, kem_id, public_key, symmetric)


def _header(key_id: int, kem_id: int, suite: SymmetricSuite) -> bytes:
    return struct.pack(">BHHH", key_id, kem_id, suite.kdf_id, suite.aead_id)


def _request_info(header: bytes) -> bytes:
    """The HPKE ``info`` of a request: label, a zero byte, the header (Section 4.3)."""
    return REQUEST_INFO_LABEL + b"\x00" + header


def _cipher_suite(kem_id: int, suite: SymmetricSuite) -> CipherSuite:
    return CipherSuite.new(
        _KEMS[kem_id].pyhpke_id, _KDFS[suite.kdf_id].pyhpke_id, _AEADS[suite.aead_id].pyhpke_id
    )


def _response_key_nonce(
    suite: SymmetricSuite, secret: bytes, enc: bytes, response_nonce: bytes
) -> tuple[bytes, bytes]:
    """The AEAD key and nonce of a response (RFC 9458 Section 4.4, steps 3 to 5)."""
    kdf, aead = _KDFS[suite.kdf_id], _AEADS[suite.aead_id]
    # Extract(salt, ikm) is HMAC-Hash(salt, ikm) (RFC 5869 Section 2.2).
    extract = hmac.HMAC(enc + response_nonce, kdf.hash())
    extract.update(secret)
    prk = extract.finalize()
    key = HKDFExpand(kdf.hash(), aead.nk, b"key").derive(prk)
    nonce = HKDFExpand(kdf.hash(), aead.nn, b"nonce").derive(prk)
    return key, nonce


def _response_secret(context: ContextInterface, suite: SymmetricSuite) -> bytes:
    aead = _AEADS[suite.aead_id]
    return context.export(RESPONSE_EXPORT_LABEL, max(aead.nn, aead.nk))


class ClientContext:
    """What a client keeps between sending one Encapsulated Request and opening the
    Encapsulated Response to it (made by :func:`encapsulate_request`). One per request:
    never reuse it for another."""

    def __init__(self, context: ContextInterface, enc: bytes, suite: SymmetricSuite) -> None:
        self._context = context
        self._enc = enc
        self._suite = suite

    @property
    def suite(self) -> SymmetricSuite:
        """The KDF and AEAD the request used."""
        return self._suite

    def decapsulate_response(
        self, enc_response: bytes, *, max_size: int = MAX_ENCAPSULATED_BYTES
    ) -> bytes:
        """The response (Binary HTTP bytes) in ``enc_response`` (RFC 9458 Section 4.4).

        :class:`ObliviousError`: ``MALFORMED`` if too short or too long,
        ``DECRYPTION_FAILED`` if it was not sealed for this request or was altered.
        """
        enc_response = bytes(enc_response)
        aead = _AEADS[self._suite.aead_id]
        nonce_length = max(aead.nn, aead.nk)
        if len(enc_response) > max_size:
            raise ObliviousError(Reason.MALFORMED, "encapsulated response", "too long")
        if len(enc_response) < nonce_length + aead.nt:
            raise ObliviousError(
                Reason.MALFORMED, "encapsulated response", "shorter than nonce and tag"
            )
        response_nonce, ct = enc_response[:nonce_length], enc_response[nonce_length:]
        secret = _response_secret(self._context, self._suite)
        key, nonce = _response_key_nonce(self._suite, secret, self._enc, response_nonce)
        try:
            return aead.cipher(key).decrypt(nonce, ct, None)
        except InvalidTag:
            raise ObliviousError(
                Reason.DECRYPTION_FAILED, "ciphertext", "does not open for this request"
            ) from None


def encapsulate_request(
    config: KeyConfig,
    request: bytes,
    *,
    suite: SymmetricSuite | None = None,
    ephemeral_key: bytes | None = None,
) -> tuple[bytes, ClientContext]:
    """The Encapsulated Request of ``request`` (Binary HTTP bytes) for the gateway key
    ``config`` (RFC 9458 Section 4.3), and the context to open its response with.

    ``suite`` picks the KDF and AEAD (default: the first the configuration offers that we
    implement). ``ephemeral_key`` (a raw X25519 private key) is only for reproducing a
    test vector: a fixed ephemeral key links requests and exposes them.
    """
    chosen = config.select(suite)
    header = _header(config.key_id, config.kem_id, chosen)
    cipher_suite = _cipher_suite(config.kem_id, chosen)
    recipient = KEMKey.from_pyca_cryptography_key(_x25519_public(config.public_key, "public_key"))
    ephemeral = None if ephemeral_key is None else _key_pair(ephemeral_key, "ephemeral_key")
    try:
        enc, context = cipher_suite.create_sender_context(
            recipient, info=_request_info(header), eks=ephemeral
        )
    except (ValueError, PyHPKEError):
        # cryptography refuses a Diffie-Hellman result of zero (a low-order public key).
        raise ObliviousError(
            Reason.MALFORMED, "public_key", "not a usable X25519 public key"
        ) from None
    ct = context.seal(bytes(request))
    return header + enc + ct, ClientContext(context, enc, chosen)


class ResponseContext:
    """What a gateway keeps between opening one Encapsulated Request and sealing the
    response to it (made by :meth:`GatewayKeys.decapsulate_request`)."""

    def __init__(
        self, context: ContextInterface, enc: bytes, suite: SymmetricSuite, key_id: int
    ) -> None:
        self._context = context
        self._enc = enc
        self._suite = suite
        self.key_id = key_id
        """The gateway key that opened the request (for logs and metrics)."""

    @property
    def suite(self) -> SymmetricSuite:
        """The KDF and AEAD the request used, and the response uses."""
        return self._suite

    def encapsulate_response(
        self, response: bytes, *, response_nonce: bytes | None = None
    ) -> bytes:
        """The Encapsulated Response of ``response`` (Binary HTTP bytes), RFC 9458
        Section 4.4. ``response_nonce`` is only for reproducing a test vector; by default
        it is max(Nn, Nk) fresh bytes from the OS."""
        aead = _AEADS[self._suite.aead_id]
        nonce_length = max(aead.nn, aead.nk)
        if response_nonce is None:
            response_nonce = os.urandom(nonce_length)
        elif len(response_nonce) != nonce_length:
            raise ObliviousError(
                Reason.MALFORMED, "response_nonce", f"must be {nonce_length} bytes"
            )
        secret = _response_secret(self._context, self._suite)
        key, nonce = _response_key_nonce(self._suite, secret, self._enc, response_nonce)
        return bytes(response_nonce) + aead.cipher(key).encrypt(nonce, bytes(response), None)


class GatewayKey:
    """A gateway's X25519 key pair, with its key id and the KDF and AEAD pairs it accepts
    (its :attr:`config` is what clients get). The private key is never in ``repr``;
    :meth:`private_bytes` gives it to the code that stores it."""

    def __init__(
        self,
        key_id: int,
        private_key: X25519PrivateKey,
        *,
        symmetric: Sequence[SymmetricSuite] = DEFAULT_SYMMETRIC,
    ) -> None:
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        config = KeyConfig(key_id, KEM_X25519_HKDF_SHA256, public, tuple(symmetric))
        for i, suite in enumerate(config.symmetric):
            if not suite.supported:
                raise ObliviousError(Reason.UNSUPPORTED_SUITE, f"symmetric[{i}]", "not implemented")
        self._private = private_key
        self.config = config
        """The public key configuration (RFC 9458 Section 3.1)."""

    @property
    def key_id(self) -> int:
        return self.config.key_id

    @property
    def symmetric(self) -> tuple[SymmetricSuite, ...]:
        return self.config.symmetric

    def __repr__(self) -> str:
        return f"GatewayKey(key_id={self.key_id}, symmetric={self.symmetric!r})"

    @classmethod
    def generate(
        cls, key_id: int, *, symmetric: Sequence[SymmetricSuite] = DEFAULT_SYMMETRIC
    ) -> GatewayKey:
        """A new key from the OS random number generator."""
        return cls(key_id, X25519PrivateKey.generate(), symmetric=symmetric)

    @classmethod
    def from_seed(
        cls,
        key_id: int,
        seed: bytes,
        *,
        symmetric: Sequence[SymmetricSuite] = DEFAULT_SYMMETRIC,
    ) -> GatewayKey:
        """The key that HPKE's DeriveKeyPair (RFC 9180 Section 7.1.3) makes from a
        32-byte ``seed``: the same seed always gives the same key."""
        if not isinstance(seed, bytes) or len(seed) != SEED_LENGTH:
            raise ObliviousError(Reason.MALFORMED, "seed", f"must be {SEED_LENGTH} bytes")
        kem = CipherSuite.new(
            KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM
        ).kem
        pair = kem.derive_key_pair(seed)
        return cls.from_private_bytes(
            key_id, pair.private_key.to_private_bytes(), symmetric=symmetric
        )

    @classmethod
    def from_private_bytes(
        cls,
        key_id: int,
        private_key: bytes,
        *,
        symmetric: Sequence[SymmetricSuite] = DEFAULT_SYMMETRIC,
    ) -> GatewayKey:
        """The key whose raw X25519 private key (32 bytes) is ``private_key``."""
        if not isinstance(private_key, bytes) or len(private_key) != 32:
            raise ObliviousError(Reason.MALFORMED, "private_key", "must be 32 bytes")
        return cls(key_id, X25519PrivateKey.from_private_bytes(private_key), symmetric=symmetric)

    def private_bytes(self) -> bytes:
        """The raw 32-byte X25519 private key, for storage."""
        return self._private.private_bytes_raw()

    def _kem_key(self) -> KEMKeyInterface:
        return KEMKey.from_pyca_cryptography_key(self._private)


class GatewayKeys:
    """A gateway's keys by key id: the ``published`` ones are listed in its
    ``application/ohttp-keys``; the ``retired`` ones are not, but still open requests
    (clients with an old configuration, during a rotation). Key ids are unique."""

    def __init__(
        self, published: Sequence[GatewayKey], *, retired: Sequence[GatewayKey] = ()
    ) -> None:
        if not published:
            raise ConfigurationError("oblivious gateway keys: no published key")
        self._published = tuple(published)
        self._by_id: dict[int, GatewayKey] = {}
        for key in (*published, *retired):
            if key.key_id in self._by_id:
                raise ConfigurationError(f"oblivious gateway keys: key id {key.key_id} used twice")
            self._by_id[key.key_id] = key

    @property
    def configs(self) -> tuple[KeyConfig, ...]:
        """The published key configurations, in order."""
        return tuple(key.config for key in self._published)

    def encode_configs(self) -> bytes:
        """The ``application/ohttp-keys`` body listing the published keys."""
        return encode_key_configs(self.configs)

    def decapsulate_request(
        self, enc_request: bytes, *, max_size: int = MAX_ENCAPSULATED_BYTES
    ) -> tuple[bytes, ResponseContext]:
        """The request (Binary HTTP bytes) in ``enc_request`` and the context to seal its
        response with (RFC 9458 Section 4.3).

        :class:`ObliviousError`: ``MALFORMED`` (too short or too long),
        ``UNSUPPORTED_SUITE`` (a KEM, KDF or AEAD we do not implement, or a pair the key
        does not offer), ``UNKNOWN_KEY`` (no such key id, or its key is of another KEM),
        ``DECRYPTION_FAILED`` (the KEM or the AEAD refuses it); see :class:`Reason`.
        """
        enc_request = bytes(enc_request)
        if len(enc_request) > max_size:
            raise ObliviousError(Reason.MALFORMED, "encapsulated request", "too long")
        if len(enc_request) < HEADER_LENGTH:
            raise ObliviousError(Reason.MALFORMED, "header", "truncated")
        key_id, kem_id, kdf_id, aead_id = struct.unpack_from(">BHHH", enc_request, 0)
        kem = _KEMS.get(kem_id)
        if kem is None:
            raise ObliviousError(Reason.UNSUPPORTED_SUITE, "kem_id", "not a supported KEM")
        if kdf_id not in _KDFS:
            raise ObliviousError(Reason.UNSUPPORTED_SUITE, "kdf_id", "not a supported KDF")
        aead = _AEADS.get(aead_id)
        if aead is None:
            raise ObliviousError(Reason.UNSUPPORTED_SUITE, "aead_id", "not a supported AEAD")
        key = self._by_id.get(key_id)
        if key is None:
            raise ObliviousError(Reason.UNKNOWN_KEY, "key_id", "names no key of this gateway")
        if key.config.kem_id != kem_id:
            raise ObliviousError(Reason.UNKNOWN_KEY, "key_id", "names a key of another KEM")
        suite = SymmetricSuite(kdf_id, aead_id)
        if suite not in key.symmetric:
            raise ObliviousError(
                Reason.UNSUPPORTED_SUITE, "kdf_id, aead_id", "not offered with this key"
            )
        if len(enc_request) < HEADER_LENGTH + kem.nenc + aead.nt:
            raise ObliviousError(
                Reason.MALFORMED, "encapsulated request", "shorter than enc and tag"
            )
        header = enc_request[:HEADER_LENGTH]
        enc = enc_request[HEADER_LENGTH : HEADER_LENGTH + kem.nenc]
        ct = enc_request[HEADER_LENGTH + kem.nenc :]
        recipient = key._kem_key()
        try:
            context = _cipher_suite(kem_id, suite).create_recipient_context(
                enc, recipient, info=_request_info(header)
            )
        except (ValueError, PyHPKEError):
            # cryptography refuses a Diffie-Hellman result of zero (a low-order enc).
            raise ObliviousError(
                Reason.DECRYPTION_FAILED, "enc", "not a usable KEM encapsulation"
            ) from None
        try:
            request = context.open(ct)
        except OpenError:
            raise ObliviousError(
                Reason.DECRYPTION_FAILED, "ciphertext", "does not open with this key"
            ) from None
        return request, ResponseContext(context, enc, suite, key_id)


def _x25519_public(raw: bytes, part: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ObliviousError(Reason.MALFORMED, part, "not an X25519 public key") from None


def _key_pair(private_key: bytes, part: str) -> KEMKeyPair:
    if not isinstance(private_key, bytes) or len(private_key) != 32:
        raise ObliviousError(Reason.MALFORMED, part, "must be 32 bytes")
    private = X25519PrivateKey.from_private_bytes(private_key)
    return KEMKeyPair(
        KEMKey.from_pyca_cryptography_key(private),
        KEMKey.from_pyca_cryptography_key(private.public_key()),
    )
