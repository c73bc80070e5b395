"""Converters of the settings file's values (paths, sizes, durations, `listen`, the Ray address,
and the security settings `read_paths`/`write_paths`, `socket_mode`, `socket_group`,
`allowed_hosts`): a raw TOML value → the typed value, or TypeError/ValueError with a sentence
`settings.py` prefixes with the file, section and key. Each accepts its own output again
(`Settings.with_overrides` converts every value once more).
"""

from __future__ import annotations

import grp
import re
from pathlib import Path
from typing import Any

from pipelined.config.durations import parse_duration, parse_size


def path_list(value: Any) -> tuple[Path, ...]:
    if isinstance(value, tuple) and all(isinstance(v, Path) for v in value):
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"expected a list of absolute directory paths, got {value!r}")
    relative = [v for v in value if not v.startswith("/")]
    if relative:
        raise ValueError(f"expected absolute paths, got {relative[0]!r}")
    return tuple(Path(v) for v in value)


def socket_mode(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    raise ValueError(f'expected an octal mode like "0600" or "0660" (a string, or 0o660), got {value!r}')


def group(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a group name or number (a string), got {value!r}")
    if value and not value.isdigit():
        try:
            grp.getgrnam(value)
        except KeyError:
            raise ValueError(f"no such group {value!r}") from None
    return value


def host_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f'expected a list of host names like ["pipelined.example.com"], got {value!r}')
    for host in value:
        if "/" in host or " " in host or ("*" in host and not host.startswith("*.")) or host == "*":
            raise ValueError(
                f'expected host names (a leading "*." for subdomains), without scheme or path, got {host!r}'
            )
    return tuple(v.lower() for v in value)


def path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty path string, got {value!r}")
    return Path(value)


def optional_path(value: Any) -> Path | None:
    return None if value in ("", None) else path(value)


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def choice(choices: tuple[str, ...]) -> Any:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return convert


def duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def positive_size(value: Any) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def ray_address(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f'expected "" (embedded), "auto", "host:port" or "ray://host:port", got {value!r}')
    value = value.strip()
    if value in ("", "auto") or value.startswith("ray://"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "" (embedded), "auto", "host:port" or "ray://host:port", got {value!r}')
    return value


def namespace(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value.strip()


def optional_size(value: Any) -> int | None:
    if value in ("", None):
        return None
    size = positive_size(value)
    if size < 75 * 1024 * 1024:  # Ray refuses a smaller object store
        raise ValueError(f"expected at least 75MiB (the smallest object store Ray accepts), got {value!r}")
    return size


def listen(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f'expected "host:port" or "unix:/path", got {value!r}')
    if value.startswith("unix:"):
        if not value[len("unix:") :].startswith("/"):
            raise ValueError(f'expected an absolute socket path after "unix:", got {value!r}')
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "host:port" (port 1-65535) or "unix:/path", got {value!r}')
    return value
