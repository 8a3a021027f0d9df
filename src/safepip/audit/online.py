"""The OSV API as an advisory source: `POST /v1/querybatch`, then `GET /v1/vulns/{id}`.

Packages whose names came from a non-default index are never sent: their names alone can leak
what a private index holds. They are reported as skipped instead.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from safepip.audit import AuditError, Package
from safepip.audit.osv import Match, affects, match_advisory, parse_record, sort_versions
from safepip.net import NetConfig, NetworkError, Session
from safepip.policy import HostPolicy, PolicyViolation
from safepip.urls import redact_url

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Sequence

    from packaging.utils import NormalizedName

    from safepip.audit.osv import Advisory

BATCH_SIZE = 1000
PRIVATE_REASON = "comes from a private index; its name is not sent to a public service"


class OsvApiError(AuditError):
    """The OSV API could not be queried or answered nonsense."""

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(
            message,
            hint=hint or "check the network or `--osv-url`, or audit offline with `--source local`",
        )
        self.url = url


def _post_json(session: Session, url: str, payload: object) -> Any:
    """POST `payload` as JSON through the session (policy-checked, retried, no redirects)."""

    try:
        response = session.post_json(url, payload, purpose="an advisory query")
    except NetworkError as exc:
        if exc.status is None:
            raise
        raise OsvApiError(
            f"The OSV API at `{redact_url(url)}` answered HTTP {exc.status}",
            url=redact_url(url),
        ) from exc
    return _decode(response.content, url)


def _decode(content: bytes, url: str) -> Any:

    try:
        return json.loads(content)
    except ValueError as exc:
        raise OsvApiError(
            f"The OSV API at `{redact_url(url)}` did not answer JSON", url=redact_url(url)
        ) from exc


class OsvApiSource:
    """Advisories from an OSV API server (`https://api.osv.dev` or a private mirror)."""

    def __init__(
        self,
        *,
        base_url: str,
        session_factory: Callable[[], Session] | None,
        private_names: frozenset[NormalizedName],
        today: dt.date,
    ) -> None:

        self.base_url = base_url.rstrip("/")
        self._session_factory = session_factory
        self.private_names = private_names
        self.data_date: dt.date | None = today
        self.shown_url = redact_url(self.base_url)
        self.description = f"OSV API `{self.shown_url}`"
        self.warnings: tuple[str, ...] = ()

    def _session(self) -> Session:
        if self._session_factory is not None:
            return self._session_factory()

        return Session(NetConfig(policy=HostPolicy().with_hosts(self.base_url)))

    def affects(self, advisory: Advisory, name: NormalizedName, version: str) -> bool:
        return affects(advisory, name, version)

    def find(self, packages: Sequence[Package]) -> dict[Package, list[Match] | str]:

        result: dict[Package, list[Match] | str] = {}
        public = []
        for package in packages:
            if package[0] in self.private_names:
                result[package] = PRIVATE_REASON
            else:
                public.append(package)
        if not public:
            return result
        session = self._session()
        try:
            ids = self._query(session, public)
            records = self._fetch(session, sorted({i for found in ids.values() for i in found}))
        except (NetworkError, PolicyViolation) as exc:
            raise OsvApiError(
                f"Could not query the OSV API at `{self.shown_url}`: {exc.message}",
                url=self.base_url,
                hint=exc.hint,
            ) from exc
        finally:
            if self._session_factory is None:
                session.close()
        for package in public:
            result[package] = [
                _match_reported(records[i], package)
                for i in ids.get(package, [])
                if not records[i].withdrawn
            ]
        return result

    def _query(self, session: Session, packages: list[Package]) -> dict[Package, list[str]]:
        url = f"{self.base_url}/v1/querybatch"
        found: dict[Package, list[str]] = {}
        pending: list[tuple[Package, str | None]] = [(p, None) for p in packages]
        while pending:
            batch, pending = pending[:BATCH_SIZE], pending[BATCH_SIZE:]
            queries = []
            for (name, version), token in batch:
                query: dict[str, Any] = {
                    "package": {"name": name, "ecosystem": "PyPI"},
                    "version": version,
                }
                if token:
                    query["page_token"] = token
                queries.append(query)
            answer = _post_json(session, url, {"queries": queries})
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(batch):
                raise OsvApiError(
                    f"The OSV API at `{url}` answered {len(batch)} queries with "
                    f"{len(results) if isinstance(results, list) else 'no'} results",
                    url=url,
                )
            for (package, _), item in zip(batch, results, strict=True):
                vulns = (item or {}).get("vulns") or []
                found.setdefault(package, []).extend(
                    str(v["id"]) for v in vulns if isinstance(v, dict) and v.get("id")
                )
                token = (item or {}).get("next_page_token")
                if token:
                    pending.append((package, str(token)))
        return {p: list(dict.fromkeys(ids)) for p, ids in found.items()}

    def _fetch(self, session: Session, ids: list[str]) -> dict[str, Advisory]:

        def one(vuln_id: str) -> Advisory:
            url = f"{self.base_url}/v1/vulns/{quote(vuln_id, safe='')}"
            response = session.get(url, purpose="an advisory record")
            record = _decode(response.content, url)
            try:
                return parse_record(record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise OsvApiError(
                    f"The OSV API at `{url}` answered a record that is not OSV JSON", url=url
                ) from exc

        if len(ids) <= 1:
            return {i: one(i) for i in ids}
        with ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:
            return dict(zip(ids, pool.map(one, ids), strict=True))


def _match_reported(advisory: Advisory, package: Package) -> Match:
    """OSV said `advisory` affects `package`; our own evaluation supplies the fix versions.

    When our rules disagree (OSV knows more ecosystems' quirks than we do), the finding is kept:
    the server's answer is authoritative, and its fixes are every `fixed` event for the package.
    """

    name, version = package
    match = match_advisory(advisory, name, version)
    if match is not None:
        return match
    fixes = {
        value
        for entry in advisory.affected
        if entry.name == name
        for rng in entry.ranges
        for kind, value in rng
        if kind == "fixed"
    }
    return Match(advisory=advisory, fix_versions=sort_versions(fixes))
