"""A file-backed keyring backend for tests: never the user's keyring.

Select it with `PYTHON_KEYRING_BACKEND=keyring_file_backend.FileKeyring` (this folder on
`PYTHONPATH`) and name its JSON file in `SAFEPIP_TEST_KEYRING`: `{"service": {"user": "pw"}}`.
Every lookup is appended to `<file>.log` as `service user-or-*`, so tests can see what was
asked. The real `keyring` command line uses it too (`keyring --mode=creds get …`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.credentials import SimpleCredential


def _path() -> Path:
    return Path(os.environ["SAFEPIP_TEST_KEYRING"])


def _load() -> dict[str, dict[str, str]]:
    path = _path()
    if not path.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data


def _log(service: str, username: str | None) -> None:
    with open(f"{_path()}.log", "a", encoding="utf-8") as log:
        log.write(f"{service} {username or '*'}\n")


class FileKeyring(KeyringBackend):
    priority = 1

    def get_password(self, service: str, username: str) -> str | None:
        _log(service, username)
        return _load().get(service, {}).get(username)

    def get_credential(self, service: str, username: str | None) -> SimpleCredential | None:
        _log(service, username)
        users = _load().get(service, {})
        if username is not None:
            password = users.get(username)
            return None if password is None else SimpleCredential(username, password)
        for user, password in users.items():
            return SimpleCredential(user, password)
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        data = _load()
        data.setdefault(service, {})[username] = password
        _path().write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = _load()
        data.get(service, {}).pop(username, None)
        _path().write_text(json.dumps(data))
