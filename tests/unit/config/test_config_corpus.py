"""The invalid-file corpus: every file in tests/unit/config/corpus/ is invalid, and says how.

Each `corpus/NN_name.toml` starts with one or more `# expect: <text>` lines; each text must be a
substring of one problem printed as `pipelined check` prints it, with the directory left out
(`NN_name.toml:LINE: NN_name/stage/key: message`). `# expect-not: <text>` must match none.
Test callables live in corpus/pkgs/ (each file sets `python_path = ["pkgs"]`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelined.graph.check import check_paths, load_pipeline

CORPUS = Path(__file__).resolve().parent / "corpus"
FILES = sorted(CORPUS.glob("*.toml"))


def _directives(path: Path, prefix: str) -> list[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


def test_the_corpus_is_large_enough() -> None:
    assert len(FILES) >= 45


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_corpus_file_is_invalid_with_its_expected_problem(path: Path) -> None:
    expected = _directives(path, "# expect: ")
    unexpected = _directives(path, "# expect-not: ")
    assert expected, f"{path.name} has no '# expect:' line"
    spec, problems = load_pipeline(path)
    printed = [str(p).replace(f"{CORPUS}/", "") for p in problems]
    assert spec is None, f"{path.name} loaded as valid: {printed}"
    for text in expected:
        assert any(text in line for line in printed), (
            f"{path.name}: no problem contains {text!r}:\n" + "\n".join(printed)
        )
    for text in unexpected:
        assert not any(text in line for line in printed), f"{path.name}: a problem contains {text!r}"


def test_check_paths_on_the_corpus_dir_counts_every_file_invalid() -> None:
    problems, checked, invalid = check_paths([CORPUS])
    assert checked == len(FILES)
    assert invalid == len(FILES)
    assert {Path(p.file).name for p in problems if p.severity == "error"} == {p.name for p in FILES}
