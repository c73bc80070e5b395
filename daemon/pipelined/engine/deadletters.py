"""Dead letters of one pipeline: the full letter on disk, a bounded preview in memory.

File: `<state_dir>/dead-letters/<pipeline>.jsonl`, one JSON line per letter with every field
(id, run, stage, at, attempts, error, traceback, item — the whole item as JSON, or its `repr`
when it is not JSON-serialisable). It is rotated at 64 MiB: `<pipeline>.jsonl.1` … `.N-1` are
the older files, N = `[daemon] dead_letter_files` (the current one included, default 2); the
oldest is deleted then, and that is logged with how many letters it held.

Memory holds the newest letters for the API, bounded by count (`KEPT_IN_MEMORY`) *and* bytes
(`MEMORY_BYTES` per pipeline): an item whose JSON is longer than `ITEM_PREVIEW_BYTES` is kept as
the start of its JSON text (a string, `"truncated": true`), a traceback as its last
`TRACEBACK_PREVIEW_CHARS` characters. Listing costs O(limit). At start the files are streamed
back line by line, so memory never holds more than the bounded previews and one line. The files are 0600 and their directory 0700 whatever the umask
(letters hold item contents).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipelined.engine.runs import RUN_PREFIX, utc_now_iso

log = logging.getLogger("pipelined.engine")

ROTATE_BYTES = 64 * 1024 * 1024
DEFAULT_FILES = 2  # the current file and one older (`[daemon] dead_letter_files`)
KEPT_IN_MEMORY = 10_000
MEMORY_BYTES = 16 * 1024 * 1024  # per pipeline, previews included
ITEM_PREVIEW_BYTES = 64 * 1024
TRACEBACK_PREVIEW_CHARS = 8192
LETTER_OVERHEAD = 600  # bytes of Python objects per letter besides its text
_COUNT_CHUNK = 1 << 20


def item_json_bytes(item: Any) -> bytes:
    """The item as JSON text; its `repr` (as a JSON string) when orjson cannot encode it."""
    try:
        return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_safe_repr(item))


def item_as_json(item: Any) -> Any:
    """The item as a JSON value, or its repr when orjson cannot encode it."""
    return orjson.loads(item_json_bytes(item))


def _safe_repr(item: Any) -> str:
    try:
        return repr(item)
    except Exception as exc:  # noqa: BLE001 - a broken (or too deep) __repr__ must not lose the letter
        return f"<unrepresentable {type(item).__name__}: {exc}>"


def preview_of(item_json: bytes) -> tuple[Any, bool]:
    """(what memory keeps of an item's JSON text, whether it was cut)."""
    if len(item_json) <= ITEM_PREVIEW_BYTES:
        return orjson.loads(item_json), False
    head = item_json[:ITEM_PREVIEW_BYTES].decode("utf-8", errors="ignore")
    return f"{head}… ({len(item_json)} bytes; the whole item is in the dead-letter file)", True


def _tail(text: str | None) -> str | None:
    if text is None or len(text) <= TRACEBACK_PREVIEW_CHARS:
        return text
    return "…" + text[-TRACEBACK_PREVIEW_CHARS:]


class DeadLetterStore:
    def __init__(
        self,
        pipeline: str,
        state_dir: Path | None,
        *,
        rotate_bytes: int = ROTATE_BYTES,
        files: int = DEFAULT_FILES,
        keep: int = KEPT_IN_MEMORY,
        memory_bytes: int = MEMORY_BYTES,
    ) -> None:
        self.pipeline = pipeline
        self.rotate_bytes = rotate_bytes
        self.files = max(1, files)
        self.keep = keep
        self.memory_bytes = memory_bytes
        self.path = None if state_dir is None else Path(state_dir) / "dead-letters" / f"{pipeline}.jsonl"
        self._letters: deque[tuple[dict[str, Any], int]] = deque()  # (preview letter, its size)
        self._bytes = 0
        self._highest_run = 0
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._prefix = uuid.uuid4().hex[:8]
        self._seq = itertools.count(1)
        self._read_back()

    # -- memory ------------------------------------------------------------------------------
    def _remember(self, letter: dict[str, Any], size: int) -> None:
        """Keep a preview (lock held, or during __init__), dropping the oldest over the caps."""
        self._letters.append((letter, size))
        self._bytes += size
        while self._letters and (len(self._letters) > self.keep or self._bytes > self.memory_bytes):
            _, dropped = self._letters.popleft()
            self._bytes -= dropped
        run = letter.get("run")
        if isinstance(run, str) and run.startswith(RUN_PREFIX) and run[len(RUN_PREFIX):].isdigit():
            self._highest_run = max(self._highest_run, int(run[len(RUN_PREFIX):]))

    @property
    def memory_used(self) -> int:
        """Bytes the in-memory previews take (estimated): at most `memory_bytes`."""
        return self._bytes

    def _old_file(self, n: int) -> Path:
        assert self.path is not None
        return self.path.with_name(f"{self.path.name}.{n}")

    def _read_back(self) -> None:
        if self.path is None:
            return
        for path in [self._old_file(n) for n in range(self.files - 1, 0, -1)] + [self.path]:
            try:
                fh = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot read dead letters from %s: %s", path, exc, extra={"pipeline": self.pipeline})
                continue
            with fh:
                for line in fh:  # one line at a time: a 50 MB item is never held twice
                    self._read_line(path, line)

    def _read_line(self, path: Path, line: bytes) -> None:
        try:
            stored = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("skipping a corrupt line in %s", path, extra={"pipeline": self.pipeline})
            return
        if not isinstance(stored, dict):
            return
        if len(line) > ITEM_PREVIEW_BYTES:
            item, truncated = preview_of(item_json_bytes(stored.get("item")))
        else:
            item, truncated = stored.get("item"), False
        letter = {**stored, "traceback": _tail(stored.get("traceback")), "item": item, "truncated": truncated}
        del stored
        self._remember(letter, len(orjson.dumps(letter)) + LETTER_OVERHEAD)

    # -- recording ---------------------------------------------------------------------------
    def add(
        self, run: str, stage: str, attempts: int, error: str, item: Any, traceback: str | None = None
    ) -> dict[str, Any]:
        return self.add_many(run, stage, attempts, error, [item], traceback)[0]

    def add_many(
        self,
        run: str,
        stage: str,
        attempts: int,
        error: str,
        items: Iterable[Any],
        traceback: str | None = None,
    ) -> list[dict[str, Any]]:
        """Record one dead letter per item (same run, stage, attempts, error and traceback);
        returns the in-memory previews."""
        at = utc_now_iso()
        bodies: list[bytes] = []  # each letter's JSON without its id (taken under the lock)
        previews: list[dict[str, Any]] = []
        short_traceback = _tail(traceback)
        for item in items:
            fields = {"run": run, "stage": stage, "at": at, "attempts": attempts, "error": error}
            item_json = item_json_bytes(item)
            bodies.append(orjson.dumps({**fields, "traceback": traceback, "item": orjson.Fragment(item_json)}))
            item_preview, truncated = preview_of(item_json)
            del item_json
            previews.append({"id": "", **fields, "traceback": short_traceback, "item": item_preview,
                             "truncated": truncated})  # fmt: skip
        sizes = [len(orjson.dumps(letter)) + LETTER_OVERHEAD for letter in previews]
        with self._lock:  # ids are taken under the lock: they increase in file order
            lines = []
            for letter, size, body in zip(previews, sizes, bodies, strict=True):
                letter["id"] = f"dl-{self._prefix}-{next(self._seq):06d}"
                lines.append(b'{"id":' + orjson.dumps(letter["id"]) + b"," + body[1:] + b"\n")
                self._remember(letter, size)
            self._write(b"".join(lines))
        return previews

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, at most `limit` (previews; O(limit))."""
        with self._lock:
            return [letter for letter, _ in itertools.islice(reversed(self._letters), max(0, limit))]

    def highest_run_number(self) -> int:
        """The largest N of the run ids `r-N` the stored letters name (0 if none)."""
        with self._lock:
            return self._highest_run

    def __len__(self) -> int:
        return len(self._letters)

    # -- the file ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.path is None or not data:
            return
        try:
            if self._file is None:
                self._file = _open_private(self.path)
            self._file.write(data)
            self._file.flush()
            if self._file.tell() >= self.rotate_bytes:
                self._rotate()
        except OSError as exc:
            log.error("cannot write dead letters to %s: %s", self.path, exc, extra={"pipeline": self.pipeline})

    def _rotate(self) -> None:
        """Current → `.1` → … → `.N-1`; what falls off the end is deleted, and logged."""
        assert self.path is not None and self._file is not None
        self._file.close()
        self._file = None
        doomed = self._old_file(self.files - 1) if self.files > 1 else self.path
        if doomed.exists():
            letters = _count_lines(doomed)
            doomed.unlink()
            log.warning(
                "dead letters: %s reached %s; deleted %s with its %d letter(s) "
                "(`[daemon] dead_letter_files = %d` keeps %d file(s) per pipeline)",
                self.path.name, _size_text(self.rotate_bytes), doomed.name, letters, self.files, self.files,
                extra={"pipeline": self.pipeline},
            )  # fmt: skip
        for n in range(self.files - 2, 0, -1):
            if self._old_file(n).exists():
                os.replace(self._old_file(n), self._old_file(n + 1))
        if self.files > 1:
            os.replace(self.path, self._old_file(1))
            log.info("dead letters: %s reached %s; now %s", self.path.name,
                     _size_text(self.rotate_bytes), self._old_file(1).name,
                     extra={"pipeline": self.pipeline})  # fmt: skip

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _open_private(path: Path) -> BinaryIO:
    """`path` opened for appending, 0600 (also when it existed looser), its directory 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.parent.stat()
    if status.st_mode & 0o077 and status.st_uid == os.geteuid():
        os.chmod(path.parent, 0o700)  # mkdir's mode is reduced by the umask; an older version made it 0755
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)  # written by an older version, or created by hand
    return os.fdopen(fd, "ab")


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_COUNT_CHUNK):
            count += chunk.count(b"\n")
    return count


def _size_text(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size} bytes"
