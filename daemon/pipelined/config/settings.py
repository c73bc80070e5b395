"""The daemon settings file (`/etc/pipelined/pipelined.toml`) → frozen `Settings`.

    settings = load_settings(path)                  # SettingsInvalid naming file, [section] and key
    settings = settings.with_overrides(conf_dir=Path("conf.d"), listen="127.0.0.1:9000")
    settings.daemon.conf_dir, settings.daemon.drain_timeout (seconds), settings.api.listen,
    settings.api.max_body (bytes), settings.api.token() -> str | None
    settings.check_bind(); settings.check_config_write(); settings.check_tls()   # exit 2 if refused

Every key has a default, so a missing default file means "all defaults". Unknown keys are errors
with a suggestion: `pipelined.toml: [api]: unknown key "listn" (did you mean "listen"?)`.
The file is read at start only; `changed_keys(old, new)` names what a reload would need a restart for.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipelined.config import setting_values as values
from pipelined.config.permissions import directory_above, refusal, writable_by_others
from pipelined.config.secrets import (
    SecretFileInvalid,
    expand_credentials,
    read_private_file,
    read_token,
    token_source,
)
from pipelined.errors import PipelinedError

DEFAULT_SETTINGS_PATH = Path("/etc/pipelined/pipelined.toml")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "text", "json", "journal")
SECTIONS = ("daemon", "api", "ray")


class SettingsInvalid(PipelinedError):
    """The settings file (or a flag) is invalid; the message names file, section and key."""


@dataclass(frozen=True)
class DaemonSettings:
    conf_dir: Path = Path("/etc/pipelined/conf.d")
    state_dir: Path = Path("/var/lib/pipelined")
    max_threads: int = 64
    max_processes: int = 8
    log_level: str = "info"
    log_format: str = "auto"
    drain_timeout: float = 30.0  # seconds
    read_paths: tuple[Path, ...] = ()  # built-in file stages may read here (and state_dir, conf_dir)
    write_paths: tuple[Path, ...] = ()  # ... and write here (and state_dir)

    def stage_roots(self) -> tuple[list[Path], list[Path]]:
        """(read roots, write roots) of built-in file stages: the defaults plus the settings."""
        state, conf = self.state_dir.absolute(), self.conf_dir.absolute()
        reads = [state, conf, *self.read_paths]
        writes = [state, *self.write_paths]
        return list(dict.fromkeys(reads)), list(dict.fromkeys(writes))
    dead_letter_files: int = 2  # per pipeline, the current one included (rotated at 64 MiB)


@dataclass(frozen=True)
class ApiSettings:
    listen: str = "127.0.0.1:8470"
    token_file: Path | None = None  # None: no auth (unless systemd passes the api.token credential)
    allow_insecure: bool = False
    config_write: bool = False
    max_body: int = 1024 * 1024  # bytes
    socket_mode: int = 0o600  # a unix socket's permission bits
    socket_group: str = ""  # a unix socket's group (name or number); "": the daemon's
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides the listen address and localhost
    tls_cert: Path | None = None  # PEM certificate (chain): serve HTTPS
    tls_key: Path | None = None  # its PEM private key (private: 0600)

    def token_source(self) -> Path | None:
        """The token's file: systemd's `$CREDENTIALS_DIRECTORY/api.token`, else token_file, else None."""
        return token_source(self.token_file)
    max_connections: int = 1024  # open API connections (and at most 3/4 of RLIMIT_NOFILE)

    def token(self) -> str | None:
        """The bearer token (file content, stripped), or None when there is no token file."""
        source = self.token_source()
        if source is None:
            return None
        try:
            return read_token(source)
        except SecretFileInvalid as exc:
            raise SettingsInvalid(str(exc)) from None

    @property
    def unix_socket(self) -> Path | None:
        """The socket path of a `unix:/path` listen address, else None."""
        return Path(self.listen[len("unix:") :]) if self.listen.startswith("unix:") else None

    @property
    def host_port(self) -> tuple[str, int]:
        """(host, port) of a TCP listen address (IPv6 hosts without brackets)."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert is not None

    def is_private_socket(self) -> bool:
        """A unix socket only the daemon's own user may use (mode 0600 or narrower)."""
        return self.unix_socket is not None and not self.socket_mode & 0o077

    def is_loopback(self) -> bool:
        """A unix socket, `localhost` or a loopback IP."""
        if self.unix_socket is not None:
            return True
        host = self.host_port[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class RaySettings:
    """Where `executor = "ray"` stages run (docs/config.md, Cluster execution)."""

    address: str = ""  # "": an embedded local instance started on first use; else "auto", "host:port", "ray://host:port"
    namespace: str = "pipelined"
    object_store_memory: int | None = None  # bytes, embedded instance only (None: 200 MiB)


@dataclass(frozen=True)
class Settings:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    source: Path | None = None  # the file read, None when defaults only

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply command-line flags (None values are ignored): keys of either section, by name."""
        daemon_names = {f.name for f in fields(DaemonSettings)}
        api_names = {f.name for f in fields(ApiSettings)}
        daemon_changes = {k: v for k, v in overrides.items() if v is not None and k in daemon_names}
        api_changes = {k: v for k, v in overrides.items() if v is not None and k in api_names}
        unknown = set(overrides) - daemon_names - api_names
        if unknown:
            raise TypeError(f"unknown settings override(s): {sorted(unknown)}")
        candidate = {"daemon": {**_as_raw(self.daemon), **daemon_changes}, "api": {**_as_raw(self.api), **api_changes},
                     "ray": _as_raw(self.ray)}
        return _build(candidate, "command line", self.source)

    def check_bind(self) -> None:
        """Refuse a non-loopback TCP listen address, or a unix socket others may use, without a
        token (unless allow_insecure)."""
        api = self.api
        if api.token_source() is not None or api.allow_insecure:
            return
        if api.unix_socket is not None and api.socket_mode & 0o006:
            raise SettingsInvalid(
                f"{self._where('api')}: socket_mode: refusing a unix socket every local user may use"
                f" ({api.socket_mode:04o}) without a token; set [api] token_file, or open it to a group"
                " only (socket_mode = \"0660\" and socket_group)"
            )
        if api.is_loopback():
            return
        raise SettingsInvalid(
            f"{self._where('api')}: listen: refusing to listen on non-loopback address {api.listen!r}"
            " without a token; set [api] token_file (or allow_insecure = true)"
        )

    def check_config_write(self) -> None:
        """Refuse `config_write = true` unless a token is set or the API is a unix socket of mode 0600.

        A pipeline file names any importable callable: whoever can write one through the API runs
        any code as the daemon's user.
        """
        api = self.api
        if not api.config_write or api.token_source() is not None or api.is_private_socket():
            return
        raise SettingsInvalid(
            f"{self._where('api')}: config_write: config_write = true lets an API caller run any code as"
            " the daemon's user; it is refused unless a token is set ([api] token_file) or the API"
            " listens only on a unix socket of mode 0600"
        )

    def check_tls(self) -> None:
        """tls_cert and tls_key together, on a TCP address, readable, the key private."""
        api = self.api
        if api.tls_cert is None and api.tls_key is None:
            return
        where = self._where("api")
        if api.tls_cert is None or api.tls_key is None:
            missing = "tls_key" if api.tls_key is None else "tls_cert"
            raise SettingsInvalid(f"{where}: {missing}: tls_cert and tls_key go together (HTTPS needs both)")
        if api.unix_socket is not None:
            raise SettingsInvalid(f"{where}: tls_cert: TLS needs a TCP listen address, not {api.listen!r}")
        try:
            read_private_file(api.tls_key, f"{where}: tls_key")
        except SecretFileInvalid as exc:
            raise SettingsInvalid(str(exc)) from None
        cert = expand_credentials(api.tls_cert)
        if not cert.is_file():
            raise SettingsInvalid(f"{where}: tls_cert: {cert} is not a readable file")

    def check_all(self) -> None:
        """Every check that makes `pipelined run` exit 2 before it listens."""
        self.check_bind()
        self.check_config_write()
        self.check_tls()

    def _where(self, section: str) -> str:
        return f"{self.source}: [{section}]" if self.source else f"[{section}]"


def load_settings(path: Path | None = None) -> Settings:
    """Read `path` (default /etc/pipelined/pipelined.toml; a missing default file = defaults).

    An explicitly given path must exist. Raises SettingsInvalid with the file, section and key,
    or when users other than root and the daemon's may write the file (config/permissions.py).
    """
    explicit = path is not None
    path = path if path is not None else DEFAULT_SETTINGS_PATH
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise SettingsInvalid(f"{path}: settings file not found") from None
        return Settings()
    except OSError as exc:
        raise SettingsInvalid(f"{path}: cannot read settings file: {exc.strerror}") from exc
    for target, what in ((path, "the settings file"), (path.absolute().parent, "its directory")):
        who = writable_by_others(target)
        if who is not None:  # it names the conf dir, python paths, the token: code and secrets
            raise SettingsInvalid(f"{path}: refused: {what} {refusal(target, who)}")
    above = directory_above(path.absolute().parent)
    if above is not None:
        raise SettingsInvalid(f"{path}: refused: a directory above it {refusal(*above)}")
    return parse_settings(data.decode("utf-8", errors="replace"), path)


def parse_settings(text: str, path: Path) -> Settings:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsInvalid(f"{path}: invalid TOML: {exc}") from exc
    except RecursionError:
        raise SettingsInvalid(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    for section, value in raw.items():
        if section not in SECTIONS:
            hint = _suggest(section, SECTIONS)
            raise SettingsInvalid(f"{path}: unknown section [{section}]{hint}")
        if not isinstance(value, dict):
            raise SettingsInvalid(f"{path}: [{section}] must be a table")
    return _build({section: raw.get(section, {}) for section in SECTIONS}, str(path), path)


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """`[section] key` for every setting that differs (what a reload cannot apply)."""
    changed = []
    for section in SECTIONS:
        a, b = getattr(old, section), getattr(new, section)
        changed += [f"[{section}] {f.name}" for f in fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    return changed


# -- validation --------------------------------------------------------------------------------


def _build(raw: dict[str, dict[str, Any]], where: str, source: Path | None) -> Settings:
    daemon = _section(DaemonSettings, raw["daemon"], f"{where}: [daemon]")
    api = _section(ApiSettings, raw["api"], f"{where}: [api]")
    ray = _section(RaySettings, raw.get("ray", {}), f"{where}: [ray]")
    return Settings(daemon=daemon, api=api, ray=ray, source=source)


def _section(cls: type[Any], values: dict[str, Any], where: str) -> Any:
    names = [f.name for f in fields(cls)]
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise SettingsInvalid(f'{where}: unknown key "{key}"{_suggest(key, names)}')
        try:
            converted[key] = _CONVERTERS[key](value)
        except (TypeError, ValueError) as exc:
            raise SettingsInvalid(f"{where}: {key}: {exc}") from None
    return cls(**converted)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _as_raw(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}


_CONVERTERS: dict[str, Any] = {
    "conf_dir": values.path,
    "state_dir": values.path,
    "max_threads": values.positive_int,
    "max_processes": values.positive_int,
    "log_level": values.choice(LOG_LEVELS),
    "log_format": values.choice(LOG_FORMATS),
    "drain_timeout": values.duration,
    "dead_letter_files": values.positive_int,
    "listen": values.listen,
    "token_file": values.optional_path,
    "allow_insecure": values.boolean,
    "config_write": values.boolean,
    "max_body": values.positive_size,
    "read_paths": values.path_list,
    "write_paths": values.path_list,
    "socket_mode": values.socket_mode,
    "socket_group": values.group,
    "allowed_hosts": values.host_list,
    "tls_cert": values.optional_path,
    "tls_key": values.optional_path,
    "max_connections": values.positive_int,
    "address": values.ray_address,
    "namespace": values.namespace,
    "object_store_memory": values.optional_size,
}
