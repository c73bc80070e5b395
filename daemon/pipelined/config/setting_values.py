"""Converters of the security settings (`[daemon] read_paths`/`write_paths`, `[api] socket_mode`,
`socket_group`, `allowed_hosts`): a raw TOML value → the typed value, or TypeError/ValueError
with a sentence `settings.py` prefixes with the file, section and key. Each accepts its own
output again (`Settings.with_overrides` converts every value once more).
"""

from __future__ import annotations

import grp
import re
from pathlib import Path
from typing import Any


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
