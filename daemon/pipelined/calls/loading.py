"""Import a stage's or hook's `module:attr` reference (with the pipeline's `python_path`).

`pipelined.config.importing.import_callable` owns the import (code reload, `python_path`); this
is the engine's and the workers' one way in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelined.config.importing import import_callable


def load_callable(ref: str, python_path: Sequence[Path] = ()) -> Any:
    """Return the object `ref` (`package.module:attr`) names; ImportError/AttributeError otherwise."""
    return import_callable(ref, tuple(python_path))
