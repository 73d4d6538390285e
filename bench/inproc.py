"""In-process throughput on one thread: match + sign, offline verification, raw Ed25519;
match + sign and raw signs with the verdict key on a SoftHSM2 token beside the key file;
the Oblivious HTTP gateway's own encapsulation work per request, per KDF/AEAD pair.

Rates are calls per second of this thread's own CPU time (``time.thread_time``), so they
are "per core" figures and depend little on what else the machine runs. Each subject is
measured in several short rounds interleaved with its baseline; the median round of each
is the figure, the best is kept too.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.itinerary import DEFAULT_LIMITS, Status, validate
from staycheck.geo.matching import evaluate, evaluate_batch
from staycheck.server.binding_input import read_binding
from staycheck.trust import cose
from staycheck.trust.binding import DEFAULT_PARAMETERS
from staycheck.trust.keys import Ed25519Signer, KeySet, Signer, VerdictKeySet
from staycheck.trust.verdict import TokenSigner, issue_verdict
from staycheck.trust.verifier import SubjectBinding, verify_token
from staycheck.v1 import verification_pb2 as pb

from bench.stats import median

ISSUER = "110000"


def stays_from_proto(itinerary: pb.Itinerary) -> Any:
    from staycheck.server.service import stays_from_proto as convert

    return convert(itinerary, limits=DEFAULT_LIMITS)


@dataclass
class Rate:
    per_s: float
    """Calls per second of thread CPU time (median round)."""
    best_per_s: float
    calls: int
    cpu_s: float
    rounds: list[float]


def _round(
    fn: Callable[[Any], object], items: Sequence[Any], seconds: float, weight: int = 1
) -> tuple[int, float]:
    """Call ``fn`` over ``items`` (cycling) for about ``seconds`` of thread CPU; each call
    counts as ``weight`` (the items of a chunk)."""
    it = itertools.cycle(items)
    calls = 0
    t0 = time.thread_time()
    deadline = t0 + seconds
    wall_deadline = time.monotonic() + 4 * seconds + 1
    while True:
        for _ in range(64):
            fn(next(it))
        calls += 64 * weight
        now = time.thread_time()
        if now >= deadline or time.monotonic() >= wall_deadline or calls >= 50_000_000:
            return calls, now - t0


def compare(
    subject: tuple[Callable[[Any], object], Sequence[Any]],
    baseline: tuple[Callable[[Any], object], Sequence[Any]],
    *,
    rounds: int,
    seconds: float,
    weights: tuple[int, int] = (1, 1),
) -> tuple[Rate, Rate]:
    """Interleaved rounds of subject and baseline; median and best rate of each. A call of
    the subject (baseline) counts as ``weights[0]`` (``[1]``) calls: a chunk of that many
    items."""
    results: list[list[tuple[int, float]]] = [[], []]
    for (fn, items), weight in zip((subject, baseline), weights, strict=True):  # warm-up
        _round(fn, items, min(0.1, seconds), weight)
    for _ in range(rounds):
        for k, (fn, items) in enumerate((subject, baseline)):
            results[k].append(_round(fn, items, seconds, weights[k]))
    out = []
    for rs in results:
        rates = [c / t for c, t in rs if t > 0]
        out.append(
            Rate(median(rates), max(rates), sum(c for c, _ in rs), sum(t for _, t in rs), rates)
        )
    return out[0], out[1]


def _sign_inputs(n: int) -> list[bytes]:
    """Sig_structures the size of a verdict's (about 120 bytes)."""
    protected = cose.encode_protected({cose.HEADER_ALG: cose.ALG_EDDSA, cose.HEADER_KID: b"k" * 8})
    return [cose.sig_structure(protected, secrets.token_bytes(96)) for _ in range(n)]


CHUNK = 64
"""Items per chunk in figure 3's in-process rates: what the partner client sends a message."""


def match_and_sign(
    bundle: RiskAreaBundle,
    requests: Sequence[pb.SubmitItineraryRequest],
    *,
    now: int,
    rounds: int,
    seconds: float,
    hsm_signer: Signer | None = None,
) -> dict[str, Rate]:
    """Figure 3 (in-process stand-in for the partner batch stream), per item:

    - ``match_sign``: chunks of :data:`CHUNK` already converted itineraries matched by one
      ``evaluate_batch``, then ``issue_verdict`` + ``TokenSigner.sign`` for each;
    - ``match_sign_single``: the same one itinerary at a time (``evaluate``), in rounds
      interleaved with ``match_sign_chunked`` (``match_sign`` again): what batching gains;
    - ``full_item``: the whole per-item work of a chunk without gRPC, as
      ``VerdictCore.submit_many`` does it: parse each request's bytes, convert and validate
      its stays, one ``evaluate_batch`` for the chunk, issue, sign, serialize each response;
    - ``raw_sign``: bare Ed25519 signs of verdict-sized inputs (the ceiling).

    With ``hsm_signer`` (a key on a SoftHSM2 token, issue 12), also ``match_sign_hsm`` (the
    chunked work signing through PKCS#11) in rounds interleaved with ``match_sign_file``
    (the key file again, so the pair shares the machine's state), and ``raw_sign_hsm``
    (bare signs through PKCS#11) beside ``raw_sign_file``. The token's work runs in this
    thread (SoftHSM2 is a library), so thread CPU counts it.
    """
    file_signer = Ed25519Signer.generate()
    token_signer = TokenSigner(file_signer)
    raw_key = Ed25519PrivateKey.generate()
    items = [(stays_from_proto(r.itinerary), r.subject_binding) for r in requests]
    chunks = [items[k : k + CHUNK] for k in range(0, len(items) - CHUNK + 1, CHUNK)]
    raw_chunks = [
        [r.SerializeToString() for r in requests[k : k + CHUNK]]
        for k in range(0, len(requests) - CHUNK + 1, CHUNK)
    ]

    def signed(signer: TokenSigner, status: Status, binding: bytes, params: Any) -> str:
        verdict = issue_verdict(
            status,
            now=now,
            issuer=ISSUER,
            riskset_version=bundle.version,
            bundle_expires_at=bundle.expires_at,
            binding=binding,
            binding_params=params,
        )
        return signer.sign(verdict)

    def chunked(signer: TokenSigner) -> Callable[[list[tuple[Any, bytes]]], list[str]]:
        def run(chunk: list[tuple[Any, bytes]]) -> list[str]:
            statuses = evaluate_batch([stays for stays, _ in chunk], bundle, now=now)
            return [
                signed(signer, status, binding, DEFAULT_PARAMETERS if binding else None)
                for (_, binding), status in zip(chunk, statuses, strict=True)
            ]

        return run

    def single(item: tuple[Any, bytes]) -> str:
        stays, binding = item
        status = evaluate(stays, bundle, now=now)
        return signed(token_signer, status, binding, DEFAULT_PARAMETERS if binding else None)

    def full(raws: list[bytes]) -> list[bytes]:
        reqs = [pb.SubmitItineraryRequest.FromString(raw) for raw in raws]
        accepted = []
        for req in reqs:
            stays = stays_from_proto(req.itinerary)
            validate(stays, now=now, limits=DEFAULT_LIMITS)
            accepted.append((stays, *read_binding(req)))
        statuses = evaluate_batch([stays for stays, _, _ in accepted], bundle, now=now)
        out = []
        for (_, binding, params), status in zip(accepted, statuses, strict=True):
            token = signed(token_signer, status, binding, params)
            response = pb.SubmitItineraryResponse(
                status=pb.VerdictStatus.ValueType(status),
                token=token,
                riskset_version=bundle.version,
            )
            out.append(response.SerializeToString())
        return out

    batch = chunked(token_signer)
    sign_inputs = _sign_inputs(64)
    raw = (raw_key.sign, sign_inputs)
    per_chunk = (CHUNK, 1)
    ms, raw_rate = compare((batch, chunks), raw, rounds=rounds, seconds=seconds, weights=per_chunk)
    fi, _ = compare((full, raw_chunks), raw, rounds=1, seconds=seconds, weights=per_chunk)
    ones, again = compare(
        (single, items), (batch, chunks), rounds=rounds, seconds=seconds, weights=(1, CHUNK)
    )
    out = {
        "match_sign": ms,
        "match_sign_single": ones,
        "match_sign_chunked": again,
        "full_item": fi,
        "raw_sign": raw_rate,
    }
    if hsm_signer is not None:
        batch_hsm = chunked(TokenSigner(hsm_signer))
        out["match_sign_hsm"], out["match_sign_file"] = compare(
            (batch_hsm, chunks),
            (batch, chunks),
            rounds=rounds,
            seconds=seconds,
            weights=(CHUNK, CHUNK),
        )
        out["raw_sign_hsm"], out["raw_sign_file"] = compare(
            (hsm_signer.sign, sign_inputs),
            (file_signer.sign, sign_inputs),
            rounds=rounds,
            seconds=seconds,
        )
    return out


def verify_rates(*, now: int, rounds: int, seconds: float, tokens: int = 64) -> dict[str, Rate]:
    """Figure 4: ``verify_token`` (with binding and minimum-version checks) vs bare
    ``Ed25519PublicKey.verify`` over the same tokens' signed bytes."""
    signer = Ed25519Signer.generate()
    token_signer = TokenSigner(signer)
    keys = VerdictKeySet(KeySet([signer.public_key], issuer=ISSUER))
    cases = []
    raw_cases = []
    from staycheck.trust.verdict import decode_token

    for k in range(tokens):
        binding = secrets.token_bytes(32)
        verdict = issue_verdict(
            Status.NO_ABNORMALITY if k % 3 else Status.REVIEW_REQUIRED,
            now=now,
            issuer=ISSUER,
            riskset_version=7,
            bundle_expires_at=now + 86400,
            binding=binding,
            binding_params=DEFAULT_PARAMETERS,
        )
        token = token_signer.sign(verdict)
        cases.append((token, binding))
        sign1, _ = decode_token(token)
        raw_cases.append((sign1.signature, sign1.to_be_signed()))
    public = signer.public_key.key
    assert isinstance(public, Ed25519PublicKey)

    def verify(case: tuple[str, bytes]) -> object:
        return verify_token(
            case[0], keys, now=now, identity=SubjectBinding(case[1]), min_riskset_version=7
        )

    def raw_verify(case: tuple[bytes, bytes]) -> None:
        public.verify(case[0], case[1])

    v, r = compare((verify, cases), (raw_verify, raw_cases), rounds=rounds, seconds=seconds)
    return {"verify_token": v, "raw_verify": r}


def binding_guesses(*, rounds: int, seconds: float) -> dict[str, Any]:
    """Figure 7: what one core of an attacker holding a presentation (token and salt) can
    try per second: the binding as it is derived now (Argon2id, default parameters) beside
    the HMAC-SHA256 binding it replaced, over the same candidate ID numbers.

    Per core means per second of *process* CPU: OpenSSL's Argon2id runs its lanes on
    threads of its own, which a thread clock would not count. The wall time of one
    derivation (a hotel's check) is reported beside it."""
    import hashlib
    import hmac

    from staycheck.trust.binding import compute_binding

    salt = secrets.token_bytes(16)
    candidates = itertools.cycle(f"11010519491231{k:04d}" for k in range(64))

    def argon2id() -> object:
        return compute_binding(next(candidates), salt)

    def hmac_sha256() -> object:
        return hmac.new(salt, next(candidates).encode(), hashlib.sha256).digest()

    def one_round(fn: Callable[[], object]) -> tuple[float, float]:
        calls, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
        while time.process_time() - cpu0 < seconds:
            fn()
            calls += 1
        return calls / (time.process_time() - cpu0), (time.perf_counter() - wall0) / calls

    out: dict[str, Any] = {}
    for name, fn in (("argon2id", argon2id), ("hmac_sha256", hmac_sha256)):
        fn()  # warm-up
        results = [one_round(fn) for _ in range(rounds)]
        out[name] = {
            "per_s": median([r[0] for r in results]),
            "wall_s": median([r[1] for r in results]),
            "rounds": [r[0] for r in results],
        }
    return out


def gateway_encapsulation(
    suites: Sequence[Any],
    inner_request: bytes,
    inner_response: bytes,
    *,
    rounds: int,
    seconds: float,
    requests: int = 64,
) -> dict[str, dict[str, Rate]]:
    """Figure 8's in-process part: per KDF/AEAD pair of ``suites``
    (``staycheck.client.ohttp.SymmetricSuite``), what the gateway's encapsulation costs for
    one request: ``GatewayKeys.decapsulate_request`` of an Encapsulated Request of
    ``inner_request`` (HPKE's X25519 decapsulation, key schedule and AEAD open) and
    ``ResponseContext.encapsulate_response`` of ``inner_response`` (export, HKDF, AEAD
    seal), beside one raw Ed25519 sign of a verdict-sized input (rounds interleaved). The
    requests are sealed beforehand, ``requests`` of them with fresh ephemeral keys, as
    clients send them. Keyed by ``"KDF/AEAD"`` ids in hex (``"0x0001/0x0003"``)."""
    from staycheck.client.ohttp import GatewayKey, GatewayKeys, encapsulate_request

    key = GatewayKey.generate(1, symmetric=tuple(suites))
    keys = GatewayKeys([key])
    raw_key = Ed25519PrivateKey.generate()
    sign_inputs = _sign_inputs(64)
    out: dict[str, dict[str, Rate]] = {}
    for suite in suites:
        sealed = [
            encapsulate_request(key.config, inner_request, suite=suite)[0] for _ in range(requests)
        ]

        def open_and_seal(enc_request: bytes) -> bytes:
            _, context = keys.decapsulate_request(enc_request)
            return context.encapsulate_response(inner_response)

        subject, baseline = compare(
            (open_and_seal, sealed),
            (raw_key.sign, sign_inputs),
            rounds=rounds,
            seconds=seconds,
        )
        out[f"0x{suite.kdf_id:04x}/0x{suite.aead_id:04x}"] = {
            "open_seal": subject,
            "raw_sign": baseline,
        }
    return out
