"""The OSV API source (safepip.audit.online) against an OSV API served on loopback."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.utils import canonicalize_name

from safepip.audit import AuditError, AuditOptions, audit_packages
from safepip.audit.online import PRIVATE_REASON

if TYPE_CHECKING:
    from collections.abc import Iterator

DATA = Path(__file__).parent / "data" / "advisories" / "pypa-2026-07-23"
TODAY = dt.date(2026, 11, 22)


@dataclass
class FakeOsv:
    """Records by id; answers queries by `versions` list membership, as OSV's index does."""

    url: str = ""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    page_size: int = 100
    fail: bool = False

    def query(self, q: dict[str, Any]) -> dict[str, Any]:
        name = canonicalize_name(q["package"]["name"])
        hits = [
            {"id": rid, "modified": r["modified"]}
            for rid, r in sorted(self.records.items())
            for a in r["affected"]
            if canonicalize_name(a["package"]["name"]) == name
            and q["version"] in a.get("versions", [])
        ]
        start = int(q.get("page_token", 0))
        page = hits[start : start + self.page_size]
        out: dict[str, Any] = {"vulns": page} if page else {}
        if start + self.page_size < len(hits):
            out["next_page_token"] = str(start + self.page_size)
        return out


@pytest.fixture
def osv() -> Iterator[FakeOsv]:
    fake = FakeOsv(records={p.stem: json.loads(p.read_text("utf-8")) for p in DATA.glob("*.json")})

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.bodies.append(body)
            if fake.fail or self.path != "/v1/querybatch":
                self._send(500 if fake.fail else 404, {"error": "no"})
                return
            self._send(200, {"results": [fake.query(q) for q in body["queries"]]})

        def do_GET(self) -> None:
            rid = self.path.removeprefix("/v1/vulns/")
            fake.fetched.append(rid)
            if rid in fake.records:
                self._send(200, fake.records[rid])
            else:
                self._send(404, {"code": 5})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def run(osv: FakeOsv, *specs: str, **kwargs: Any) -> Any:
    packages = [(canonicalize_name(s.split("==")[0]), s.split("==")[1]) for s in specs]
    options = AuditOptions(source="osv", osv_url=osv.url, today=TODAY)
    return audit_packages(packages, options, **kwargs)


def test_querybatch_then_records(osv: FakeOsv) -> None:
    report = run(osv, "jinja2==2.10", "requests==2.32.3")
    jinja = next(p for p in report.packages if p.name == "jinja2")
    assert [v.id for v in jinja.vulns][:2] == ["PYSEC-2019-217", "PYSEC-2021-66"]
    assert jinja.vulns[0].smallest_fix == "2.10.1"
    assert report.source == f"OSV API `{osv.url}`"
    assert report.data_date == TODAY
    assert osv.bodies[0] == {
        "queries": [
            {"package": {"name": "jinja2", "ecosystem": "PyPI"}, "version": "2.10"},
            {"package": {"name": "requests", "ecosystem": "PyPI"}, "version": "2.32.3"},
        ]
    }
    assert sorted(osv.fetched) == sorted(set(osv.fetched))


def test_pagination_follows_next_page_token(osv: FakeOsv) -> None:
    osv.page_size = 2
    report = run(osv, "jinja2==2.10")
    assert len(report.packages[0].vulns) == 6
    assert len(osv.bodies) == 3


def test_withdrawn_records_from_the_server_are_dropped(osv: FakeOsv) -> None:
    report = run(osv, "distributed==1.0.0")
    assert [v.id for v in report.packages[0].vulns] == ["PYSEC-2021-871"]


def test_private_names_are_never_sent(osv: FakeOsv) -> None:
    secret = canonicalize_name("internal-secret-pkg")
    report = run(osv, "internal-secret-pkg==1.0", "jw.util==2.0", private_names=frozenset({secret}))
    assert report.skipped[0].name == secret
    assert report.skipped[0].reason == PRIVATE_REASON
    assert "internal-secret-pkg" not in json.dumps(osv.bodies)


def test_only_private_names_sends_nothing(osv: FakeOsv) -> None:
    secret = canonicalize_name("internal")
    report = run(osv, "internal==1.0", private_names=frozenset({secret}))
    assert osv.bodies == []
    assert len(report.skipped) == 1


def test_error_server_failure_is_an_audit_error(osv: FakeOsv) -> None:
    osv.fail = True
    with pytest.raises(AuditError) as info:
        run(osv, "jinja2==2.10")
    assert info.value.exit_code == 1
    assert str(info.value) == f"The OSV API at `{osv.url}/v1/querybatch` answered HTTP 500"


def test_error_unreachable_server() -> None:
    options = AuditOptions(source="osv", osv_url="http://127.0.0.1:9", today=TODAY)
    with pytest.raises(
        AuditError, match=r"^Could not query the OSV API at `http://127\.0\.0\.1:9`"
    ):
        audit_packages([(canonicalize_name("a"), "1.0")], options)
