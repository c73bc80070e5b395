"""Import a stage's or hook's `module:attr` reference.

Uses `pipelined.callables.import_callable` when that module exists (it owns code reload and
classification); until then a plain importlib fallback with `python_path` on `sys.path`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def load_callable(ref: str, python_path: Sequence[Path] = ()) -> Any:
    """Return the object `ref` (`package.module:attr`) names; ImportError/AttributeError otherwise."""
    try:
        from pipelined.callables import import_callable
    except ImportError:
        return _import_plain(ref, python_path)
    return import_callable(ref, tuple(python_path))


def _import_plain(ref: str, python_path: Sequence[Path]) -> Any:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f"{ref!r} is not of the form 'package.module:attribute'")
    for entry in reversed([str(p) for p in python_path]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
