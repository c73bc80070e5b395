"""What a reload reads from disk and how one pipeline's change is applied, transactionally.

- `scan_conf_dir(dir)` → the pipeline files by name, and files whose names are invalid;
- `content_key(path)` → (sha256 of the file, fingerprint of the `.py` files under its
  `python_path`): the unit of diffing — an unchanged key means nothing to do;
- `prepare(path)` → a validated, routed `PipelineVersion` or the error text, built before the
  running version is touched (only the modules under `python_path` whose files changed are
  re-imported, and put back if the file is invalid: code_modules.py);
- `apply_change(slot, prepared)` → "added" | "updated" | "failed" for one pipeline.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelined.config.load import pipeline_name_problem
from pipelined.config.permissions import declared_python_path, parsed_toml, permission_problem
from pipelined.config.spec import Problem
from pipelined.graph.check import parse_pipeline
from pipelined.graph.routing import build_graph
from pipelined.supervisor import code_modules
from pipelined.supervisor.slot import PipelineSlot, PipelineVersion

log = logging.getLogger("pipelined.reload")

PIPELINE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_CODE_FILES = 2000


@dataclass
class ReloadResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "added": sorted(self.added),
            "updated": sorted(self.updated),
            "removed": sorted(self.removed),
            "unchanged": sorted(self.unchanged),
            "failed": dict(sorted(self.failed.items())),
        }

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.failed)


@dataclass(frozen=True)
class Prepared:
    """The outcome of reading one file: a version to start, or the error (and the new key)."""

    name: str
    path: Path
    key: tuple[str, str]
    file_version: str
    version: PipelineVersion | None
    error: str | None
    used_code: dict[str, str] | None = None  # {file: sha256} of the python_path modules it imported


def is_pipeline_file(path: Path) -> bool:
    return path.suffix == ".toml" and not path.name.startswith((".", "_"))


def scan_conf_dir(conf_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """({name: path}, {file name: error}) for the `*.toml` files of the conf dir."""
    files: dict[str, Path] = {}
    bad_names: dict[str, str] = {}
    try:
        entries = sorted(conf_dir.iterdir())
    except FileNotFoundError:
        log.error("conf dir %s does not exist; no pipelines loaded", conf_dir)
        return files, bad_names
    for path in entries:
        if not is_pipeline_file(path) or not path.is_file():
            continue
        if PIPELINE_NAME.fullmatch(path.stem):
            files[path.stem] = path
        else:  # the very line `pipelined check` prints for it
            problem = pipeline_name_problem(path)
            bad_names[path.name] = str(problem) if problem else f"{path}: invalid pipeline name {path.stem!r}"
    return files, bad_names


def code_file_hashes(dirs: tuple[Path, ...]) -> dict[str, str]:
    """{path: sha256} of every `.py` file under `dirs` (at most MAX_CODE_FILES). Within one
    re-scan (`scan_memo()`) each directory is read once, however many pipelines share it."""
    hashes: dict[str, str] = {}
    for directory in dirs:
        memo = _SCAN_MEMO.get(directory) if _SCAN_MEMO is not None else None
        if memo is None:
            memo = _hash_directory(directory)
            if _SCAN_MEMO is not None:
                _SCAN_MEMO[directory] = memo
        for py, sha in memo.items():
            if len(hashes) >= MAX_CODE_FILES:
                break
            hashes.setdefault(py, sha)
    return hashes


def _hash_directory(directory: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for py in sorted(directory.rglob("*.py")) if directory.is_dir() else ():
        if "__pycache__" in py.parts or len(hashes) >= MAX_CODE_FILES:
            continue
        try:
            hashes[str(py)] = hashlib.sha256(py.read_bytes()).hexdigest()
        except OSError:
            continue
    return hashes


_SCAN_MEMO: dict[Path, dict[str, str]] | None = None


@contextlib.contextmanager
def scan_memo() -> Iterator[None]:
    """One re-scan of the conf dir: the code under a `python_path` is hashed once for all the
    pipelines that share it (a thousand pipelines on one directory: one pass, not a thousand)."""
    global _SCAN_MEMO
    _SCAN_MEMO = {}
    try:
        yield
    finally:
        _SCAN_MEMO = None


def code_fingerprint(dirs: tuple[Path, ...]) -> str:
    """sha256 over every `.py` file (path and content hash) under `dirs`; "" when there are none."""
    if not dirs:
        return ""
    digest = hashlib.sha256()
    for py, sha in code_file_hashes(dirs).items():
        digest.update(f"{py}\0{sha}\0".encode())
    return digest.hexdigest()


def same_code(used: dict[str, str] | None) -> bool:
    """True when every file a running version imported still has the content it was loaded
    with: a change elsewhere under its `python_path` is not this pipeline's."""
    if not used:
        return False
    for py, sha in used.items():
        try:
            if hashlib.sha256(Path(py).read_bytes()).hexdigest() != sha:
                return False
        except OSError:
            return False
    return True


def content_key(path: Path) -> tuple[tuple[str, str], str, bytes] | None:
    """((file sha256, code fingerprint), file sha12, bytes), or None if the file vanished."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    file_hash = hashlib.sha256(data).hexdigest()
    fingerprint = code_fingerprint(declared_python_path(path, data, resolve=True))
    refused = permission_problem(path)
    if refused is not None:  # a chmod that fixes (or breaks) it is a change a reload must see
        fingerprint += f"|refused: {refused.message}"
    return (file_hash, fingerprint), file_hash[:12], data


def _errors_text(problems: list[Problem] | tuple[Problem, ...]) -> str | None:
    errors = [str(p) for p in problems if p.severity == "error"]
    return "; ".join(errors) if errors else None


def prepare(
    name: str,
    path: Path,
    previous_dirs: tuple[Path, ...] = (),
    keyed: tuple[tuple[str, str], str, bytes] | None = None,
) -> Prepared | None:
    """Parse, validate and route one file (None if it vanished meanwhile).

    Only the `python_path` modules whose files changed are re-imported, and they are put back
    as they were when the file turns out invalid: running versions keep their code
    (code_modules.py)."""
    keyed = keyed or content_key(path)  # the re-scan's own reading of the file, when given
    if keyed is None:
        return None
    key, file_version, data = keyed
    refused = permission_problem(path)
    if refused is not None:  # before any of its code is imported
        return Prepared(name, path, key, file_version, None, str(refused))
    code_dirs = declared_python_path(path, data, resolve=True)
    dirs = tuple(dict.fromkeys((*previous_dirs, *code_dirs)))
    before_import = code_file_hashes(dirs)
    snapshot = code_modules.purge_changed(dirs, before_import)
    prepared = _parse_and_route(name, path, key, file_version, data)
    if prepared.version is None:
        snapshot.restore()
        return prepared
    if not dirs:
        return prepared
    code_modules.record_loaded(snapshot, before_import)
    used = code_modules.used_files(code_modules.call_modules(parsed_toml(data)), snapshot)
    return replace(prepared, used_code=used)


def _parse_and_route(name: str, path: Path, key: tuple[str, str], file_version: str, data: bytes) -> Prepared:
    try:
        spec, problems = parse_pipeline(data, path)  # the very bytes the key was made of
    except Exception as exc:  # noqa: BLE001 - a bug in parsing must fail only this file
        log.exception("%s: unexpected error while loading", path, extra={"pipeline": name})
        return Prepared(name, path, key, file_version, None, f"{path}: {type(exc).__name__}: {exc}")
    error = _errors_text(problems)
    if spec is None or error:
        return Prepared(name, path, key, file_version, None, error or f"{path}: invalid pipeline")
    routed = build_graph(spec)
    error = _errors_text(routed.problems)
    if error:
        return Prepared(name, path, key, file_version, None, error)
    warnings = tuple(p for p in problems if p.severity == "warning")  # logged by the caller (linkplan)
    return Prepared(name, path, key, file_version, PipelineVersion(spec, routed.graph, warnings), None)


def apply_change(slot: PipelineSlot, prepared: Prepared, is_new: bool) -> str:
    """Apply one changed file to its slot; returns "added", "updated" or "failed".

    Invalid → the running version keeps running untouched. Valid → drain old, start new; if the new
    one cannot start, the old one is started again and the error kept.
    """
    with slot.lock:
        slot.seen_key = prepared.key
        slot.file_version = prepared.file_version
        slot.path = prepared.path
        if prepared.version is None:
            return _failed(slot, prepared.error or "invalid pipeline", keeps_running=slot.runtime is not None)
        spec = prepared.version.spec
        if not spec.enabled:
            slot.disable(prepared.version)
            slot.running_key = prepared.key
            slot.record_reload(True, None)
            log.info("%s: disabled (version %s)", slot.name, spec.version, extra={"pipeline": slot.name})
            return "added" if is_new else "updated"
        error = slot.swap_to(prepared.version)
        if error is not None:
            return _failed(slot, error, keeps_running=slot.runtime is not None and slot.state == "running")
        slot.running_key = prepared.key
        slot.record_reload(True, None)
        log.info("%s: version %s %s", slot.name, spec.version, "started" if is_new else "now running",
                 extra={"pipeline": slot.name})  # fmt: skip
        return "added" if is_new else "updated"


def back_to_running(slot: PipelineSlot, key: tuple[str, str], file_version: str) -> bool:
    """After a failed edit, the file is back to what runs (content key equal): nothing to apply —
    the pipeline is not restarted, only its error is cleared. True when that is the case."""
    with slot.lock:
        if not slot.pending_error or slot.runtime is None or slot.running_key != key:
            return False
        slot.seen_key, slot.file_version = key, file_version
        slot.record_reload(True, None)
    log.info("%s: file is back to the running version %s; nothing to reload", slot.name, file_version,
             extra={"pipeline": slot.name})  # fmt: skip
    return True


def _failed(slot: PipelineSlot, error: str, keeps_running: bool) -> str:
    slot.record_reload(False, error)
    suffix = "; the previous version keeps running" if keeps_running else ""
    log.error("%s: reload failed: %s%s", slot.name, error, suffix, extra={"pipeline": slot.name})
    return "failed"


def remove(slot: PipelineSlot) -> None:
    with slot.lock:
        slot.drain_runtime()
        left = slot.book.discard_buffer()  # a disk buffer: what the drain left is dead-lettered "shutdown"
        log.info("%s: file removed; pipeline drained and removed%s", slot.name,
                 f" ({left} buffered items dead-lettered)" if left else "", extra={"pipeline": slot.name})
