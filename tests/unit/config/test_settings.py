"""Settings file parsing: defaults, every key, unknown keys with suggestions, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelined.config.settings import Settings, SettingsInvalid, changed_keys, load_settings, parse_settings

FULL = """
[daemon]
conf_dir = "/srv/conf.d"
state_dir = "/srv/state"
max_threads = 10
max_processes = 3
log_level = "DEBUG"
log_format = "json"
drain_timeout = "2m"
dead_letter_files = 5

[api]
listen = "unix:/run/pipelined/api.sock"
token_file = "/etc/pipelined/token"
allow_insecure = true
config_write = true
max_body = "2MiB"
max_connections = 64
"""


def test_defaults_when_default_file_is_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("pipelined.config.settings.DEFAULT_SETTINGS_PATH", tmp_path / "none.toml")
    settings = load_settings(None)
    assert settings == Settings()
    assert settings.daemon.conf_dir == Path("/etc/pipelined/conf.d")
    assert settings.daemon.drain_timeout == 30.0
    assert settings.api.listen == "127.0.0.1:8470"
    assert settings.api.max_body == 1024 * 1024
    assert settings.api.token_file is None


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsInvalid, match="settings file not found"):
        load_settings(tmp_path / "missing.toml")


def test_every_key_parses(tmp_path: Path) -> None:
    settings = parse_settings(FULL, tmp_path / "pipelined.toml")
    assert settings.daemon.conf_dir == Path("/srv/conf.d")
    assert settings.daemon.max_threads == 10 and settings.daemon.max_processes == 3
    assert settings.daemon.log_level == "debug" and settings.daemon.log_format == "json"
    assert settings.daemon.drain_timeout == 120.0
    assert settings.daemon.dead_letter_files == 5
    assert settings.api.unix_socket == Path("/run/pipelined/api.sock")
    assert settings.api.token_file == Path("/etc/pipelined/token")
    assert settings.api.allow_insecure and settings.api.config_write
    assert settings.api.max_body == 2 * 1024 * 1024
    assert settings.api.max_connections == 64


def test_unknown_key_names_file_section_and_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "pipelined.toml"
    with pytest.raises(SettingsInvalid) as info:
        parse_settings('[api]\nlistn = "127.0.0.1:1"\n', path)
    assert str(info.value) == f'{path}: [api]: unknown key "listn" (did you mean "listen"?)'


def test_unknown_section_and_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "pipelined.toml"
    with pytest.raises(SettingsInvalid, match=r"unknown section \[deamon\] \(did you mean \"daemon\"\?\)"):
        parse_settings("[deamon]\n", path)
    with pytest.raises(SettingsInvalid, match="invalid TOML"):
        parse_settings("[daemon\n", path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[daemon]\nmax_threads = 0", r"\[daemon\]: max_threads: expected an integer >= 1, got 0"),
        ('[daemon]\nlog_format = "xml"', r"\[daemon\]: log_format: expected one of auto, text, json, journal"),
        ('[daemon]\ndrain_timeout = "soon"', r"\[daemon\]: drain_timeout: "),
        ("[daemon]\ndead_letter_files = 0", r"\[daemon\]: dead_letter_files: expected an integer >= 1, got 0"),
        ('[api]\nlisten = "nowhere"', r"\[api\]: listen: expected \"host:port\""),
        ('[api]\nallow_insecure = "yes"', r"\[api\]: allow_insecure: expected true or false"),
        ('[api]\nmax_body = "lots"', r"\[api\]: max_body: "),
    ],
)
def test_invalid_values_name_section_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsInvalid, match=message):
        parse_settings(text, tmp_path / "pipelined.toml")


def test_flags_override_file(tmp_path: Path) -> None:
    settings = parse_settings(FULL, tmp_path / "pipelined.toml")
    overridden = settings.with_overrides(conf_dir=Path("conf.d"), listen="127.0.0.1:9000", log_format=None)
    assert overridden.daemon.conf_dir == Path("conf.d")
    assert overridden.daemon.log_format == "json"
    assert overridden.api.listen == "127.0.0.1:9000"
    assert changed_keys(settings, overridden) == ["[daemon] conf_dir", "[api] listen"]


def test_non_loopback_bind_needs_token_or_allow_insecure(tmp_path: Path) -> None:
    path = tmp_path / "pipelined.toml"
    Settings().check_bind()
    parse_settings('[api]\nlisten = "[::1]:8470"', path).check_bind()
    with pytest.raises(SettingsInvalid, match="refusing to listen on non-loopback address '0.0.0.0:8470'"):
        parse_settings('[api]\nlisten = "0.0.0.0:8470"', path).check_bind()
    parse_settings('[api]\nlisten = "0.0.0.0:8470"\nallow_insecure = true', path).check_bind()
    parse_settings('[api]\nlisten = "0.0.0.0:8470"\ntoken_file = "/t"', path).check_bind()


def test_token_is_read_and_stripped(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    settings = parse_settings(f'[api]\ntoken_file = "{token}"', tmp_path / "pipelined.toml")
    assert settings.api.token() == "s3cret"
    token.write_text("\n")
    with pytest.raises(SettingsInvalid, match="is empty"):
        settings.api.token()
