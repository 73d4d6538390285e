"""What an operator sees of the repository on ``/metrics`` (scraped over loopback HTTP from
a real in-process server): refreshes by outcome, the version of every role trusted, and the
age of the timestamp in use, which grows when the repository stops moving."""

from __future__ import annotations

import re
import urllib.request

from tests.helpers import HOUR, risk_areas, running_server, spec_areas


def scrape(s) -> dict[str, float]:
    """``name{labels}`` -> value, from the server's metrics endpoint."""
    url = f"http://127.0.0.1:{s.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(staycheck_repository_\w+(?:\{[^}]*\})?) (\S+)", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


def test_refresh_outcomes_role_versions_and_timestamp_age(tmp_path, clock):
    with running_server(tmp_path, spec_areas(), clock=clock, metrics_listen="127.0.0.1:0") as s:
        m = scrape(s)
        # The start-up refresh took the set.
        assert m['staycheck_repository_refreshes_total{outcome="accepted"}'] == 1
        roles = {r.name: r.version for r in s.repository.roles()}
        for role in ("root", "timestamp", "snapshot", "targets", "health"):
            assert m[f'staycheck_repository_role_version{{role="{role}"}}'] == roles[role]
        assert m["staycheck_repository_timestamp_age_seconds"] == 0
        assert m["staycheck_repository_last_success_timestamp_seconds"] == clock.now

        # Nothing new for an hour: the same timestamp ages, a refresh finds it unchanged.
        clock.advance(HOUR)
        assert s.server.reload_now().reason == "unchanged"
        m = scrape(s)
        assert m['staycheck_repository_refreshes_total{outcome="unchanged"}'] == 1
        assert m["staycheck_repository_timestamp_age_seconds"] == HOUR
        assert m["staycheck_repository_last_success_timestamp_seconds"] == clock.now

        # A publication: a new timestamp, the department's role one version up.
        assert s.publish(risk_areas([])).accepted
        m = scrape(s)
        assert m['staycheck_repository_refreshes_total{outcome="accepted"}'] == 2
        assert m["staycheck_repository_timestamp_age_seconds"] == 0
        assert m['staycheck_repository_role_version{role="health"}'] == roles["health"] + 1

        # A broken timestamp on the web server: counted by its reason, versions kept.
        (s.files.served / "metadata" / "timestamp.json").write_bytes(b"{}")
        clock.advance(60)
        assert not s.server.reload_now().accepted
        m = scrape(s)
        refused = {
            k: v
            for k, v in m.items()
            if k.startswith("staycheck_repository_refreshes_total")
            and "accepted" not in k
            and "unchanged" not in k
        }
        assert list(refused.values()) == [1]
        assert m['staycheck_repository_role_version{role="health"}'] == roles["health"] + 1
        assert m["staycheck_repository_timestamp_age_seconds"] == 60
