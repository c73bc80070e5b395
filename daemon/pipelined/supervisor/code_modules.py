"""The `python_path` modules the daemon has imported: what changed, what a pipeline uses, and
re-importing only what must be re-imported.

Every module lives once in `sys.modules`, shared by every running version that imported it, and
items are pickled for worker processes by reference to their classes (`codemod.Point`): a module
re-imported under a running version's feet gives that version's classes a twin, and every one of
its items then fails to pickle ("not the same object"). So a version's code stays the code it
started with until that version is replaced:
- `purge_changed(dirs, hashes)` forgets only the modules under `dirs` whose file changed since it
  was imported (or is gone), the modules that refer to them, and their submodules — never one
  that has not changed, so an invalid file, an unrelated pipeline with the same `python_path`
  or a reverted edit re-imports nothing;
- `CodeSnapshot.restore()` puts the forgotten modules back (and drops what the failed attempt
  imported) when the new version turned out invalid, so the running one keeps its code;
- `record_loaded(...)` remembers the content each module was imported from;
- `used_files(refs, dirs, snapshot)` names the files a pipeline's code uses: the modules of its
  `call`/hook references and what they refer to, transitively, plus what its import loaded.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# file -> sha256 of the content its module was imported from (filled by record_loaded)
_LOADED: dict[str, str] = {}


def _roots(dirs: tuple[Path, ...]) -> tuple[str, ...]:
    return tuple(str(d) + "/" for d in dirs)


def _file_of(module: Any) -> str | None:
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return None
    try:
        return str(Path(file).resolve())
    except (OSError, ValueError):
        return None


def modules_under(dirs: tuple[Path, ...]) -> dict[str, tuple[ModuleType, str]]:
    """{module name: (module, its file)} for every imported module whose file is under `dirs`."""
    if not dirs:
        return {}
    roots = _roots(dirs)
    found = {}
    for name, module in list(sys.modules.items()):
        file = _file_of(module)
        if file is not None and file.startswith(roots):
            found[name] = (module, file)
    return found


def _refers_to(module: ModuleType, names: set[str]) -> bool:
    """Whether a module's globals hold one of the modules `names`, or an object defined there."""
    for value in list(vars(module).values()):
        try:
            owner = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        except Exception:  # noqa: BLE001 - any object may sit in a module's globals
            continue
        if isinstance(owner, str) and owner in names:
            return True
    return False


@dataclass
class CodeSnapshot:
    """What one attempt to load a pipeline's code changed in `sys.modules` (to undo it)."""

    dirs: tuple[Path, ...]
    purged: dict[str, ModuleType] = field(default_factory=dict)
    before: set[str] = field(default_factory=set)  # module names under dirs before the attempt

    def restore(self) -> None:
        """Undo the attempt: drop the modules it imported, bring back the ones it purged."""
        for name in modules_under(self.dirs):
            if name not in self.before or name in self.purged:
                sys.modules.pop(name, None)
        sys.modules.update(self.purged)
        importlib.invalidate_caches()

    def new_modules(self) -> dict[str, tuple[ModuleType, str]]:
        """The modules under dirs that the attempt imported (fresh or re-imported)."""
        return {
            name: found
            for name, found in modules_under(self.dirs).items()
            if name not in self.before or name in self.purged
        }


def purge_changed(dirs: tuple[Path, ...], hashes: dict[str, str]) -> CodeSnapshot:
    """Forget the modules under `dirs` whose file's content (`hashes`: file → sha256 now) is not
    the one they were imported from, with everything that refers to them."""
    loaded = modules_under(dirs)
    snapshot = CodeSnapshot(dirs, before=set(loaded))
    stale = {
        name for name, (_module, file) in loaded.items()
        if hashes.get(file) is None or _LOADED.get(file, hashes[file]) != hashes[file]
    }  # fmt: skip
    grew = bool(stale)
    while grew:  # dependents and submodules of what is stale are stale too
        grew = False
        for name, (module, _file) in loaded.items():
            if name in stale:
                continue
            if any(name.startswith(parent + ".") for parent in stale) or _refers_to(module, stale):
                stale.add(name)
                grew = True
    for name in stale:
        snapshot.purged[name] = loaded[name][0]
        sys.modules.pop(name, None)
    if stale:
        importlib.invalidate_caches()
    return snapshot


def record_loaded(snapshot: CodeSnapshot, hashes: dict[str, str]) -> None:
    """Remember the content (as hashed before the import) each newly imported module came from."""
    for _name, (_module, file) in snapshot.new_modules().items():
        _LOADED[file] = hashes.get(file, "")
    for _name, (_module, file) in modules_under(snapshot.dirs).items():
        _LOADED.setdefault(file, hashes.get(file, ""))


def call_modules(raw: Any) -> set[str]:
    """Module names of every `module:attr` string in a parsed pipeline file (calls, hooks)."""
    found: set[str] = set()
    stack = [raw]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and value.count(":") == 1:
            module = value.split(":")[0]
            if module and all(part.isidentifier() for part in module.split(".")):
                found.add(module)
    return found


def used_files(refs: set[str], snapshot: CodeSnapshot) -> dict[str, str]:
    """{file: sha256 it was imported from} of the code under the snapshot's dirs that a pipeline
    uses: the modules it names and what they refer to, transitively, their parent packages,
    and whatever its import loaded."""
    loaded = modules_under(snapshot.dirs)
    todo = [name for name in refs if name in loaded] + list(snapshot.new_modules())
    used: set[str] = set()
    while todo:
        name = todo.pop()
        if name in used or name not in loaded:
            continue
        used.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        module = loaded[name][0]
        for value in list(vars(module).values()):
            try:
                owner = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            except Exception:  # noqa: BLE001
                continue
            if isinstance(owner, str) and owner in loaded and owner not in used:
                todo.append(owner)
    return {loaded[name][1]: _LOADED.get(loaded[name][1], "") for name in sorted(used)}
