"""``staycheck demo``: the whole product path on embedded sample data, in one process.

The health authority makes a TUF repository with two departments, each publishing its own
sample risk areas; a real gRPC server on a free loopback port follows it; a clean and a
risky itinerary are submitted; both presentations are written as QR images, scanned back
and verified offline against the server's published keys, with the identity checked
against the binding; the risky one is submitted again through an Oblivious HTTP relay; a
tampered token is refused. Everything lives in a temporary folder
removed at the end (``--keep DIR`` keeps the repository there).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
import tempfile
import time

import cbor2
from staycheck.cli import samples
from staycheck.cli.repository import AuthorityRepository
from staycheck.client.client import StayCheckClient
from staycheck.client.qr import draw_qr, read_qr, write_qr
from staycheck.geo.bundle import Policy
from staycheck.geo.errors import SignedDataError
from staycheck.geo.itinerary import Status
from staycheck.trust import cose
from staycheck.trust.base45 import b45encode
from staycheck.trust.keys import VerdictKeySet
from staycheck.trust.presentation import read_presentation
from staycheck.trust.verdict import TOKEN_PREFIX, decode_token
from staycheck.trust.verifier import NO_BINDING_CHECK, SubjectId, reason, verify_token

DEMO_ID = "11010519491231002X"  # a made-up resident ID number; it never leaves the client


def _say(text: str) -> None:
    print(text, flush=True)


def _relabel_as_clean(token: str) -> str:
    """What a forger would try: rewrite the status claim, keep the signature."""
    sign1, verdict = decode_token(token)
    claims = dataclasses.replace(verdict, status=Status.NO_ABNORMALITY).claims()
    forged = cose.encode_sign1(sign1.protected_bytes, cbor2.dumps(claims), sign1.signature)
    return TOKEN_PREFIX + b45encode(forged)


def _oblivious(gateway_port: int, stays: list[dict[str, object]], keys: VerdictKeySet) -> bool:
    """Through a relay (in this process here; in production someone else's): the relay
    sees sealed bytes, the gateway the itinerary and the relay's address."""
    from google.protobuf import json_format
    from staycheck.client.oblivious import KEYS_PATH, ObliviousClient, load_key_configs
    from staycheck.server.relay import RelayInThread
    from staycheck.v1 import verification_pb2 as pb

    gateway = f"http://127.0.0.1:{gateway_port}/"
    with RelayInThread("127.0.0.1:0", gateway) as relay_port:
        configs = load_key_configs(f"http://127.0.0.1:{gateway_port}{KEYS_PATH}")
        client = ObliviousClient(f"http://127.0.0.1:{relay_port}/", configs)
        key_id, suite = client.suite
        itinerary = json_format.Parse(json.dumps({"stays": stays}), pb.Itinerary())
        submitted = client.submit_for(itinerary, subject_id=DEMO_ID)
    aead = "ChaCha20-Poly1305" if suite.aead_id == 3 else "AES-GCM"
    _say(f"   sealed for gateway key {key_id} (X25519, HKDF-SHA256, {aead}):")
    _say("   the relay saw only ciphertext, the gateway only the relay's address")
    scanned = read_presentation(submitted.presentation)
    verdict = verify_token(
        scanned.token, keys, now=int(time.time()), identity=SubjectId(DEMO_ID, scanned.salt)
    )
    _say(f"   verdict: {verdict.status.name} ({verdict.status.label_zh}), verified offline")
    return verdict.status is Status.REVIEW_REQUIRED


def run_demo(*, keep: pathlib.Path | None = None) -> int:
    from google.protobuf import json_format
    from staycheck.server.app import StayCheckServer
    from staycheck.server.config import ServerConfig
    from staycheck.v1 import verification_pb2 as pb

    now = int(time.time())
    day, hour = 86400, 3600
    c = samples.cities()
    with tempfile.TemporaryDirectory(prefix="staycheck-demo-") as tmp:
        root = pathlib.Path(tmp)
        _say("1. The health authority makes its TUF repository: root (2 of 3 offline keys),")
        _say("   its targets role with the policy, one role per department, an online key")
        authority = AuthorityRepository(root / "authority")
        authority.create(now=now, policy=Policy())
        areas = samples.demo_areas(now)
        by_department = {"police": areas["features"][:1], "health": areas["features"][1:]}
        for name, features in by_department.items():
            authority.add_department(name, now=now)
            authority.publish_areas(
                name, {"type": "FeatureCollection", "features": features}, now=now
            )
            for f in features:
                p = f["properties"]
                _say(
                    f"   {name}: {p['id']}: {p['level']:6} area in "
                    f"{c[p['city_code']].name_en} ({p['city_code']})"
                )
        (root / "root.json").write_bytes(authority.trusted_root())

        _say("2. A StayCheck server for Beijing (issuer 110000) follows the repository")
        server = StayCheckServer(
            ServerConfig(
                listen="127.0.0.1:0",
                repository=str(authority.published),
                trusted_root_path=root / "root.json",
                state_dir=root / "state",
                issuer="110000",
                ohttp_listen="127.0.0.1:0",
            )
        )
        port = server.start()
        if server.bundles.current is None:
            _say("   ERROR: the server refused the repository")
            server.stop(grace=0)
            return 1
        _say(
            f"   serving on 127.0.0.1:{port}, repository snapshot version "
            f"{server.bundles.current.version}, {server.bundles.current.area_count} areas"
        )
        try:
            with StayCheckClient(f"127.0.0.1:{port}") as client:
                keys = client.verdict_keys()
                bj, tj = c["110100"], c["120100"]
                cases = [
                    ("14 days in Beijing", [samples.stay_json(bj, now - 14 * day, now)]),
                    (
                        "6 h in the Tianjin high-risk area three days ago",
                        [
                            samples.stay_json(bj, now - 14 * day, now - 3 * day - 6 * hour),
                            samples.stay_json(tj, now - 3 * day - 6 * hour, now - 3 * day),
                        ],
                    ),
                ]
                tokens = []
                for n, (title, stays) in enumerate(cases, start=3):
                    _say(f"{n}. A traveller submits: {title}")
                    itinerary = json_format.Parse(json.dumps({"stays": stays}), pb.Itinerary())
                    submitted = client.submit_for(itinerary, subject_id=DEMO_ID)
                    status = Status(submitted.response.status)
                    qr = submitted.qr()
                    _say(
                        f"   verdict: {status.name} ({status.label_zh}); presentation "
                        f"{len(submitted.presentation)} chars, QR version {qr.version}-{qr.error}"
                    )
                    image = root / f"verdict-{n}.png"
                    write_qr(submitted.presentation, image)
                    if n == 3:
                        draw_qr(submitted.presentation, sys.stdout)
                    # The hotel scans the QR and checks the ID card of the person showing it.
                    scanned = read_presentation(read_qr(image))
                    verdict = verify_token(
                        scanned.token,
                        keys,
                        now=int(time.time()),
                        identity=SubjectId(DEMO_ID, scanned.salt),
                    )
                    _say(
                        f"   the hotel scans the QR and verifies offline: "
                        f"{verdict.status.label_zh}, issuer {verdict.issuer}, "
                        f"binding: checked, risk areas v{verdict.riskset_version}"
                    )
                    tokens.append(submitted.response.token)

                _say("5. A traveller who does not want the server to see their address submits")
                _say("   the same trip through an Oblivious HTTP relay (RFC 9458)")
                if not _oblivious(server.ohttp_port, cases[1][1], keys):
                    return 1

                _say("6. Someone alters a review-required token to look clean")
                forged = _relabel_as_clean(tokens[1])
                _say("   (status claim rewritten to NO_ABNORMALITY, signature kept)")
                try:
                    verify_token(forged, keys, now=int(time.time()), identity=NO_BINDING_CHECK)
                except SignedDataError as e:
                    _say(f"   rejected: {reason(e)} ({e})")
                else:
                    _say("   ERROR: the tampered token was accepted")
                    return 1
        finally:
            server.stop(grace=1)
        if keep is not None:
            shutil.copytree(authority.workspace, keep, dirs_exist_ok=True)
    _say("Done: nothing of either itinerary was kept by the server.")
    if keep is not None:
        _say(f"The repository workspace is in {keep} (its keys are throwaway demo keys).")
    return 0
