"""`python_path` as a pipeline file declares it: one reader for the permission check (as
written), the re-scan's code fingerprint and the watcher (where the code really is)."""

from __future__ import annotations

from pathlib import Path

from pipelined.config.permissions import declared_python_path
from pipelined.supervisor import reload


def test_one_reader_serves_the_permission_check_the_rescan_and_the_watcher(tmp_path: Path) -> None:
    real = tmp_path / "real-code"
    real.mkdir()
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "code").symlink_to(real)
    path = conf / "p.toml"
    data = b'python_path = ["code", "../other/./lib", 3]\n[[stage]]\nname = "a"\ncall = "m:f"\n'
    path.write_bytes(data)
    assert declared_python_path(path) == (conf / "code", tmp_path / "other" / "lib")  # as written
    assert declared_python_path(path, data, resolve=True) == (real, tmp_path / "other" / "lib")
    assert declared_python_path(path, b"# nothing declared\n") == ()
    assert declared_python_path(path, b"python_path = [\n") == ()  # invalid TOML: loading says so
    assert declared_python_path(tmp_path / "gone.toml") == ()
    assert not hasattr(reload, "declared_code_dirs")  # the re-scan no longer has its own copy
