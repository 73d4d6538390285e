"""Signing keys on a hardware token or HSM, reached through PKCS#11 (ADR 10).

- :class:`Pkcs11Uri`: an RFC 7512 PKCS#11 URI, e.g.
  ``pkcs11:token=staycheck;object=verdict-2026-12?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin``.
  Values are percent-decoded; a mistake is a :class:`ConfigurationError` naming the
  attribute, never quoting a value. ``str()`` and ``repr()`` of a URI never show
  ``pin-value``: a URI is written to a log, a message or the key index only that way.
- :class:`Pkcs11Signer`: the :class:`staycheck.trust.keys.Signer` of a key pair on a token:
  Ed25519 (``CKM_EDDSA``) or ECDSA P-256 (``CKM_ECDSA`` over a SHA-256 digest, which every
  token offers, where ``CKM_ECDSA_SHA256`` is not always there: SoftHSM 2.6 lacks it). COSE
  wants r || s; PKCS#11 specifies exactly that for ``CKM_ECDSA``, and a token that answers
  in DER anyway is converted. The public key (and so the key id) is read from the token:
  ``CKA_EC_POINT``, a DER OCTET STRING of the 32 raw bytes (Ed25519) or of the uncompressed
  point (P-256).
- :func:`generate_key_pair`: a new key pair on the token, private key ``CKA_TOKEN``,
  ``CKA_PRIVATE``, ``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE`` false.

Concurrency. One module (shared library) is loaded once per process and initialised with
``CKF_OS_LOCKING_OK`` (PyKCS11 does so), so the module locks for itself. Login in PKCS#11 is
per application and token, so each token has one session kept open that holds the login,
and a pool of up to :data:`MAX_SESSIONS` sessions that signing borrows one at a time: 16
handler threads sign on 16 sessions, none waits for another's operation; past that a call
waits at most :data:`SESSION_WAIT_S` for a free session, then fails (overload, not a dead
token). PyKCS11 holds the GIL during each module call (ADR 10 says what that costs).

Failure. Any error of the module while signing (device removed, session closed, key
handle gone, module error) marks the signer *down*: signing then raises
:class:`TokenUnavailableError` (an :class:`UnavailableError`, FAILED_PRECONDITION at the
gRPC boundary) at once, without touching the token, and :attr:`Pkcs11Signer.healthy` is
false (the server turns health NOT_SERVING). :meth:`Pkcs11Signer.probe`, which the server's
watcher calls every second, and signing itself, at most once per :data:`RETRY_S`, try to
recover: finalise and initialise the module again (the only way a module such as SoftHSM
sees a token that came back), log in, find the key, check it is the same public key, and
sign a probe that must verify. A refused PIN is never retried (each try counts towards
locking the token): it stays down until the operator fixes the PIN source.

It does not decide which key signs when (``staycheck.server.keystore``) or map errors to
gRPC codes (``staycheck.server.errors``). The PIN is read when logging in and handed to the
module; it is kept in no attribute and appears in no message, log line or ``repr``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from staycheck.geo.errors import BadSignatureError, ConfigurationError, UnavailableError
from staycheck.trust.cose import ALG_EDDSA, ALG_ES256
from staycheck.trust.keys import P256_COORD, PublicKey

log = logging.getLogger("staycheck.server.pkcs11")

SCHEME = "pkcs11:"
MAX_SESSIONS = 16
"""Sessions per token that signing may use at once (the server's default handler threads)."""
SESSION_WAIT_S = 2.0
"""How long a signing call waits for a free session before it fails, seconds."""
RETRY_S = 1.0
"""A signer that is down tries to recover at most this often, seconds."""
PROBE_DATA = b"staycheck pkcs11 probe"

# RFC 7512 section 2.3: what a value may hold unencoded, besides unreserved characters.
_UNRESERVED = r"A-Za-z0-9._~\-"
_PATH_VALUE = re.compile(rf"(?:[{_UNRESERVED}:\[\]@!$'()*+,=&]|%[0-9A-Fa-f]{{2}})*")
_QUERY_VALUE = re.compile(rf"(?:[{_UNRESERVED}:\[\]@!$'()*+,=/?|;]|%[0-9A-Fa-f]{{2}})*")
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")
_PATH_ATTRS = frozenset(
    {"token", "manufacturer", "serial", "model", "slot-id", "object", "id", "type"}
)
_QUERY_ATTRS = frozenset({"module-path", "pin-source", "pin-value"})
# Standard attributes we do not act on: refused by name rather than silently ignored.
_UNSUPPORTED = frozenset(
    {
        "library-manufacturer",
        "library-description",
        "library-version",
        "slot-description",
        "slot-manufacturer",
        "module-name",
    }
)
_TYPES = frozenset({"private", "public"})

# DER of the curves' identifiers in CKA_EC_PARAMS (PKCS#11 3.0, section 2.3.5 and 2.3.7).
_ED25519_PARAMS = (
    bytes.fromhex("06032b6570"),  # OID 1.3.101.112 (RFC 8410 id-Ed25519)
    b"\x13\x0cedwards25519",  # PrintableString "edwards25519" (what OpenSC writes)
)
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # OID 1.2.840.10045.3.1.7
_PIN_REFUSED = frozenset({0xA0, 0xA1, 0xA2, 0xA4})
"""CKR_PIN_INCORRECT, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE, CKR_PIN_LOCKED: never retried."""
_USER_ALREADY_LOGGED_IN = 0x100


class TokenUnavailableError(UnavailableError):
    """The key's token does not answer now (removed, module error, no free session).

    The text is fixed and safe for a caller: it names the failing step and the PKCS#11 return
    code, never the URI's PIN."""


class PinRefusedError(ConfigurationError):
    """The token refused the PIN; not retried, so as not to lock the token."""


def _decode(value: str, attr: str, *, query: bool) -> bytes:
    pattern = _QUERY_VALUE if query else _PATH_VALUE
    if pattern.fullmatch(value) is None:
        raise ConfigurationError(
            f"pkcs11 URI: {attr}: a character that must be percent-encoded, or a bad %XX"
        )
    return _PCT.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("ascii"))


def _text(raw: bytes, attr: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"pkcs11 URI: {attr}: not UTF-8 once decoded") from None


def _encode(value: str | bytes, *, query: bool) -> str:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    keep = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")
    if query:
        keep |= set(b":/@!$'()*+,=")
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in raw)


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI naming a key (``object``/``id``) on a token of a module.

    ``pin_value`` is never shown: not by ``str()`` (the URI without it), nor ``repr()``."""

    module_path: str
    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_id: int | None = None
    object: str | None = None
    id: bytes | None = None
    type: str | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        if not isinstance(text, str) or text[: len(SCHEME)].lower() != SCHEME:
            raise ConfigurationError("pkcs11 URI: must start with pkcs11:")
        rest = text[len(SCHEME) :]
        path, _, query = rest.partition("?")
        values: dict[str, bytes] = {}
        for part, separator, is_query in ((path, ";", False), (query, "&", True)):
            if not part:
                continue
            for item in part.split(separator):
                name, eq, value = item.partition("=")
                if not eq or not name:
                    raise ConfigurationError(
                        f"pkcs11 URI: each attribute is NAME=VALUE, separated by "
                        f"{separator!r} {'after ?' if is_query else 'before ?'}"
                    )
                if name.startswith("x-"):
                    continue  # vendor attributes (RFC 7512 section 2.3): not ours
                known = _QUERY_ATTRS if is_query else _PATH_ATTRS
                if name in _UNSUPPORTED:
                    raise ConfigurationError(f"pkcs11 URI: {name}: not supported here")
                if name not in known and is_query:
                    # Not named: "pin-value=ab&cd" splits the PIN into a "name" here.
                    raise ConfigurationError(
                        "pkcs11 URI: an unknown query attribute (not shown: it may be part of "
                        "a PIN; percent-encode '&' in a pin-value as %26)"
                    )
                if name not in known:
                    where = "query (after ?)" if is_query else "path (before ?)"
                    other = _PATH_ATTRS if is_query else _QUERY_ATTRS
                    hint = " (it belongs in the other part)" if name in other else ""
                    raise ConfigurationError(f"pkcs11 URI: {name}: not a {where} attribute{hint}")
                if name in values:
                    raise ConfigurationError(f"pkcs11 URI: {name}: given twice")
                values[name] = _decode(value, name, query=is_query)
        text_of = {k: _text(v, k) for k, v in values.items() if k != "id"}
        if "module-path" not in text_of or not text_of["module-path"]:
            raise ConfigurationError(
                "pkcs11 URI: module-path: required (the PKCS#11 module, a .so file)"
            )
        if not pathlib.PurePosixPath(text_of["module-path"]).is_absolute():
            raise ConfigurationError("pkcs11 URI: module-path: must be an absolute path")
        if "pin-source" in text_of and "pin-value" in text_of:
            raise ConfigurationError("pkcs11 URI: pin-source, pin-value: give one, not both")
        if "object" not in text_of and "id" not in values:
            raise ConfigurationError("pkcs11 URI: object or id: required to name the key")
        if "type" in text_of and text_of["type"] not in _TYPES:
            raise ConfigurationError("pkcs11 URI: type: must be private or public (a key pair)")
        slot_id = None
        if "slot-id" in text_of:
            if not text_of["slot-id"].isdigit():
                raise ConfigurationError("pkcs11 URI: slot-id: must be a decimal number")
            slot_id = int(text_of["slot-id"])
        if "id" in values and not values["id"]:
            raise ConfigurationError("pkcs11 URI: id: must not be empty")
        if "pin-source" in text_of:
            _pin_path(text_of["pin-source"])  # checked now, read at login
        return cls(
            module_path=text_of["module-path"],
            token=text_of.get("token"),
            manufacturer=text_of.get("manufacturer"),
            serial=text_of.get("serial"),
            model=text_of.get("model"),
            slot_id=slot_id,
            object=text_of.get("object"),
            id=values.get("id"),
            type=text_of.get("type"),
            pin_source=text_of.get("pin-source"),
            pin_value=text_of.get("pin-value"),
        )

    def __str__(self) -> str:
        path = [
            (name, value)
            for name, value in (
                ("token", self.token),
                ("manufacturer", self.manufacturer),
                ("serial", self.serial),
                ("model", self.model),
                ("slot-id", None if self.slot_id is None else str(self.slot_id)),
                ("object", self.object),
                ("id", self.id),
                ("type", self.type),
            )
            if value is not None
        ]
        query = [("module-path", self.module_path)]
        if self.pin_source is not None:
            query.append(("pin-source", self.pin_source))

        def value(name: str, v: str | bytes) -> str:
            # An id is bytes: every byte percent-encoded (RFC 7512 section 2.3).
            if isinstance(v, bytes):
                return "".join(f"%{b:02X}" for b in v)
            return _encode(v, query=False)

        return (
            SCHEME
            + ";".join(f"{k}={value(k, v)}" for k, v in path)
            + "?"
            + "&".join(f"{k}={_encode(v, query=True)}" for k, v in query)
        )

    def __repr__(self) -> str:
        shown = f"{self}" + ("&pin-value=<hidden>" if self.pin_value is not None else "")
        return f"Pkcs11Uri({shown!r})"

    @property
    def has_pin(self) -> bool:
        return self.pin_source is not None or self.pin_value is not None

    def same_token(self, other: Pkcs11Uri) -> bool:
        """True when both name the same token of the same module (as far as they say)."""
        return self.module_path == other.module_path and all(
            getattr(self, a) == getattr(other, a)
            for a in ("token", "manufacturer", "serial", "model", "slot_id")
        )

    def with_pin_of(self, other: Pkcs11Uri) -> Pkcs11Uri:
        """This URI with ``other``'s PIN (source or value) when it has none of its own."""
        if self.has_pin:
            return self
        return replace(self, pin_source=other.pin_source, pin_value=other.pin_value)

    def with_id(self, key_id: bytes) -> Pkcs11Uri:
        return replace(self, id=key_id)

    def read_pin(self) -> str | None:
        """The PIN, read now from ``pin-source`` (one trailing newline dropped) or given as
        ``pin-value``; None when the URI names neither."""
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is None:
            return None
        path = _pin_path(self.pin_source)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigurationError(f"pin-source: cannot read {path} ({e.strerror})") from None
        try:
            pin = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(f"pin-source: {path} is not UTF-8 text") from None
        pin = pin[:-2] if pin.endswith("\r\n") else pin[:-1] if pin.endswith("\n") else pin
        if not pin:
            raise ConfigurationError(f"pin-source: {path} is empty")
        return pin


def _pin_path(source: str) -> pathlib.Path:
    """The file a ``pin-source`` names: ``file:/abs``, ``file:///abs`` or ``/abs``."""
    if source.startswith("file://"):
        source = source[len("file://") :]
    elif source.startswith("file:"):
        source = source[len("file:") :]
    if source.startswith("|") or not source.startswith("/"):
        raise ConfigurationError(
            "pkcs11 URI: pin-source: only a file is supported (file:/path/to/pin)"
        )
    return pathlib.Path(source)


def is_uri(text: str) -> bool:
    """True if ``text`` is meant as a PKCS#11 URI (rather than a key file's path)."""
    return text[: len(SCHEME)].lower() == SCHEME


# --- the module, its tokens and their sessions ----------------------------------------------


def _pykcs11() -> Any:
    try:
        import PyKCS11
    except ModuleNotFoundError:
        raise ConfigurationError(
            "PKCS#11 keys need the hsm extra: pip install 'staycheck[hsm]'"
        ) from None
    return PyKCS11


def _rv_text(e: Exception) -> str:
    """The PKCS#11 return code of a PyKCS11 error (``CKR_DEVICE_REMOVED (0x00000032)``)."""
    return str(e)


def _rv(e: Exception) -> int:
    value = getattr(e, "value", -1)
    return value if isinstance(value, int) else -1


class _Gate:
    """Many signing calls at once, or one re-initialisation of the module alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._users:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class _Module:
    """One PKCS#11 module of this process. ``generation`` counts its initialisations:
    sessions and object handles of an earlier one are gone."""

    def __init__(self, path: str) -> None:
        p11 = _pykcs11()
        if not pathlib.Path(path).is_file():
            raise ConfigurationError(f"pkcs11 URI: module-path: no file {path}")
        self.path = path
        self.p11 = p11
        self.lib = p11.PyKCS11Lib()
        try:
            self.lib.load(path)
        except p11.PyKCS11Error as e:
            raise ConfigurationError(f"pkcs11 module {path}: cannot load it ({e})") from None
        self.gate = _Gate()
        self.generation = 1

    def reinitialize(self) -> None:
        """``C_Finalize`` and ``C_Initialize`` again, alone: every session and handle of
        the previous generation is gone after it."""
        with self.gate.exclusive():
            self.lib.lib.C_Finalize()  # its error (not initialised) changes nothing
            rv = self.lib.lib.C_Initialize()
            self.generation += 1
            if rv != 0:
                raise TokenUnavailableError(
                    f"PKCS#11 module does not initialise ({self.p11.PyKCS11Error(rv)})"
                )


_registry_lock = threading.Lock()
_modules: dict[str, _Module] = {}
_pools: dict[tuple[Any, ...], _TokenPool] = {}


def _forget_after_fork() -> None:
    """A forked child initialises the module itself (PKCS#11 section 5.4: sessions and
    handles of the parent mean nothing there); it starts with an empty registry."""
    global _registry_lock
    _registry_lock = threading.Lock()
    _modules.clear()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _module(path: str) -> _Module:
    with _registry_lock:
        if path not in _modules:
            _modules[path] = _Module(path)
        return _modules[path]


def _pool(uri: Pkcs11Uri) -> _TokenPool:
    key = (uri.module_path, uri.token, uri.manufacturer, uri.serial, uri.model, uri.slot_id)
    module = _module(uri.module_path)
    with _registry_lock:
        if key not in _pools:
            _pools[key] = _TokenPool(module, uri)
        pool = _pools[key]
    pool.offer_pin(uri)
    return pool


def _strip(value: Any) -> str:
    return str(value).rstrip(" \x00")


class _TokenPool:
    """The sessions of one token: one that holds the login, and up to ``MAX_SESSIONS``
    lent to signing calls one at a time. Use under ``module.gate.shared()``."""

    def __init__(self, module: _Module, uri: Pkcs11Uri) -> None:
        self.module = module
        self._uri = uri
        self._lock = threading.RLock()
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0
        self._slot: int | None = None
        self._login: Any = None
        self._idle: list[Any] = []
        self._open = 0
        self.pin_refused: str | None = None

    def offer_pin(self, uri: Pkcs11Uri) -> None:
        """A later URI for this token may bring the PIN an earlier one lacked."""
        with self._lock:
            if not self._uri.has_pin and uri.has_pin:
                self._uri = self._uri.with_pin_of(uri)

    @property
    def label(self) -> str:
        """The token's URI (no key, no PIN), for messages."""
        return str(replace(self._uri, object=None, id=None, type=None, pin_source=None))

    @property
    def sessions_open(self) -> int:
        """Sessions lent or idle, beside the login session."""
        return self._open

    def connected(self) -> bool:
        return self._login is not None and self._generation == self.module.generation

    def connect(self) -> None:
        """Find the token, open the login session and log in (once per generation).
        Raises :class:`_Rescan` when no token matches: the caller leaves the shared gate
        and initialises the module again (a token plugged in, or made by another process,
        after the module was initialised is only seen then)."""
        with self._lock:
            if self.connected():
                return
            if self.pin_refused is not None:
                raise PinRefusedError(self.pin_refused)
            p11, lib = self.module.p11, self.module.lib
            generation = self.module.generation
            with self._cond:
                self._idle, self._open = [], 0
            self._login = None
            try:
                slot = self._find_slot()
            except LookupError:
                raise _Rescan from None
            try:
                login = lib.openSession(slot, p11.CKF_SERIAL_SESSION)
            except p11.PyKCS11Error as e:
                raise TokenUnavailableError(f"PKCS#11 C_OpenSession failed ({e})") from None
            pin = self._uri.read_pin()
            if pin is not None:
                try:
                    login.login(pin)
                except p11.PyKCS11Error as e:
                    if _rv(e) in _PIN_REFUSED:
                        self.pin_refused = (
                            f"PKCS#11 token {self.label}: the PIN was refused ({e}); not "
                            "retried, so as not to lock the token: fix the pin-source and "
                            "restart"
                        )
                        with contextlib.suppress(p11.PyKCS11Error):
                            login.closeSession()
                        raise PinRefusedError(self.pin_refused) from None
                    if _rv(e) != _USER_ALREADY_LOGGED_IN:
                        raise TokenUnavailableError(f"PKCS#11 C_Login failed ({e})") from None
                finally:
                    del pin
            self._slot, self._login, self._generation = slot, login, generation

    def _find_slot(self) -> int:
        p11, lib, uri = self.module.p11, self.module.lib, self._uri
        try:
            slots = lib.getSlotList(tokenPresent=True)
            found = []
            for slot in slots:
                if uri.slot_id is not None and int(slot) != uri.slot_id:
                    continue
                info = lib.getTokenInfo(slot)
                if not info.flags & p11.CKF_TOKEN_INITIALIZED:
                    continue
                have = {
                    "token": _strip(info.label),
                    "manufacturer": _strip(info.manufacturerID),
                    "serial": _strip(info.serialNumber),
                    "model": _strip(info.model),
                }
                if all(getattr(uri, k) in (None, v) for k, v in have.items()):
                    found.append(int(slot))
        except p11.PyKCS11Error as e:
            raise TokenUnavailableError(f"PKCS#11 C_GetSlotList failed ({e})") from None
        if not found:
            raise LookupError(f"no token matches {self.label}")
        if len(found) > 1:
            raise ConfigurationError(
                f"{len(found)} tokens match {self.label}: add serial= or slot-id="
            )
        return found[0]

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A session of this token for one operation; returned to the pool after it, or
        closed if the operation failed."""
        session = self._acquire()
        ok = False
        try:
            yield session
            ok = True
        finally:
            self._release(session, keep=ok)

    def _acquire(self) -> Any:
        deadline = time.monotonic() + SESSION_WAIT_S
        generation = self._generation
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._open < MAX_SESSIONS:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TokenUnavailableError(
                        f"no PKCS#11 session free within {SESSION_WAIT_S:g} s "
                        f"({MAX_SESSIONS} in use)"
                    )
                self._cond.wait(left)
        p11 = self.module.p11
        try:
            if self._slot is None or generation != self.module.generation:
                raise TokenUnavailableError("PKCS#11 sessions of an earlier initialisation")
            return self.module.lib.openSession(self._slot, p11.CKF_SERIAL_SESSION)
        except Exception:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _release(self, session: Any, *, keep: bool) -> None:
        with self._cond:
            if keep and self._generation == self.module.generation:
                self._idle.append(session)
            else:
                self._open -= 1
                if self._generation == self.module.generation:
                    with contextlib.suppress(Exception):
                        session.closeSession()
            self._cond.notify()


class _Rescan(Exception):
    """Internal: the token was not found; initialise the module again and look once more."""


# --- keys on a token ------------------------------------------------------------------------


def _octet_string(data: bytes) -> bytes:
    """The content of a DER OCTET STRING (short or one/two-byte long length)."""
    if len(data) < 2 or data[0] != 0x04:
        raise ValueError("not an OCTET STRING")
    n, offset = data[1], 2
    if n & 0x80:
        size = n & 0x7F
        if size not in (1, 2) or len(data) < 2 + size:
            raise ValueError("bad length")
        n, offset = int.from_bytes(data[2 : 2 + size], "big"), 2 + size
    if len(data) != offset + n:
        raise ValueError("bad length")
    return data[offset:]


def public_key_from_token(key_type: int, params: bytes, point: bytes) -> PublicKey:
    """The verification key of ``CKA_KEY_TYPE``, ``CKA_EC_PARAMS`` and ``CKA_EC_POINT``:
    Ed25519 (``CKK_EC_EDWARDS``, the point a DER OCTET STRING of the 32 raw bytes) or
    P-256 (``CKK_EC``, the uncompressed point, DER-wrapped). A point given bare, as some
    tokens do, is taken too."""
    if key_type == 0x40:  # CKK_EC_EDWARDS
        if params not in _ED25519_PARAMS:
            raise ConfigurationError("token key: an Edwards curve other than Ed25519")
        raw = point if len(point) == 32 else _unwrap(point)
        if len(raw) != 32:
            raise ConfigurationError("token key: CKA_EC_POINT is not 32 bytes of Ed25519")
        return PublicKey.from_ed25519(Ed25519PublicKey.from_public_bytes(raw))
    if key_type == 0x3:  # CKK_EC
        if params != _P256_PARAMS:
            raise ConfigurationError("token key: an EC curve other than P-256")
        raw = point if len(point) == 2 * P256_COORD + 1 else _unwrap(point)
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise ConfigurationError("token key: CKA_EC_POINT is not a P-256 point") from None
        return PublicKey.from_p256(key)
    raise ConfigurationError("token key: neither Ed25519 nor ECDSA P-256")


def _unwrap(point: bytes) -> bytes:
    try:
        return _octet_string(point)
    except ValueError:
        raise ConfigurationError("token key: CKA_EC_POINT is not a DER OCTET STRING") from None


def raw_ecdsa_signature(signature: bytes) -> bytes:
    """r || s, 32 bytes each, from what a token returned for ``CKM_ECDSA``: that already
    (the PKCS#11 encoding) or DER (some tokens)."""
    if len(signature) == 2 * P256_COORD:
        return signature
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        raise ValueError("neither r || s nor a DER ECDSA signature") from None
    if r >= 2 ** (8 * P256_COORD) or s >= 2 ** (8 * P256_COORD):
        raise ValueError("r or s too large for P-256")
    return r.to_bytes(P256_COORD, "big") + s.to_bytes(P256_COORD, "big")


@dataclass(frozen=True)
class KeyFlags:
    """What the token says of a private key."""

    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool


class Pkcs11Signer:
    """Signs with a private key that stays on a PKCS#11 token.

    ``expected``: the public key recorded for this URI (the key store's); the signer then
    needs no token to say its ``kid`` and ``alg``, loads no module until it first signs,
    and refuses a token whose key under this URI is another one. Without it, it connects
    now and takes the public key the token holds."""

    def __init__(self, uri: Pkcs11Uri | str, *, expected: PublicKey | None = None) -> None:
        self.uri = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
        self._pool_ref: _TokenPool | None = None
        self._mechanism_ref: Any = None
        self._expected = expected
        self._lock = threading.Lock()
        self._recover_lock = threading.Lock()
        self._handle: Any = None
        self._handle_generation = 0
        self._down: str | None = None
        self._last_try = -1e9
        self.flags: KeyFlags | None = None
        if expected is None:
            self.connect()
        assert self._expected is not None
        self.public_key: PublicKey = self._expected

    @property
    def _pool(self) -> _TokenPool:
        """The token's sessions, loading the module on first use (a supervisor that only
        reads the key index before forking its workers loads none)."""
        if self._pool_ref is None:
            self._pool_ref = _pool(self.uri)
        return self._pool_ref

    @property
    def _mechanism(self) -> Any:
        if self._mechanism_ref is None:
            p11 = self._pool.module.p11
            mechanism = p11.CKM_EDDSA if self.public_key.alg == ALG_EDDSA else p11.CKM_ECDSA
            self._mechanism_ref = p11.Mechanism(mechanism, None)
        return self._mechanism_ref

    def __repr__(self) -> str:
        return f"Pkcs11Signer({str(self.uri)!r}, kid={self.public_key.kid.hex()})"

    @property
    def kid(self) -> bytes:
        return self.public_key.kid

    @property
    def alg(self) -> int:
        return self.public_key.alg

    @property
    def healthy(self) -> bool:
        """False while the token does not answer (signing fails closed)."""
        return self._down is None

    @property
    def problem(self) -> str | None:
        """Why signing is down, or None."""
        return self._down

    @property
    def sessions_open(self) -> int:
        """Signing sessions the key's token has open in this process (at most
        ``MAX_SESSIONS``)."""
        return 0 if self._pool_ref is None else self._pool_ref.sessions_open

    def connect(self) -> None:
        """Log in and find the key now (a :class:`ConfigurationError` or
        :class:`TokenUnavailableError` says why not); then sign a probe that must verify."""
        module = self._pool.module
        for attempt in (1, 2):
            try:
                with module.gate.shared():
                    self._key_handle()
                    self._probe_signature()
                return
            except _Rescan:
                if attempt == 2:
                    break
                module.reinitialize()
        raise ConfigurationError(f"PKCS#11: no token matches {self._pool.label}")

    def sign(self, data: bytes) -> bytes:
        if self._down is not None:
            self._recover_or_raise()
        module = self._pool.module
        p11 = module.p11
        with module.gate.shared():
            try:
                handle = self._key_handle()
                with self._pool.session() as session:
                    signature = bytes(session.sign(handle, self._digest(data), self._mechanism))
                return self._encode(signature)
            except p11.PyKCS11Error as e:
                raise self._fail(f"PKCS#11 C_Sign failed ({_rv_text(e)})") from None
            except _Rescan:
                raise self._fail(f"PKCS#11: no token matches {self._pool.label}") from None
            except TokenUnavailableError as e:
                if str(e).startswith("no PKCS#11 session free"):
                    raise  # overload, not a dead token
                raise self._fail(str(e)) from None
            except ValueError as e:
                raise self._fail(f"PKCS#11: the token's signature is malformed ({e})") from None
            except ConfigurationError as e:  # after a re-initialisation: PIN, key gone
                raise self._fail(str(e)) from None

    def probe(self) -> bool:
        """Check the token now (the server's watcher, every second): a down signer tries to
        recover (at most once per ``RETRY_S``); a healthy one signs a probe, so that a
        token that went away turns health NOT_SERVING without waiting for a call."""
        if self._down is not None:
            with contextlib.suppress(UnavailableError, ConfigurationError):
                self._recover_or_raise()
            return self._down is None
        try:
            self.sign(PROBE_DATA)
        except UnavailableError:
            return False
        return True

    # --- internals ------------------------------------------------------------------------

    def _digest(self, data: bytes) -> bytes:
        return data if self.public_key.alg == ALG_EDDSA else hashlib.sha256(data).digest()

    def _encode(self, signature: bytes) -> bytes:
        if self.public_key.alg == ALG_EDDSA:
            if len(signature) != 64:
                raise ValueError("an Ed25519 signature is 64 bytes")
            return signature
        return raw_ecdsa_signature(signature)

    def _fail(self, reason: str) -> TokenUnavailableError:
        with self._lock:
            first = self._down != reason
            self._down = reason
            self._last_try = time.monotonic()
            self._handle = None
        if first:
            log.error("signing key %s down: %s; failing closed until it is back", self.uri, reason)
        return TokenUnavailableError(f"signing key unavailable: {reason}")

    def _recover_or_raise(self) -> None:
        """Raise :class:`TokenUnavailableError` unless the token answers again."""
        reason = self._down
        if reason is None:
            return
        if self._pool_ref is not None and self._pool_ref.pin_refused is not None:
            raise TokenUnavailableError(f"signing key unavailable: {self._pool_ref.pin_refused}")
        if time.monotonic() - self._last_try < RETRY_S or not self._recover_lock.acquire(
            blocking=False
        ):
            raise TokenUnavailableError(f"signing key unavailable: {reason}")
        try:
            self._last_try = time.monotonic()
            module = self._pool.module
            try:
                module.reinitialize()
                with module.gate.shared():
                    self._key_handle()
                    self._probe_signature()
            except _Rescan:
                raise self._fail(f"PKCS#11: no token matches {self._pool.label}") from None
            except (UnavailableError, ConfigurationError, BadSignatureError) as e:
                raise self._fail(str(e).removeprefix("signing key unavailable: ")) from None
            except module.p11.PyKCS11Error as e:
                raise self._fail(f"PKCS#11 call failed ({_rv_text(e)})") from None
            with self._lock:
                self._down = None
            log.warning("signing key %s is back: signing again", self.uri)
        finally:
            self._recover_lock.release()

    def _probe_signature(self) -> None:
        """Sign ``PROBE_DATA`` on the token and verify it with the recorded public key."""
        p11 = self._pool.module.p11
        assert self._expected is not None
        mechanism = p11.CKM_EDDSA if self._expected.alg == ALG_EDDSA else p11.CKM_ECDSA
        digest = (
            PROBE_DATA if self._expected.alg == ALG_EDDSA else hashlib.sha256(PROBE_DATA).digest()
        )
        try:
            with self._pool.session() as session:
                raw = bytes(session.sign(self._handle, digest, p11.Mechanism(mechanism, None)))
        except p11.PyKCS11Error as e:
            raise TokenUnavailableError(f"PKCS#11 C_Sign failed ({e})") from None
        signature = raw if self._expected.alg == ALG_EDDSA else raw_ecdsa_signature(raw)
        self._expected.verify_signature(signature, PROBE_DATA)

    def _key_handle(self) -> Any:
        """The private key's handle for the module's current generation (found, and its
        public key read and checked, once per generation). Call under the shared gate."""
        generation = self._pool.module.generation
        if self._handle is not None and self._handle_generation == generation:
            return self._handle
        with self._lock:
            if self._handle is not None and self._handle_generation == generation:
                return self._handle
            self._pool.connect()
            p11 = self._pool.module.p11
            try:
                with self._pool.session() as session:
                    private = _find_one(session, p11, p11.CKO_PRIVATE_KEY, self.uri, "private key")
                    public = _read_public_key(session, p11, self.uri, private)
                    self.flags = _key_flags(session, p11, private)
            except p11.PyKCS11Error as e:
                raise TokenUnavailableError(f"PKCS#11 key lookup failed ({e})") from None
            if self._expected is None:
                self._expected = public
            elif public.raw != self._expected.raw:
                raise ConfigurationError(
                    f"PKCS#11 key {self.uri} is not the recorded key "
                    f"{self._expected.kid.hex()} (the token holds {public.kid.hex()})"
                )
            if not self.flags.sensitive or self.flags.extractable:
                log.warning(
                    "PKCS#11 key %s can leave the token (CKA_SENSITIVE false or "
                    "CKA_EXTRACTABLE true): make signing keys with both set right",
                    self.uri,
                )
            self._handle, self._handle_generation = private, generation
            return private


def _template(p11: Any, object_class: int, uri: Pkcs11Uri) -> list[tuple[int, Any]]:
    template: list[tuple[int, Any]] = [(p11.CKA_CLASS, object_class)]
    if uri.object is not None:
        template.append((p11.CKA_LABEL, uri.object))
    if uri.id is not None:
        template.append((p11.CKA_ID, uri.id))
    return template


def _find_one(session: Any, p11: Any, object_class: int, uri: Pkcs11Uri, what: str) -> Any:
    found = session.findObjects(_template(p11, object_class, uri))
    if not found:
        raise ConfigurationError(f"PKCS#11: no {what} matches {uri}")
    if len(found) > 1:
        raise ConfigurationError(f"PKCS#11: {len(found)} {what}s match {uri}: add id=")
    return found[0]


def _read_public_key(session: Any, p11: Any, uri: Pkcs11Uri, private: Any) -> PublicKey:
    """The key pair's public key: from its public key object (same label and id), or
    from the private key's own ``CKA_EC_POINT`` where a token keeps it there."""
    found = session.findObjects(_template(p11, p11.CKO_PUBLIC_KEY, uri))
    if len(found) > 1:
        raise ConfigurationError(f"PKCS#11: {len(found)} public keys match {uri}: add id=")
    holder = found[0] if found else private
    (key_type,) = session.getAttributeValue(holder, [p11.CKA_KEY_TYPE])
    params, point = session.getAttributeValue(
        holder, [p11.CKA_EC_PARAMS, p11.CKA_EC_POINT], allAsBinary=True
    )
    if not point:
        raise ConfigurationError(f"PKCS#11: no public key (CKA_EC_POINT) for {uri}")
    return public_key_from_token(int(key_type), bytes(params or b""), bytes(point))


def _key_flags(session: Any, p11: Any, private: Any) -> KeyFlags:
    values = session.getAttributeValue(
        private,
        [
            p11.CKA_SENSITIVE,
            p11.CKA_EXTRACTABLE,
            p11.CKA_ALWAYS_SENSITIVE,
            p11.CKA_NEVER_EXTRACTABLE,
        ],
    )
    sensitive, extractable, always, never = (bool(v) for v in values)
    return KeyFlags(sensitive, extractable, always, never)


def generate_key_pair(uri: Pkcs11Uri | str, *, alg: int = ALG_EDDSA) -> Pkcs11Signer:
    """A new key pair on the token, labelled ``object``, with ``id`` (8 random bytes when
    the URI names none): the private key ``CKA_TOKEN``, ``CKA_PRIVATE``, ``CKA_SENSITIVE``
    true, ``CKA_EXTRACTABLE`` false, for signing only. Refuses a URI whose ``object``/``id``
    already names a key. Returns its signer; its ``uri`` carries the ``id``."""
    uri = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
    if uri.object is None:
        raise ConfigurationError("pkcs11 URI: object: required to make a key (its label)")
    if alg not in (ALG_EDDSA, ALG_ES256):
        raise ConfigurationError("key algorithm: EdDSA (Ed25519) or ES256 (P-256)")
    uri = uri if uri.id is not None else uri.with_id(secrets.token_bytes(8))
    pool = _pool(uri)
    module = pool.module
    p11 = module.p11
    for attempt in (1, 2):
        try:
            with module.gate.shared():
                pool.connect()
                _generate(pool, p11, uri, alg)
            break
        except _Rescan:
            if attempt == 2:
                raise ConfigurationError(f"PKCS#11: no token matches {pool.label}") from None
            module.reinitialize()
    signer = Pkcs11Signer(uri)
    assert signer.flags is not None
    if not signer.flags.sensitive or signer.flags.extractable:
        raise ConfigurationError(f"PKCS#11: the token made {uri} extractable; refusing it")
    return signer


def _generate(pool: _TokenPool, p11: Any, uri: Pkcs11Uri, alg: int) -> None:
    assert pool._slot is not None
    label_only = replace(uri, id=None)
    try:
        session = pool.module.lib.openSession(
            pool._slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION
        )
    except p11.PyKCS11Error as e:
        raise TokenUnavailableError(f"PKCS#11 C_OpenSession failed ({e})") from None
    try:
        for check in (label_only, replace(uri, object=None)):
            for cls in (p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY):
                if session.findObjects(_template(p11, cls, check)):
                    raise ConfigurationError(f"PKCS#11: a key already exists at {check}")
        if alg == ALG_EDDSA:
            key_type, params = p11.CKK_EC_EDWARDS, _ED25519_PARAMS[0]
            mechanism = p11.CKM_EC_EDWARDS_KEY_PAIR_GEN
        else:
            key_type, params, mechanism = p11.CKK_EC, _P256_PARAMS, p11.CKM_EC_KEY_PAIR_GEN
        common = [(p11.CKA_KEY_TYPE, key_type), (p11.CKA_TOKEN, True),
                  (p11.CKA_LABEL, uri.object), (p11.CKA_ID, uri.id)]  # fmt: skip
        public = [(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), *common, (p11.CKA_PRIVATE, False),
                  (p11.CKA_VERIFY, True), (p11.CKA_EC_PARAMS, params)]  # fmt: skip
        private = [(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), *common, (p11.CKA_PRIVATE, True),
                   (p11.CKA_SENSITIVE, True), (p11.CKA_EXTRACTABLE, False),
                   (p11.CKA_SIGN, True), (p11.CKA_DERIVE, False)]  # fmt: skip
        try:
            session.generateKeyPair(public, private, p11.Mechanism(mechanism, None))
        except p11.PyKCS11Error as e:
            raise ConfigurationError(f"PKCS#11 C_GenerateKeyPair failed ({e})") from None
    finally:
        with contextlib.suppress(p11.PyKCS11Error):
            session.closeSession()
