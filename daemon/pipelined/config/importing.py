"""Import a stage's or hook's `module:attr` reference with the pipeline's `python_path`.

    fn = import_callable("orders.enrich:enrich", [Path("/etc/pipelined/code")])
    module_origin("orders", [Path("/etc/pipelined/code")])   # the file "orders" resolves to

Importing user code never raises anything but `CallableError` (whatever the module does on
import becomes that error's message). `python_path` directories are put at the front of
`sys.path` and stay there, since user modules may import lazily while they run.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CALL_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class CallableError(ImportError):
    """A `module:attr` reference cannot be imported or is not callable; the message says why.

    An ImportError, so callers that catch import failures in general catch this one too.
    """


def import_callable(ref: str, python_path: Sequence[Path] = ()) -> object:
    """Import `module:attr` (attr may be dotted) with `python_path` first on sys.path."""
    if not isinstance(ref, str) or not CALL_REF.match(ref):
        raise CallableError(f'bad reference "{ref}": expected "package.module:attribute"')
    module_name, attr_path = ref.split(":")
    _put_on_sys_path(python_path)
    _forget_shadowed_module(module_name.split(".")[0], python_path)
    module = _import_module(module_name, python_path)
    obj: object = module
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise CallableError(f'module "{module_name}" has no attribute "{attr_path}"') from None
    if not callable(obj):
        raise CallableError(f'"{ref}" is not callable (it is {type(obj).__name__} {_short_repr(obj)})')
    return obj


def _short_repr(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def _put_on_sys_path(python_path: Sequence[Path]) -> None:
    for directory in reversed([str(d) for d in python_path]):
        if directory not in sys.path:
            sys.path.insert(0, directory)


def module_origin(top_level: str, python_path: Sequence[Path] = ()) -> str | None:
    """The file a top-level module name resolves to with `python_path` first (None: not found)."""
    search = [str(d) for d in python_path] + [p for p in sys.path if p not in {str(d) for d in python_path}]
    try:
        found = importlib.machinery.PathFinder.find_spec(top_level, search)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.origin and found.origin not in ("built-in", "frozen", "namespace"):
        return found.origin
    locations = list(found.submodule_search_locations or [])
    return locations[0] if locations else None


def _forget_shadowed_module(top_level: str, python_path: Sequence[Path]) -> None:
    """Drop a cached module of the same name that lives elsewhere than this python_path's."""
    cached = sys.modules.get(top_level)
    if cached is None or not python_path:
        return
    importlib.invalidate_caches()
    wanted = importlib.machinery.PathFinder.find_spec(top_level, [str(d) for d in python_path])
    if wanted is None or wanted.origin == getattr(cached, "__file__", None):
        return
    for name in [n for n in sys.modules if n == top_level or n.startswith(top_level + ".")]:
        del sys.modules[name]


def _import_module(module_name: str, python_path: Sequence[Path]) -> Any:
    cached = sys.modules.get(module_name)
    if cached is not None:
        return cached  # what import_module would return, without invalidating every finder's cache
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            where = ", ".join(str(d) for d in python_path) or "sys.path"
            raise CallableError(f'module "{module_name}" not found (python_path: {where})') from None
        raise CallableError(f'importing module "{module_name}" failed: {_describe(exc)}') from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, even SystemExit
        raise CallableError(f'importing module "{module_name}" failed: {_describe(exc)}') from None


def _describe(exc: BaseException) -> str:
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" ({Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})"
    return f"{type(exc).__name__}: {exc}{where}"
