"""Files that hold secrets (the API token, a TLS key): where they are and that they are private.

    source = token_source(token_file)     # $CREDENTIALS_DIRECTORY/api.token when systemd gave it,
                                          # else [api] token_file, else None (no auth)
    token = read_token(source)            # SettingsInvalid: unreadable, empty, not private, or
                                          # holding what a header cannot carry (token_problem)

Under systemd the unit hands the token over as a credential (`LoadCredential=api.token:...`):
the daemon's dynamic user cannot own a file in /etc, and a credential is private to the service.
Paths in the settings may start with `$CREDENTIALS_DIRECTORY` (e.g. a TLS key passed with
`LoadCredential=tls.key:/etc/pipelined/tls.key`). A secret file readable or writable by group
or others, or owned by a user other than root and the daemon's, is refused, with the chmod or
chown that fixes it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipelined.config.permissions import trusted_owner, user_name
from pipelined.errors import PipelinedError

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
TOKEN_CREDENTIAL = "api.token"
_CREDENTIALS_PREFIXES = ("$CREDENTIALS_DIRECTORY", "${CREDENTIALS_DIRECTORY}")


class SecretFileInvalid(PipelinedError):
    """A secret file cannot be used; the message names the setting, the file and the fix."""


def expand_credentials(path: Path) -> Path:
    """`$CREDENTIALS_DIRECTORY/x` → the credential's path (unchanged when the variable is unset)."""
    text = str(path)
    directory = os.environ.get(CREDENTIALS_ENV)
    for prefix in _CREDENTIALS_PREFIXES:
        if text.startswith(prefix) and directory:
            return Path(directory + text[len(prefix) :])
    return path


def credential_token_file() -> Path | None:
    """`$CREDENTIALS_DIRECTORY/api.token` when systemd passed that credential, else None."""
    directory = os.environ.get(CREDENTIALS_ENV)
    if not directory:
        return None
    path = Path(directory) / TOKEN_CREDENTIAL
    return path if path.exists() else None


def token_source(token_file: Path | None) -> Path | None:
    """Where the token comes from: the systemd credential first, then `[api] token_file`."""
    return credential_token_file() or (expand_credentials(token_file) if token_file is not None else None)


def read_private_file(path: Path, setting: str) -> bytes:
    """The bytes of a secret file; SecretFileInvalid when unreadable or open to group or others."""
    expanded = expand_credentials(path)
    try:
        with open(expanded, "rb") as handle:
            status = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as exc:
        hint = ""
        if str(path).startswith(_CREDENTIALS_PREFIXES) and not os.environ.get(CREDENTIALS_ENV):
            hint = " ($CREDENTIALS_DIRECTORY is set only by systemd, for a unit with LoadCredential=)"
        raise SecretFileInvalid(f"{setting}: cannot read {expanded}: {exc.strerror or exc}{hint}") from None
    if status.st_uid not in (0, os.geteuid()):
        raise SecretFileInvalid(
            f"{setting}: {expanded} is owned by user {user_name(status.st_uid)!r}, who can read and change it:"
            f" refusing a secret another user controls; chown {trusted_owner()} {expanded}"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o066:
        raise SecretFileInvalid(
            f"{setting}: {expanded} is readable or writable by group or others (mode {mode:04o}):"
            f" refusing a secret others can read or change; chmod 600 {expanded}"
        )
    return data


def token_problem(token: str) -> str | None:
    """Why `token` cannot be a bearer token, or None. A token is printable ASCII (spaces inside
    allowed): HTTP clients send UTF-8 or refuse other characters, while the header is compared
    as Latin-1, so a `tökén` could never match what curl or `pipelined` send."""
    bad = next((ch for ch in token if not " " <= ch <= "~"), None)
    if bad is None:
        return None
    return f"holds {bad!r}, which a bearer token cannot: a token is printable ASCII (e.g. `openssl rand -hex 32`)"


def read_token(path: Path, setting: str = "[api]: token_file") -> str:
    """The bearer token in `path` (stripped); SecretFileInvalid when unreadable, loose, empty or
    not printable ASCII."""
    text = read_private_file(path, setting).decode("utf-8", errors="replace").strip()
    if not text:
        raise SecretFileInvalid(f"{setting}: {expand_credentials(path)} is empty")
    if problem := token_problem(text):
        raise SecretFileInvalid(f"{setting}: {expand_credentials(path)} {problem}")
    return text
