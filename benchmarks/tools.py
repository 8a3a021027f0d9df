"""The tools under test (safepip, uv, pip, pip-tools): their venvs, versions and command lines."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wheelhouse import PYPI_SIMPLE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    Log = Callable[[str], None]

TOOLS = ("safepip", "uv", "pip")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment every tool runs in: no `PIP_*`/`UV_*` settings, no config files, no venv.

    This machine (and many others) has `pip.conf` files and `PIP_*` variables that add indexes,
    find-links and constraints; the benchmark must see none of them.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_", "SAFEPIP_"))
        and k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["UV_NO_CONFIG"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["NO_COLOR"] = "1"
    # Loopback must never go through a proxy.
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env.update(extra)
    return env


@dataclass(frozen=True, kw_only=True, slots=True)
class Tools:
    """Paths of the installed tools; `None` where a tool could not be set up."""

    python: Path
    """The CPython 3.11 that target venvs are created from."""
    pip_python: Path
    """Python of the tool venv that holds pip and uv (peers, both from the package index)."""
    uv: Path
    pip_compile: Path | None
    safepip_python: Path | None
    versions: Mapping[str, str]
    unavailable: Mapping[str, str]
    """Tool or command (`safepip lock`, `safepip audit`) → why it cannot run."""

    def pip_cmd(self) -> list[str]:
        return [str(self.pip_python), "-m", "pip"]

    def install(
        self,
        tool: str,
        *,
        lock: Path,
        venv: Path,
        index_url: str,
        cache: Path,
        compile_bytecode: bool,
        link_mode: str | None = None,
    ) -> list[str]:
        """The command that installs the whole hash-pinned `lock` into `venv` with `tool`
        (`link_mode`: uv's and safepip's `--link-mode`; pip always copies)."""
        links = ["--link-mode", link_mode] if link_mode else []
        python = str(venv / "bin" / "python")
        match tool:
            case "pip":
                return [
                    *self.pip_cmd(),
                    "--python",
                    python,
                    "install",
                    "--require-hashes",
                    *([] if compile_bytecode else ["--no-compile"]),
                    "-r",
                    str(lock),
                    "--index-url",
                    index_url,
                    "--cache-dir",
                    str(cache),
                    "--disable-pip-version-check",
                    "-q",
                ]
            case "uv":
                return [
                    str(self.uv),
                    "pip",
                    "install",
                    "-r",
                    str(lock),
                    "--python",
                    python,
                    "--index-url",
                    index_url,
                    "--require-hashes",
                    "--cache-dir",
                    str(cache),
                    *(["--compile-bytecode"] if compile_bytecode else []),
                    *links,
                    "-q",
                ]
            case "safepip":
                assert self.safepip_python is not None
                return [
                    str(self.safepip_python),
                    "-m",
                    "safepip",
                    "install",
                    "-r",
                    str(lock),
                    "--python",
                    str(venv),
                    "--index-url",
                    index_url,
                    "--cache-dir",
                    str(cache),
                    *(["--compile"] if compile_bytecode else []),
                    *links,
                    "-q",
                ]
        raise ValueError(tool)

    def lock(
        self, tool: str, *, source: Path, output: Path, index_url: str, cache: Path
    ) -> list[str]:
        """The command that resolves `source` against the index and writes a hashed lock."""
        match tool:
            case "pip":
                assert self.pip_compile is not None
                return [
                    str(self.pip_compile),
                    str(source),
                    "-o",
                    str(output),
                    "--index-url",
                    index_url,
                    "--generate-hashes",
                    "--cache-dir",
                    str(cache / "pip-tools"),
                    "--pip-args",
                    f"--cache-dir {cache / 'pip'} --disable-pip-version-check",
                    "--no-header",
                    "--no-emit-index-url",
                    "--quiet",
                ]
            case "uv":
                return [
                    str(self.uv),
                    "pip",
                    "compile",
                    str(source),
                    "-o",
                    str(output),
                    "--index-url",
                    index_url,
                    "--generate-hashes",
                    "--python",
                    str(self.python),
                    "--cache-dir",
                    str(cache),
                    "-q",
                ]
            case "safepip":
                assert self.safepip_python is not None
                return [
                    str(self.safepip_python),
                    "-m",
                    "safepip",
                    "lock",
                    str(source),
                    "-o",
                    str(output),
                    "--index-url",
                    index_url,
                ]
        raise ValueError(tool)

    def audit(self, *, lock: Path) -> list[str]:
        assert self.safepip_python is not None
        return [str(self.safepip_python), "-m", "safepip", "audit", "-r", str(lock)]


def _run(cmd: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=dict(env), capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )


def _checked(cmd: list[str], env: Mapping[str, str], what: str) -> str:
    result = _run(cmd, env)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}{result.stderr}"
        )
    return result.stdout.strip()


def setup(
    *,
    cache: Path,
    python: Path,
    safepip_source: Path | None,
    upgrade: bool,
    log: Log,
) -> Tools:
    """Create (once) the tool venvs under `cache` and (every run) reinstall safepip from source.

    pip and uv are installed as peers into one venv from the public index; pip-tools gets its own
    venv, so its pin on pip never holds back the pip being measured.
    """
    env = clean_env()
    versions: dict[str, str] = {}
    unavailable: dict[str, str] = {}

    peers = cache / "tools"
    peer_python = peers / "bin" / "python"
    if upgrade or not (peers / "bin" / "uv").exists():
        log(f"tools: installing pip and uv into {peers}")
        if peers.exists() and upgrade is False:
            shutil.rmtree(peers)
        _checked([str(python), "-m", "venv", str(peers)], env, "creating the tool venv")
        _checked(
            [
                str(peer_python),
                "-m",
                "pip",
                "install",
                "--upgrade",
                "--disable-pip-version-check",
                "--index-url",
                PYPI_SIMPLE,
                "pip",
                "uv",
            ],
            env,
            "installing pip and uv",
        )
    uv = peers / "bin" / "uv"
    versions["pip"] = _checked([str(peer_python), "-m", "pip", "--version"], env, "pip").split()[1]
    versions["uv"] = _checked([str(uv), "--version"], env, "uv").split()[1]
    versions["python"] = _checked(
        [str(python), "-c", "import sys; print(sys.version.split()[0])"], env, "python"
    )

    pip_tools = cache / "pip-tools"
    pip_compile: Path | None = pip_tools / "bin" / "pip-compile"
    assert pip_compile is not None
    if upgrade or not pip_compile.exists():
        log(f"tools: installing pip-tools into {pip_tools}")
        try:
            if pip_tools.exists() and not upgrade:
                shutil.rmtree(pip_tools)
            _checked(
                [str(python), "-m", "venv", str(pip_tools)], env, "creating the pip-tools venv"
            )
            _checked(
                [
                    str(pip_tools / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--upgrade",
                    "--disable-pip-version-check",
                    "--index-url",
                    PYPI_SIMPLE,
                    "pip-tools",
                ],
                env,
                "installing pip-tools",
            )
        except RuntimeError as exc:
            log(f"tools: {exc}")
    if pip_compile.exists():
        versions["pip-tools"] = _checked(
            [str(pip_compile), "--version"], env, "pip-compile"
        ).split()[-1]
    else:
        unavailable["pip lock"] = "pip-tools could not be installed"
        pip_compile = None

    safepip_python: Path | None = None
    if safepip_source is None:
        unavailable["safepip"] = "not requested"
    else:
        safepip_python = _setup_safepip(
            venv=cache / "safepip",
            source=safepip_source,
            python=python,
            uv=uv,
            env=env,
            versions=versions,
            unavailable=unavailable,
            log=log,
        )
    return Tools(
        python=python,
        pip_python=peer_python,
        uv=uv,
        pip_compile=pip_compile,
        safepip_python=safepip_python,
        versions=versions,
        unavailable=unavailable,
    )


def _setup_safepip(
    *,
    venv: Path,
    source: Path,
    python: Path,
    uv: Path,
    env: Mapping[str, str],
    versions: dict[str, str],
    unavailable: dict[str, str],
    log: Log,
) -> Path | None:
    """Install safepip from the checkout into its own venv, bytecode compiled (so its first timed
    run does not pay for compiling safepip itself). Returns its python, or None."""
    safepip_python = venv / "bin" / "python"
    try:
        if not safepip_python.exists():
            _checked([str(uv), "venv", "--python", str(python), str(venv)], env, "creating venv")
        log(f"tools: installing safepip from {source}")
        _checked(
            [
                str(uv),
                "pip",
                "install",
                "--python",
                str(safepip_python),
                "--index-url",
                PYPI_SIMPLE,
                "--reinstall-package",
                "safepip",
                "--compile-bytecode",
                "--cache-dir",
                str(venv.parent / "uv-tool-cache"),
                str(source),
            ],
            env,
            "installing safepip",
        )
    except RuntimeError as exc:
        unavailable["safepip"] = f"could not install safepip from `{source}`: {_last_line(exc)}"
        return None
    described = _run(["git", "-C", str(source), "describe", "--always", "--dirty"], env)
    commit = described.stdout.strip() if described.returncode == 0 else "unknown commit"
    probe = _run([str(safepip_python), "-m", "safepip", "install", "--help"], env)
    if probe.returncode != 0:
        unavailable["safepip"] = (
            f"`python -m safepip install --help` failed: {_last_line(probe.stderr)}"
        )
        return safepip_python
    version = _run([str(safepip_python), "-m", "safepip", "--version"], env)
    text = (version.stdout.strip() or version.stderr.strip()) if version.returncode == 0 else ""
    versions["safepip"] = f"{text.removeprefix('safepip ') or 'unknown version'} ({commit})"
    for command in ("lock", "audit"):
        probe = _run([str(safepip_python), "-m", "safepip", command, "--help"], env)
        if probe.returncode != 0:
            unavailable[f"safepip {command}"] = (
                f"`safepip {command} --help` failed: {_last_line(probe.stderr)}"
            )
    return safepip_python


def _last_line(error: object) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"
