"""The resolver: data-driven scenarios on loopback indexes, the synthetic target, error texts."""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName

from safepip import gcstate, resolver
from safepip.fetch import Cache
from safepip.index import IndexClient
from safepip.net import NetConfig, Session
from safepip.plan import ResolutionError
from safepip.policy import HostPolicy, PolicyViolation
from safepip.requirements import parse_requirements
from safepip.resolver import resolve_requirements
from safepip.target import synthetic_target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import Cli
    from servers import StaticIndex
    from wheelbuild import WheelFactory

DATA = Path(__file__).parent / "data" / "resolver"
CASES = sorted(p.stem for p in (DATA / "cases").glob("*.json"))
DEFAULT_PLATFORM = "manylinux_2_17_x86_64"


def build_index(
    spec: dict[str, Any], index: StaticIndex, wheel_factory: WheelFactory
) -> StaticIndex:
    """Serve every project and version of a scenario index description on `index`."""
    for project, versions in spec["projects"].items():
        for version, info in versions.items():
            yanked = info.get("yanked", False)
            requires_python = info.get("requires_python")
            listed_python = requires_python if info.get("listing_requires_python", True) else None
            if info.get("wheel", True):
                for tag in info.get("tags", ["py3-none-any"]):
                    wheel = wheel_factory(
                        project,
                        version,
                        requires=info.get("requires", ()),
                        extras=info.get("extras"),
                        requires_python=requires_python,
                        tag=tag,
                    )
                    index.add(
                        wheel,
                        yanked=yanked,
                        requires_python=listed_python,
                        metadata=info.get("metadata", True),
                    )
            if info.get("sdist", False):
                index.add(wheel_factory.sdist(project, version), yanked=yanked)
    return index


@pytest.fixture
def scenario(
    static_index: Callable[..., StaticIndex],
    wheel_factory: WheelFactory,
    tmp_path: Path,
) -> Iterator[Callable[..., tuple[resolver.Resolution, list[StaticIndex]]]]:
    """`scenario(case_dict) -> (Resolution, indexes)`: serve the case's indexes and resolve."""
    sessions: list[Session] = []

    def run(case: dict[str, Any]) -> tuple[resolver.Resolution, list[StaticIndex]]:
        indexes = [
            build_index(
                json.loads((DATA / "indexes" / f"{name}.json").read_text("utf-8")),
                static_index(),
                wheel_factory,
            )
            for name in case["indexes"]
        ]
        constraints = tmp_path / "constraints.txt"
        constraints.write_text("\n".join(case.get("constraints", [])) + "\n", "utf-8")
        parsed = parse_requirements(
            lines=case["requirements"], constraints=[str(constraints)], cwd=tmp_path
        )
        hosts = frozenset(f"127.0.0.1:{i.port}" for i in indexes)
        session = Session(NetConfig(policy=HostPolicy(allowed_hosts=hosts), retries=0))
        sessions.append(session)
        target = synthetic_target(
            case.get("python_version", "3.11"), case.get("platforms", [DEFAULT_PLATFORM])
        )
        result = resolve_requirements(
            parsed.requirements,
            parsed.constraints,
            index=IndexClient(session, index_urls=[i.url for i in indexes]),
            target=target,
            pre=case.get("pre", False),
            preferred={NormalizedName(k): v for k, v in case.get("preferred", {}).items()},
            session=session,
            cache=Cache(tmp_path / "cache"),
        )
        return result, indexes

    yield run
    for session in sessions:
        session.close()


class TestScenarios:
    @pytest.mark.parametrize("name", CASES)
    def test_case(self, name: str, scenario: Callable[..., Any]) -> None:
        case = json.loads((DATA / "cases" / f"{name}.json").read_text("utf-8"))
        if "error" in case:
            expected = case["error"]
            with pytest.raises((ResolutionError, PolicyViolation)) as info:
                scenario(case)
            assert type(info.value).__name__ == expected["type"]
            for text in expected["contains"]:
                assert text in str(info.value)
            for text in expected.get("excludes", []):
                assert text not in str(info.value)
            if "hint" in expected:
                assert info.value.hint == expected["hint"]
            return
        result, _ = scenario(case)
        assert {p.name: p.version for p in result.pins} == case["resolved"]
        for text in case.get("warnings", []):
            assert any(text in w for w in result.warnings), result.warnings
        if case.get("no_warnings"):
            assert result.warnings == ()
        for name_, filename in case.get("wheel", {}).items():
            pin = next(p for p in result.pins if p.name == name_)
            assert pin.artifact.filename == filename


class TestResolution:
    def test_pins_carry_index_hashes_files_and_via(self, scenario: Callable[..., Any]) -> None:
        result, (index,) = scenario(
            {"indexes": ["releases"], "requirements": ["binary", "withsdist"]}
        )
        binary = next(p for p in result.pins if p.name == "binary")
        listed = {e.filename: e for e in index.projects[NormalizedName("binary")]}
        wheel = listed[binary.artifact.filename]
        assert binary.artifact.expected_hashes == frozenset({f"sha256:{wheel.sha256}"})
        assert binary.artifact.hash_source == "index"
        assert binary.requested
        assert binary.via == ("<command line>",)
        # Every file of the version (all platforms and the sdist), for locks.
        assert sorted(f.filename for f in result.files[NormalizedName("binary")]) == sorted(listed)
        assert len(result.files[NormalizedName("binary")]) == 4

    def test_via_and_dependencies(self, scenario: Callable[..., Any]) -> None:
        result, _ = scenario({"indexes": ["basic"], "requirements": ["ext[fast]", "a"]})
        by_name = {p.name: p for p in result.pins}
        assert by_name[NormalizedName("c")].via == ("a", "ext")
        assert not by_name[NormalizedName("c")].requested
        assert by_name[NormalizedName("ext")].extras == frozenset({"fast"})
        assert result.dependencies[NormalizedName("ext")] == ("c", "d")

    def test_each_page_and_metadata_fetched_once(self, scenario: Callable[..., Any]) -> None:
        _, (index,) = scenario({"indexes": ["basic"], "requirements": ["ext[all]", "a", "b<2"]})
        paths = index.paths_requested("GET")
        assert len(paths) == len(set(paths))
        assert "/simple/a/" in paths
        # Wheels are not downloaded when PEP 658 metadata is served.
        assert not [p for p in paths if p.endswith(".whl")]

    def test_metadata_from_wheel_downloads_it_into_the_cache(
        self, scenario: Callable[..., Any], tmp_path: Path
    ) -> None:
        _, (index,) = scenario({"indexes": ["releases"], "requirements": ["nometa"]})
        assert "/files/nometa-1.0-py3-none-any.whl" in index.paths_requested("GET")
        assert list((tmp_path / "cache" / "artifacts").rglob("nometa-1.0-py3-none-any.whl"))

    def test_wheels_without_metadata_files_cost_one_probe_and_none_once_cached(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory, tmp_path: Path
    ) -> None:
        """An index that serves no `.metadata` (and advertises none) is asked for one once per
        run; a wheel already in the cache is read without asking at all."""
        index = static_index()
        index.add(wheel_factory("top", "1.0", requires=["mid"]), metadata=False)
        index.add(wheel_factory("mid", "1.0", requires=["leaf"]), metadata=False)
        index.add(wheel_factory("leaf", "1.0"), metadata=False)
        results = []
        for _ in range(2):
            index.requests.clear()
            result = _resolve_on(index, ["top"], tmp_path)
            results.append([p.spec for p in result.pins])
            if len(results) == 1:
                probes = [p for p in index.paths_requested("GET") if p.endswith(".metadata")]
                assert len(probes) == 1
                assert len([p for p in index.paths_requested("GET") if p.endswith(".whl")]) == 3
        assert results == [["leaf==1.0", "mid==1.0", "top==1.0"]] * 2
        again = index.paths_requested("GET")
        assert not [p for p in again if p.endswith((".metadata", ".whl"))], again

    def test_dependencies_of_extras_asked_later_are_fetched_ahead(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory, tmp_path: Path
    ) -> None:
        """`b` met first and `b[x]` later: the pages `b[x]` adds are requested by the
        prefetcher, before the resolver asks for them."""
        index = static_index()
        index.add(wheel_factory("b", "1.0", extras={"x": ["c"]}))
        index.add(wheel_factory("c", "1.0"))
        policy = HostPolicy(allowed_hosts=frozenset({f"127.0.0.1:{index.port}"}))
        with Session(NetConfig(policy=policy, retries=0)) as session:
            prefetcher = _prefetcher(session, index, tmp_path)
            try:
                name = NormalizedName("b")
                prefetcher.want_project(name, SpecifierSet(), frozenset()).result()
                prefetcher.want_project(name, SpecifierSet(), frozenset({"x"})).result()
                deadline = time.monotonic() + 10
                while "/simple/c/" not in index.paths_requested("GET"):
                    assert time.monotonic() < deadline, index.paths_requested("GET")
                    time.sleep(0.01)
            finally:
                prefetcher.close()

    def _fan_out(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        *,
        answer_after: float,
    ) -> int:
        """Resolve `top`, which needs 12 projects, from a loopback index whose pages take
        `answer_after` seconds to come; the most pieces of work workers ran at once."""
        index = static_index()
        names = [f"dep{i}" for i in range(12)]
        index.add(wheel_factory("top", "1.0", requires=names))
        for name in names:
            index.add(wheel_factory(name, "1.0"))
        running, most = [0], [0]
        guard = threading.Lock()
        real_page = IndexClient.project_files
        real_run = resolver._Prefetcher._run

        def project_files(self: IndexClient, name: str) -> Any:
            time.sleep(answer_after)  # the index's answer on its way
            return real_page(self, name)

        def run(self: resolver._Prefetcher, future: Any) -> bool:
            if threading.current_thread() is threading.main_thread():
                return real_run(self, future)
            with guard:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                time.sleep(0.002)  # long enough for others to overlap
                return real_run(self, future)
            finally:
                with guard:
                    running[0] -= 1

        monkeypatch.setattr(IndexClient, "project_files", project_files)
        monkeypatch.setattr(resolver._Prefetcher, "_run", run)
        result = _resolve_on(index, ["top"], tmp_path)
        assert len(result.pins) == 13
        return most[0]

    def test_a_loopback_index_is_read_by_two_workers(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An index on this machine answers at once: the work is all the interpreter's, and
        more workers would only contend for its lock. (Waiting is told by the process's share
        of a core, which a busy test machine can lower: here by a share no process is under.)"""
        monkeypatch.setattr(resolver, "_IDLE_SHARE", 0.0)
        most = self._fan_out(static_index, wheel_factory, tmp_path, monkeypatch, answer_after=0)
        assert 1 <= most <= resolver._LOCAL_WORKERS

    def test_all_workers_when_a_loopback_index_makes_them_wait(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A local proxy of a remote index: its answers wait for the network, the process
        uses little CPU meanwhile, and every worker is used."""
        most = self._fan_out(static_index, wheel_factory, tmp_path, monkeypatch, answer_after=0.05)
        assert most > resolver._LOCAL_WORKERS

    @pytest.mark.parametrize(
        ("index_url", "find_links", "limit"),
        [
            ("http://127.0.0.1:8080/simple/", [], resolver._LOCAL_WORKERS),
            ("http://localhost/simple/", ["/some/folder", "file:///wheels/"], 2),
            ("https://pypi.org/simple/", [], resolver._PREFETCH_WORKERS),
            ("http://127.0.0.1/simple/", ["https://example.org/links/"], 16),
        ],
    )
    def test_workers_at_first(
        self, index_url: str, find_links: list[str], limit: int, tmp_path: Path
    ) -> None:
        policy = HostPolicy(allowed_hosts=frozenset({"127.0.0.1", "pypi.org"}))
        with Session(NetConfig(policy=policy, retries=0)) as session:
            prefetcher = resolver._Prefetcher(
                index=IndexClient(session, index_urls=[index_url], find_links=find_links),
                target=synthetic_target("3.11", [DEFAULT_PLATFORM]),
                session=session,
                cache=Cache(tmp_path / "cache"),
                pre=False,
                preferred={},
            )
            try:
                assert prefetcher._limit == limit
            finally:
                prefetcher.close()

    def test_a_page_the_resolver_needs_does_not_wait_behind_speculation(
        self,
        static_index: Callable[..., StaticIndex],
        wheel_factory: WheelFactory,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Every worker busy (here the only one, held): the page the resolver asks for is
        fetched by the resolver's own thread instead of waiting in the queue."""
        index = static_index()
        index.add(wheel_factory("b", "1.0"))
        monkeypatch.setattr(resolver, "_PREFETCH_WORKERS", 1)
        policy = HostPolicy(allowed_hosts=frozenset({f"127.0.0.1:{index.port}"}))
        release, blocker_done = threading.Event(), threading.Event()

        def blocker() -> None:
            release.wait(10)
            blocker_done.set()

        with Session(NetConfig(policy=policy, retries=0)) as session:
            prefetcher = _prefetcher(session, index, tmp_path)
            try:
                prefetcher._pool.submit(blocker)
                files = prefetcher.project(NormalizedName("b"))
                assert [f.filename for f in files.files] == ["b-1.0-py3-none-any.whl"]
                assert not blocker_done.is_set()
            finally:
                release.set()
                prefetcher.close()

    def test_unhashed_files_are_refused_unless_allowed(
        self, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory, tmp_path: Path
    ) -> None:
        index = static_index()
        index.add(wheel_factory("plain", "1.0"), hash_in_listing=False)
        parsed = parse_requirements(lines=["plain"])
        policy = HostPolicy(allowed_hosts=frozenset({f"127.0.0.1:{index.port}"}))
        with Session(NetConfig(policy=policy, retries=0)) as session:
            kwargs: dict[str, Any] = {
                "index": IndexClient(session, index_urls=[index.url]),
                "target": synthetic_target("3.11", [DEFAULT_PLATFORM]),
                "session": session,
                "cache": Cache(tmp_path / "cache"),
            }
            with pytest.raises(resolver.UnhashedFilesError):
                resolve_requirements(parsed.requirements, (), **kwargs)
            result = resolve_requirements(parsed.requirements, (), allow_unhashed=True, **kwargs)
        assert result.pins[0].artifact.hash_source == "none"

    def test_direct_urls_are_not_resolved(self, tmp_path: Path) -> None:
        parsed = parse_requirements(lines=["pkg @ https://example.org/pkg-1.0-py3-none-any.whl"])
        with (
            Session(NetConfig(policy=HostPolicy())) as session,
            pytest.raises(ResolutionError, match="direct URLs"),
        ):
            resolve_requirements(
                parsed.requirements,
                (),
                index=IndexClient(session, index_urls=[]),
                target=synthetic_target("3.11"),
                session=session,
                cache=Cache(tmp_path),
            )


class TestCollector:
    """The index pages are kept out of the cyclic collector's passes while resolving, and
    given back to it at the end."""

    def test_pages_are_frozen_while_resolving_and_released_after(
        self, scenario: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: list[int] = []
        real = resolver._Prefetcher._load_page

        def load_page(self: resolver._Prefetcher, *args: Any) -> Any:
            page = real(self, *args)
            seen.append(gc.get_freeze_count())
            return page

        monkeypatch.setattr(resolver._Prefetcher, "_load_page", load_page)
        assert gc.get_freeze_count() == 0
        result, _ = scenario({"indexes": ["basic"], "requirements": ["ext[fast]", "a"]})
        assert result.pins
        assert seen
        assert all(count > 0 for count in seen)
        assert gc.get_freeze_count() == 0

    def test_left_alone_when_the_collector_is_off(
        self, scenario: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(gc, "freeze", lambda: pytest.fail("froze"))
        monkeypatch.setattr(gc, "unfreeze", lambda: pytest.fail("unfroze"))
        monkeypatch.setattr(gc, "isenabled", lambda: False)
        result, _ = scenario({"indexes": ["basic"], "requirements": ["a"]})
        assert result.pins

    def test_frozen_by_the_command_line_first_stays_frozen(
        self, scenario: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The command line froze what it imported: the pages join them, and only the command
        line gives everything back (an unfreeze here would give back its objects too)."""
        froze: list[int] = []
        monkeypatch.setattr(gc, "freeze", lambda: froze.append(1))
        monkeypatch.setattr(gc, "unfreeze", lambda: pytest.fail("unfroze"))
        monkeypatch.setattr(gc, "get_freeze_count", lambda: 1)
        monkeypatch.setattr(gcstate._STATE, "frozen_by_command", True)
        result, _ = scenario({"indexes": ["basic"], "requirements": ["a"]})
        assert result.pins
        assert froze

    def test_a_library_callers_frozen_objects_are_left_as_they_were(
        self, scenario: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A caller that froze objects of its own (as pre-fork servers do at start-up) gets
        nothing of the resolutions frozen with them: it would never be collected."""
        made: list[weakref.ref[resolver._Prefetcher]] = []
        real = resolver._Prefetcher.__init__

        def init(self: resolver._Prefetcher, **kwargs: Any) -> None:
            real(self, **kwargs)
            made.append(weakref.ref(self))

        monkeypatch.setattr(resolver._Prefetcher, "__init__", init)
        gc.collect()
        gc.freeze()
        try:
            before = gc.get_freeze_count()
            for _ in range(2):
                result, _ = scenario({"indexes": ["basic"], "requirements": ["ext[fast]", "a"]})
                assert result.pins
                del result
            grown = gc.get_freeze_count() - before
            gc.collect()
            alive = [ref for ref in made if ref() is not None]
        finally:
            gc.unfreeze()
        assert len(made) == 2
        assert alive == []
        assert grown < 1000, f"{grown} objects of the resolutions frozen for good"

    def test_released_when_the_resolution_fails(self, scenario: Callable[..., Any]) -> None:
        with pytest.raises(ResolutionError):
            scenario({"indexes": ["basic"], "requirements": ["a", "no-such-project"]})
        assert gc.get_freeze_count() == 0


class TestErrors:
    def test_error_conflict_text(self) -> None:
        error = resolver.ConflictError(
            projects=["c"],
            causes=[
                resolver.Cause(requirement="c<2", parent="a==1", where=None, chain=("a==1",)),
                resolver.Cause(
                    requirement="c>=3", parent="b==2", where=None, chain=("top==1", "b==2")
                ),
            ],
            notes=["available versions of `c`: 3.0, 1.0"],
        )
        assert str(error) == (
            "Cannot find versions that satisfy every requirement on `c`:\n"
            "    `a==1` requires `c<2`\n"
            "    `b==2` requires `c>=3` (via `top==1` -> `b==2`)\n"
            "    available versions of `c`: 3.0, 1.0"
        )
        assert error.hint is not None

    def test_error_sdist_only_text(self) -> None:
        error = resolver.SdistOnlyError(
            project="x",
            versions=["1.0"],
            causes=[resolver.Cause(requirement="x", parent=None, where="req.in:1")],
        )
        assert str(error) == (
            "Refusing `x`: the versions that would fit (1.0) are source distributions only; "
            "building one would run the package's code\n"
            "    `req.in:1` requires `x`"
        )
        assert error.exit_code == 4

    def test_error_not_found_text_hides_credentials(self) -> None:
        error = resolver.ProjectNotFoundError(
            project="x", sources=["https://user:secret@example.org/simple/"], causes=[]
        )
        assert str(error) == "`x` was not found on `https://***:***@example.org/simple/`"


def test_same_wheel_on_an_index_and_a_find_links_folder(
    cli: Cli, static_index: Callable[..., StaticIndex], wheel_factory: WheelFactory, tmp_path: Path
) -> None:
    """One wheel listed by two sources ties on rank and filename: the first source's file is
    chosen (first-index-wins order), never a comparison of the two listings (a traceback)."""
    index = static_index()
    wheel = wheel_factory("twice", "1.0")
    index.add(wheel)
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    (folder / wheel.name).write_bytes(wheel.read_bytes())
    out = tmp_path / "lock.txt"
    code, _, err = cli(
        "lock", "twice", "-i", index.url, "-f", str(folder), "--python-version", "3.11",
        "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "twice==1.0" in out.read_text()


def _resolve_on(index: StaticIndex, lines: list[str], tmp_path: Path) -> Any:
    """Resolve `lines` against the loopback `index` alone (Python 3.11, the default platform),
    with the cache in `tmp_path`."""
    parsed = parse_requirements(lines=lines, cwd=tmp_path)
    policy = HostPolicy(allowed_hosts=frozenset({f"127.0.0.1:{index.port}"}))
    with Session(NetConfig(policy=policy, retries=0)) as session:
        return resolve_requirements(
            parsed.requirements,
            (),
            index=IndexClient(session, index_urls=[index.url]),
            target=synthetic_target("3.11", [DEFAULT_PLATFORM]),
            session=session,
            cache=Cache(tmp_path / "cache"),
        )


def _prefetcher(session: Session, index: StaticIndex, tmp_path: Path) -> resolver._Prefetcher:
    """A prefetcher for `index` as the resolver makes one (Python 3.11, the default platform)."""
    return resolver._Prefetcher(
        index=IndexClient(session, index_urls=[index.url]),
        target=synthetic_target("3.11", [DEFAULT_PLATFORM]),
        session=session,
        cache=Cache(tmp_path / "cache"),
        pre=False,
        preferred={},
    )
