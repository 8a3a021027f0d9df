"""Credentials for index hosts (credentials.py): the lookup order pip uses, netrc, keyring
providers, and end to end against a real pypiserver that wants basic auth."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from safepip.credentials import CredentialStore, KeyringProvider, Login, split_credentials
from safepip.net import NetConfig, NetworkError, Session
from safepip.pipconfig import PipConfig
from safepip.policy import HostPolicy
from safepip.sources import SourceOptions, net_config
from servers import FileServer, PypiServer, StaticIndex

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from wheelbuild import WheelFactory

TESTS = Path(__file__).parent
USER = "alice"
PASSWORD = "pw-Zq7-s3cret"
SECRETS = (
    PASSWORD,
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
)
TEST_BACKEND = "keyring_file_backend.FileKeyring"


def store(
    *urls: str,
    home: Path | None = None,
    environ: dict[str, str] | None = None,
    keyring_provider: KeyringProvider = KeyringProvider.AUTO,
    no_input: bool = False,
) -> CredentialStore:
    env = {"HOME": str(home or "/nonexistent"), "PATH": os.defpath, **(environ or {})}
    return CredentialStore(
        index_urls=urls,
        environ=env,
        home=home,
        keyring_provider=keyring_provider,
        no_input=no_input,
    )


def user_for(creds: CredentialStore, url: str) -> str:
    """The user name `creds` sends to `url` (the test fails when it sends none)."""
    login = creds.login_for(url)[1]
    assert login is not None, url
    return login.username


def keyring_stub(folder: Path, answers: dict[str, dict[str, str]], *, status: int = 0) -> Path:
    """A `keyring` command (keyring's CLI contract) answering from `answers`; logs its argv."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "keyring"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, sys
            with open({str(folder / "argv.log")!r}, "a") as log:
                log.write(" ".join(sys.argv[1:]) + "\\n")
            if {status}:
                sys.exit({status})
            answers = {answers!r}
            args = [a for a in sys.argv[1:] if not a.startswith("--")]
            assert args[0] == "get", args
            service, user = args[1], (args[2] if len(args) > 2 else None)
            users = answers.get(service, {{}})
            for name, password in users.items():
                if user in (None, name):
                    print(json.dumps({{"username": name, "password": password}}))
                    sys.exit(0)
            sys.exit(1)
            """
        )
    )
    script.chmod(0o755)
    return script


class TestLookup:
    def test_url_credentials_win_and_leave_the_url(self) -> None:
        creds = store("https://bob:other@host/simple/")
        url, login = creds.login_for("https://u%40x:p%2Fw@host/simple/pkg/")
        assert url == "https://host/simple/pkg/"
        assert login == Login("u@x", "p/w", "the URL")

    def test_index_credentials_apply_under_the_same_host_and_path(self) -> None:
        creds = store("https://alice:pw1@host/team/simple")
        url, login = creds.login_for("https://host/team/simple/pkg/")
        assert (url, login) == (
            "https://host/team/simple/pkg/",
            Login("alice", "pw1", "the index URL `https://host/team/simple/`"),
        )
        # Files the page links to elsewhere on the host (pypiserver's /packages/) too.
        assert creds.login_for("https://host/team/packages/a.whl")[1] == login

    @pytest.mark.parametrize(
        "url",
        [
            "http://host/team/simple/pkg/",  # another scheme
            "https://host:8443/team/simple/pkg/",  # another port
            "https://other/team/simple/pkg/",  # another host
            "https://host.evil/team/simple/pkg/",
        ],
    )
    def test_index_credentials_stay_on_their_origin(self, url: str) -> None:
        assert store("https://alice:pw1@host/team/simple")._matching_index is not None
        assert store("https://alice:pw1@host/team/simple").login_for(url)[1] is None

    def test_default_port_is_the_same_origin(self) -> None:
        creds = store("https://alice:pw1@host:443/simple/")
        assert creds.login_for("https://host/simple/x/")[1] is not None

    def test_a_lock_files_index_gets_the_credentials_given_elsewhere(self) -> None:
        """The file's `--index-url` (no credentials) and `-i` (with them) name one index."""
        creds = store("https://host/simple", "https://alice:pw1@host/simple/")
        assert creds.login_for("https://host/simple/pkg/")[1] == Login(
            "alice", "pw1", "the index URL `https://host/simple/`"
        )

    def test_the_closest_index_on_a_host_wins(self) -> None:
        creds = store("https://a:pa@host/one/simple/", "https://b:pb@host/two/simple/")
        assert user_for(creds, "https://host/two/packages/x.whl") == "b"
        assert user_for(creds, "https://host/one/simple/x/") == "a"

    def test_a_lone_user_name_is_a_token(self) -> None:
        creds = store("https://TOKEN123@host/simple/")
        login = creds.login_for("https://host/simple/x/")[1]
        assert login == Login("TOKEN123", "", "the index URL `https://host/simple/`")
        assert creds.redact("it was TOKEN123") == "it was ***"

    def test_split_credentials(self) -> None:
        assert split_credentials("https://u:p%3A@h/s") == ("https://h/s", "u", "p:")
        assert split_credentials("https://h/s") == ("https://h/s", None, None)
        assert split_credentials("https://t@h/s") == ("https://h/s", "t", None)


def test_every_configured_url_lends_its_credentials(tmp_path: Path) -> None:
    """Command line, pip's configuration and the requirements files (`Sources.login_urls`)."""
    config = PipConfig(extra_index_urls=("https://c:pc@conf/simple/",))
    options = SourceOptions(find_links=("https://f:pf@links/wheels/",))
    built = net_config(
        options, HostPolicy(), config, login_urls=["https://r:pr@file/simple/"]
    ).credentials
    assert built is not None
    assert built.keyring_provider is KeyringProvider.AUTO
    for host, user in (("conf", "c"), ("links", "f"), ("file", "r")):
        assert user_for(built, f"https://{host}/simple/x/") == user


class TestNetrc:
    def write(self, path: Path, text: str) -> Path:
        path.write_text(textwrap.dedent(text))
        path.chmod(0o600)
        return path

    def test_netrc_in_home(self, tmp_path: Path) -> None:
        self.write(tmp_path / ".netrc", "machine host login alice password pw2\n")
        login = store("https://host/simple/", home=tmp_path).login_for("https://host/simple/x/")[1]
        assert login == Login("alice", "pw2", f"netrc `{tmp_path / '.netrc'}`")

    def test_netrc_variable_wins_over_home(self, tmp_path: Path) -> None:
        self.write(tmp_path / ".netrc", "machine host login home password h\n")
        named = self.write(tmp_path / "other", "machine host login named password n\n")
        creds = store(home=tmp_path, environ={"NETRC": str(named)})
        assert user_for(creds, "https://host/x") == "named"

    def test_underscore_netrc_when_there_is_no_dot_netrc(self, tmp_path: Path) -> None:
        self.write(tmp_path / "_netrc", "machine host login under password u\n")
        assert user_for(store(home=tmp_path), "https://host/x") == "under"

    def test_default_entry_and_account(self, tmp_path: Path) -> None:
        self.write(
            tmp_path / ".netrc", "machine a account acct password p1\ndefault login d password p2\n"
        )
        creds = store(home=tmp_path)
        assert user_for(creds, "https://a/x") == "acct"
        assert user_for(creds, "https://b:81/x") == "d"

    def test_url_and_index_credentials_come_before_netrc(self, tmp_path: Path) -> None:
        self.write(tmp_path / ".netrc", "machine host login n password pn\n")
        creds = store("https://i:pi@host/simple/", home=tmp_path)
        assert user_for(creds, "https://host/simple/x/") == "i"
        assert user_for(creds, "https://u:pu@host/simple/x/") == "u"

    def test_a_broken_netrc_is_ignored_and_named_in_the_hint(self, tmp_path: Path) -> None:
        self.write(tmp_path / ".netrc", "machine host login a password p\nbogus\n")
        creds = store(home=tmp_path)
        assert creds.login_for("https://host/x")[1] is None
        assert (
            f"netrc `{tmp_path / '.netrc'}` was ignored: bad follower token 'bogus' on line 3"
        ) in creds.explain_missing("https://host/")

    def test_netrc_passwords_are_redacted(self, tmp_path: Path) -> None:
        self.write(tmp_path / ".netrc", "machine host login alice password pw-netrc\n")
        creds = store(home=tmp_path)
        creds.login_for("https://host/x")
        assert creds.redact("echo pw-netrc") == "echo ***"


class TestKeyring:
    def test_subprocess_asks_the_index_url_then_the_host(self, tmp_path: Path) -> None:
        stub = keyring_stub(tmp_path / "bin", {"host:8080": {"kr": "pw3"}})
        creds = store(
            "https://host:8080/simple",
            keyring_provider=KeyringProvider.SUBPROCESS,
            environ={"PATH": str(stub.parent)},
        )
        url, login = creds.login_for("https://host:8080/simple/x/")
        assert login is None
        found = creds.login_after_401(url, login)
        assert found == Login("kr", "pw3", f"keyring (`{stub}`, `host:8080`)")
        asked = (stub.parent / "argv.log").read_text().splitlines()
        assert asked == [
            "--mode=creds --output=json get https://host:8080/simple/",
            "--mode=creds --output=json get host:8080",
        ]
        # Remembered for the host: later requests send it at once, without asking again.
        assert creds.login_for("https://host:8080/packages/x.whl")[1] == found
        assert creds.login_after_401(url, None) == found
        assert len((stub.parent / "argv.log").read_text().splitlines()) == 2

    def test_user_name_from_the_url_is_passed(self, tmp_path: Path) -> None:
        stub = keyring_stub(tmp_path / "bin", {"https://host/simple/": {"tok": "pw4"}})
        creds = store(
            "https://tok@host/simple/",
            keyring_provider=KeyringProvider.SUBPROCESS,
            environ={"PATH": str(stub.parent)},
        )
        url, login = creds.login_for("https://host/simple/x/")
        assert login == Login("tok", "", "the index URL `https://host/simple/`")
        assert creds.login_after_401(url, login) == Login(
            "tok", "pw4", f"keyring (`{stub}`, `https://host/simple/`)"
        )
        assert (stub.parent / "argv.log").read_text().split("\n")[0].endswith(" tok")

    def test_given_credentials_are_not_second_guessed(self, tmp_path: Path) -> None:
        stub = keyring_stub(tmp_path / "bin", {"host": {"kr": "pw"}})
        creds = store(
            "https://a:b@host/simple/",
            keyring_provider=KeyringProvider.SUBPROCESS,
            environ={"PATH": str(stub.parent)},
        )
        url, login = creds.login_for("https://host/simple/x/")
        assert creds.login_after_401(url, login) is None
        assert not (stub.parent / "argv.log").exists()

    @pytest.mark.parametrize(
        ("provider", "no_input", "asked"),
        [
            (KeyringProvider.AUTO, False, True),
            (KeyringProvider.AUTO, True, False),  # pip: auto is off under --no-input
            (KeyringProvider.SUBPROCESS, True, True),
            (KeyringProvider.DISABLED, False, False),
        ],
    )
    def test_provider_semantics(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        provider: KeyringProvider,
        no_input: bool,
        asked: bool,
    ) -> None:
        # `auto` tries the module first: make it unimportable so the command is what answers.
        monkeypatch.setitem(sys.modules, "keyring", None)
        stub = keyring_stub(tmp_path / "bin", {"host": {"kr": "pw"}})
        creds = store(
            keyring_provider=provider, no_input=no_input, environ={"PATH": str(stub.parent)}
        )
        found = creds.login_after_401("https://host/simple/", None)
        assert (found is not None) is asked
        assert (stub.parent / "argv.log").exists() is asked
        if not asked:
            assert "keyring is not asked" in creds.explain_missing("https://host/")

    def test_import_without_the_module_is_explained(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "keyring", None)
        creds = store(keyring_provider=KeyringProvider.IMPORT)
        assert creds.login_after_401("https://host/simple/", None) is None
        assert (
            "`--keyring-provider import`: the `keyring` module is not installed next to safepip"
        ) in creds.explain_missing("https://host/")

    def test_auto_without_any_keyring_says_so(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "keyring", None)
        creds = store(keyring_provider=KeyringProvider.AUTO, environ={"PATH": ""})
        assert creds.login_after_401("https://host/simple/", None) is None
        assert creds.explain_missing("https://host/").endswith(
            "; no keyring to ask: the `keyring` module is not installed next to safepip, and no "
            "`keyring` command is on PATH"
        )

    def test_a_failing_keyring_is_skipped_once_and_explained(self, tmp_path: Path) -> None:
        stub = keyring_stub(tmp_path / "bin", {}, status=2)
        stub.write_text(
            f"#!{sys.executable}\nimport sys\n"
            "sys.stderr.write('error: unrecognized arguments: --mode=creds\\n')\nsys.exit(2)\n"
        )
        creds = store(
            keyring_provider=KeyringProvider.SUBPROCESS, environ={"PATH": str(stub.parent)}
        )
        assert creds.login_after_401("https://host/simple/", None) is None
        assert creds.login_after_401("https://host/other/", None) is None
        assert "is too old: keyring 25.2.1 or later" in creds.explain_missing("https://host/")

    def test_a_keyring_that_hangs_is_given_up(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("safepip.credentials.KEYRING_TIMEOUT", 0.5)
        stub = keyring_stub(tmp_path / "bin", {})
        stub.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
        creds = store(
            keyring_provider=KeyringProvider.SUBPROCESS, environ={"PATH": str(stub.parent)}
        )
        assert creds.login_after_401("https://host/simple/", None) is None
        assert "did not answer within 0 seconds" in creds.explain_missing("https://host/")

    def test_the_keyring_in_safepips_own_scripts_folder_is_skipped(self) -> None:
        scripts = sysconfig.get_path("scripts")
        if not (Path(scripts) / "keyring").exists():
            pytest.skip("no keyring command next to this interpreter")
        creds = store(keyring_provider=KeyringProvider.SUBPROCESS, environ={"PATH": scripts})
        assert creds.login_after_401("https://host/simple/", None) is None
        assert "found no `keyring` command on PATH" in creds.explain_missing("https://host/")


class TestSession:
    """The session sends the login as a header and retries a 401 once with the keyring's."""

    def test_a_401_is_retried_with_the_keyring_and_remembered(
        self, static_index: Callable[..., StaticIndex], tmp_path: Path
    ) -> None:
        index = static_index()
        (index.files_dir / "demo.bin").write_bytes(b"data")
        index.basic_auth = (USER, PASSWORD)
        netloc = f"127.0.0.1:{index.port}"
        stub = keyring_stub(tmp_path / "bin", {netloc: {USER: PASSWORD}})
        creds = CredentialStore(
            index_urls=[index.url],
            keyring_provider=KeyringProvider.SUBPROCESS,
            environ={"PATH": str(stub.parent), "HOME": str(tmp_path)},
        )
        policy = HostPolicy(allowed_hosts=frozenset({netloc}), trusted_hosts=frozenset())
        with Session(NetConfig(policy=policy, credentials=creds)) as session:
            assert session.get(index.files_url + "demo.bin").content == b"data"
            assert session.get(index.files_url + "demo.bin").content == b"data"
        auth = [h.get("authorization") for h in index.request_headers]
        expected = "Basic " + SECRETS[1]
        assert auth == [None, expected, expected]

    def test_a_redirect_to_another_host_carries_no_credentials(
        self, static_index: Callable[..., StaticIndex], foreign_server: FileServer
    ) -> None:
        index = static_index()
        index.basic_auth = (USER, PASSWORD)
        target = foreign_server.add_bytes("demo.bin", b"mirror")
        index.redirect["/files/demo.bin"] = target
        secret_index = index.url.replace("://", f"://{USER}:{PASSWORD}@")
        creds = CredentialStore(
            index_urls=[secret_index], environ={"NETRC": "/nonexistent", "HOME": "/nonexistent"}
        )
        policy = HostPolicy().with_hosts(index.url, foreign_server.url)
        with Session(NetConfig(policy=policy, credentials=creds)) as session:
            assert session.get(index.files_url + "demo.bin").content == b"mirror"
        assert index.request_headers[0]["authorization"] == "Basic " + SECRETS[1]
        assert "authorization" not in foreign_server.request_headers[0]

    def test_error_401_names_what_was_sent_never_the_secret(
        self, static_index: Callable[..., StaticIndex], tmp_path: Path
    ) -> None:
        index = static_index()
        index.basic_auth = (USER, "another")
        creds = CredentialStore(
            index_urls=[index.url.replace("://", f"://{USER}:{PASSWORD}@")],
            keyring_provider=KeyringProvider.DISABLED,
            environ={"HOME": str(tmp_path)},
        )
        policy = HostPolicy().with_hosts(index.url)
        with (
            Session(NetConfig(policy=policy, credentials=creds)) as session,
            pytest.raises(NetworkError) as info,
        ):
            session.get(index.url + "x/")
        assert str(info.value) == f"HTTP 401 from `{index.url}x/`"
        assert info.value.hint == (
            f"the credentials from the index URL `{index.url}` (user `{USER}`) were refused; "
            "check them"
        )

    def test_error_401_without_credentials_says_where_they_could_come_from(
        self, static_index: Callable[..., StaticIndex], tmp_path: Path
    ) -> None:
        index = static_index()
        index.basic_auth = (USER, PASSWORD)
        creds = CredentialStore(
            index_urls=[index.url],
            keyring_provider=KeyringProvider.AUTO,
            no_input=True,
            environ={"HOME": str(tmp_path)},
        )
        with (
            Session(NetConfig(policy=HostPolicy().with_hosts(index.url), credentials=creds)) as s,
            pytest.raises(NetworkError) as info,
        ):
            s.get(index.url)
        assert info.value.hint == (
            f"no credentials for `127.0.0.1:{index.port}` were found: put them in the index "
            "URL (`https://USER:PASSWORD@host/simple/` in `-i`, `PIP_INDEX_URL` or pip.conf), "
            "in netrc, or in a keyring; the keyring is not asked under `--no-input` with "
            "`--keyring-provider auto` (pip's rule): choose `import` or `subprocess`"
        )


# -- end to end: a real pypiserver that wants basic auth ---------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def private_index(
    tmp_path_factory: pytest.TempPathFactory, wheel_factory: WheelFactory
) -> Iterator[PypiServer]:
    if not os.environ.get("CI"):  # CI installs the test group, passlib included: never skipped
        pytest.importorskip("passlib", reason="pypiserver needs passlib for htpasswd files")
    root = tmp_path_factory.mktemp("private-index")
    digest = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    (root / "htpasswd").write_text(f"{USER}:{{SHA}}{digest}\n")
    server = PypiServer(root / "packages", log_path=root / "log", htpasswd=root / "htpasswd")
    server.add(wheel_factory("privapp", "1.0", requires=["privlib>=1"]))
    server.add(wheel_factory("privlib", "1.1"))
    yield server
    server.close()


class PrivateIndexCase:
    """One way of giving the credentials: the env and arguments it adds to a safepip run."""

    def __init__(self, how: str, server: PypiServer, tmp_path: Path) -> None:
        self.how = how
        self.server = server
        self.tmp_path = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir()
        secret_url = server.url.replace("://", f"://{USER}:{PASSWORD}@")
        keyring_file = tmp_path / "keyring.json"
        keyring_file.write_text("{}")
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("NETRC", "PIP_NO_INPUT", "HOME")
        }
        self.env.update(
            HOME=str(self.home),
            PYTHONPATH=str(TESTS),
            PYTHON_KEYRING_BACKEND=TEST_BACKEND,
            SAFEPIP_TEST_KEYRING=str(keyring_file),
            PIP_NO_INPUT="1",
            # Every cache under tmp_path, where `assert_no_secret_anywhere` looks.
            SAFEPIP_CACHE_DIR=str(tmp_path / "cache-default"),
            SAFEPIP_DATA_DIR=str(tmp_path / "data"),
        )
        self.args: list[str] = []
        netloc = server.base_url.split("://", 1)[1]
        match how:
            case "url":
                self.args = ["-i", secret_url]
            case "env":
                self.env["PIP_INDEX_URL"] = secret_url
            case "pip.conf":
                conf = tmp_path / "pip.conf"
                conf.write_text(f"[global]\nindex-url = {secret_url}\n")
                self.env["PIP_CONFIG_FILE"] = str(conf)
            case "netrc":
                netrc = self.home / ".netrc"
                netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
                netrc.chmod(stat.S_IRUSR | stat.S_IWUSR)
                self.args = ["-i", server.url]
            case "keyring-import":
                keyring_file.write_text(json.dumps({server.url: {USER: PASSWORD}}))
                self.args = ["-i", server.url, "--keyring-provider", "import"]
            case "keyring-subprocess":
                keyring_file.write_text(json.dumps({netloc: {USER: PASSWORD}}))
                bin_dir = tmp_path / "bin"
                bin_dir.mkdir()
                (bin_dir / "keyring").symlink_to(Path(sysconfig.get_path("scripts")) / "keyring")
                self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env.get('PATH', os.defpath)}"
                self.env["PIP_KEYRING_PROVIDER"] = "subprocess"
                self.args = ["-i", server.url]
            case "keyring-auto":
                keyring_file.write_text(json.dumps({server.url: {USER: PASSWORD}}))
                del self.env["PIP_NO_INPUT"]
                self.args = ["-i", server.url]
            case _:
                raise AssertionError(how)
        self.outputs: list[str] = []

    def run(self, *argv: str, index_args: bool = True) -> Run:
        command = [sys.executable, "-m", "safepip", *argv, *(self.args if index_args else [])]
        proc = subprocess.run(
            command,
            env=self.env,
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.outputs += [proc.stdout, proc.stderr]
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def assert_no_secret_anywhere(self) -> None:
        """Not in any output, nor in any file safepip wrote (cache, lock, report, downloads)."""
        for text in self.outputs:
            for secret in SECRETS:
                assert secret not in text
        for path in self.tmp_path.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.parent != self.home:
                if path.name in ("keyring.json", "pip.conf"):
                    continue  # where the test put the secret
                data = path.read_bytes()
                for secret in SECRETS:
                    assert secret.encode() not in data, path
                    assert secret not in path.name


def dist_infos(venv: Path) -> list[str]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    return sorted(p.name for p in site.glob("priv*.dist-info"))


HOW = ["url", "env", "pip.conf", "netrc", "keyring-import", "keyring-subprocess", "keyring-auto"]


class TestPrivateIndex:
    @pytest.mark.parametrize("how", HOW)
    def test_install_download_lock_and_the_lock_again(
        self,
        how: str,
        private_index: PypiServer,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        case = PrivateIndexCase(how, private_index, tmp_path)

        def cache(command: str) -> list[str]:
            # One cache per command, so that each downloads every file itself.
            return ["--cache-dir", str(tmp_path / f"cache-{command}")]

        venv = venv_factory()
        report = ["--report", str(tmp_path / "report.json")]
        installed = case.run(
            "install", "privapp==1.0", "--python", str(venv), *cache("install"), *report
        )
        assert installed.code == 0, installed.err
        assert dist_infos(venv) == ["privapp-1.0.dist-info", "privlib-1.1.dist-info"]

        downloaded = case.run(
            "download", "privapp==1.0", "-d", str(tmp_path / "dl"), *cache("download")
        )
        assert downloaded.code == 0, downloaded.err
        assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
            "privapp-1.0-py3-none-any.whl",
            "privlib-1.1-py3-none-any.whl",
        ]

        (tmp_path / "requirements.in").write_text("privapp\n")
        locked = case.run("lock", "requirements.in", "-o", "requirements.txt", *cache("lock"))
        assert locked.code == 0, locked.err
        lock = (tmp_path / "requirements.txt").read_text()
        assert f"--index-url {private_index.url}\n" in lock
        assert "privlib==1.1" in lock

        # The lock names the index without credentials; every route supplies them again.
        again = venv_factory()
        reinstalled = case.run(
            "install", "-r", "requirements.txt", "--python", str(again), "--no-cache"
        )
        assert reinstalled.code == 0, reinstalled.err
        assert dist_infos(again) == ["privapp-1.0.dist-info", "privlib-1.1.dist-info"]
        case.assert_no_secret_anywhere()
        asked = tmp_path / "keyring.json.log"
        if how.startswith("keyring"):
            # Asked once per run (after the first 401), then remembered for the host.
            assert len(asked.read_text().splitlines()) in (4, 8), asked.read_text()
        else:
            assert not asked.exists()

    @pytest.mark.parametrize("how", ["url", "netrc", "keyring-subprocess"])
    def test_a_pylock_from_the_private_index_installs_again(
        self,
        how: str,
        private_index: PypiServer,
        venv_factory: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        case = PrivateIndexCase(how, private_index, tmp_path)
        (tmp_path / "requirements.in").write_text("privapp\n")
        locked = case.run("lock", "requirements.in", "-o", "pylock.toml")
        assert locked.code == 0, locked.err
        assert f'index = "{private_index.url}"' in (tmp_path / "pylock.toml").read_text()
        venv = venv_factory()
        # The files' host must be named (`-i` without credentials will do for netrc and
        # keyring): a pylock.toml's `index` keys do not make a host trusted.
        result = case.run("install", "-r", "pylock.toml", "--python", str(venv), "--no-cache")
        assert result.code == 0, result.err
        assert dist_infos(venv) == ["privapp-1.0.dist-info", "privlib-1.1.dist-info"]
        case.assert_no_secret_anywhere()

    def test_lock_installs_with_no_index_option_at_all_from_netrc(
        self, private_index: PypiServer, venv_factory: Callable[..., Path], tmp_path: Path
    ) -> None:
        case = PrivateIndexCase("netrc", private_index, tmp_path)
        (tmp_path / "requirements.in").write_text("privapp\n")
        assert case.run("lock", "requirements.in", "-o", "requirements.txt").code == 0
        venv = venv_factory()
        result = case.run(
            "install", "-r", "requirements.txt", "--python", str(venv), index_args=False
        )
        assert result.code == 0, result.err
        case.assert_no_secret_anywhere()

    def test_error_without_credentials_is_a_401_with_a_hint(
        self, private_index: PypiServer, venv_factory: Callable[..., Path], tmp_path: Path
    ) -> None:
        case = PrivateIndexCase("netrc", private_index, tmp_path)
        (case.home / ".netrc").unlink()
        venv = venv_factory()
        result = case.run("install", "privapp==1.0", "--python", str(venv))
        assert result.code == 1
        assert f"HTTP 401 from `{private_index.url}privapp/`" in result.err
        assert "no credentials for `127.0.0.1:" in result.err

    def test_error_wrong_password_names_its_source(
        self, private_index: PypiServer, venv_factory: Callable[..., Path], tmp_path: Path
    ) -> None:
        case = PrivateIndexCase("netrc", private_index, tmp_path)
        (case.home / ".netrc").write_text(f"machine 127.0.0.1 login {USER} password wrong-pw\n")
        result = case.run("install", "privapp==1.0", "--python", str(venv_factory()))
        assert result.code == 1
        assert f"the credentials from netrc `{case.home / '.netrc'}` (user `alice`)" in result.err
        assert "wrong-pw" not in result.err + result.out

    def test_no_emit_index_url_leaves_the_index_to_the_installer(
        self, private_index: PypiServer, venv_factory: Callable[..., Path], tmp_path: Path
    ) -> None:
        case = PrivateIndexCase("url", private_index, tmp_path)
        (tmp_path / "requirements.in").write_text("privapp\n")
        links = private_index.url.replace("://", f"://{USER}:{PASSWORD}@")
        locked = case.run(
            "lock", "requirements.in", "-o", "requirements.txt", "--no-emit-index-url", "-f", links
        )
        assert locked.code == 0, locked.err
        lock = (tmp_path / "requirements.txt").read_text()
        assert "--index-url" not in lock.replace("--no-emit-index-url", "")
        url = private_index.url
        assert f"-o requirements.txt -f {url} -i {url} --no-emit-index-url\n" in lock
        venv = venv_factory()
        case.args = []
        case.env["PIP_INDEX_URL"] = private_index.url.replace("://", f"://{USER}:{PASSWORD}@")
        result = case.run("install", "-r", "requirements.txt", "--python", str(venv))
        assert result.code == 0, result.err
        assert dist_infos(venv) == ["privapp-1.0.dist-info", "privlib-1.1.dist-info"]
        case.assert_no_secret_anywhere()
