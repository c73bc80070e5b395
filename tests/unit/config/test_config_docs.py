"""docs/config.md stays true: every example there loads as documented, and every diagram and
`pipelined check` transcript under an example is exactly what pipelined prints for it.

Examples are ```toml blocks whose first line is `# example: NAME.toml`; `(invalid)` after the
name means it must fail, `(needs ...)` that it needs user code (then only its TOML is parsed).
Among the blocks that directly follow an example (nothing but blank lines between them), a
```mermaid block is its `pipelined graph`, and a ```console block starting with
`$ pipelined check NAME.toml` is that command's output.
Regenerate both after a deliberate change with:  .venv/bin/python tests/unit/config/test_config_docs.py
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelined.cli.offline import graph_text, summary
from pipelined.graph.check import check_paths, load_pipeline

DOC = Path(__file__).resolve().parents[3] / "docs" / "config.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
EXAMPLE = re.compile(r"^# example: (\S+\.toml)(.*)$")


@dataclass(frozen=True)
class Example:
    name: str
    note: str
    toml: str
    followers: tuple[tuple[str, str, int, int], ...]  # (language, body, start, end) of blocks right after


def examples(text: str) -> list[Example]:
    blocks = list(FENCE.finditer(text))
    found = []
    for i, block in enumerate(blocks):
        header = EXAMPLE.match(block.group(2).split("\n", 1)[0]) if block.group(1) == "toml" else None
        if header is None:
            continue
        followers = []
        previous = block
        for nxt in blocks[i + 1 :]:
            if text[previous.end() : nxt.start()].strip() or nxt.group(1) == "toml":
                break
            followers.append((nxt.group(1), nxt.group(2), nxt.start(2), nxt.end(2)))
            previous = nxt
        found.append(Example(header.group(1), header.group(2), block.group(2), tuple(followers)))
    return found


def expected_follower(example: Example, language: str, body: str, directory: Path) -> str | None:
    """What a block after `example` should contain (None: not a generated block)."""
    path = directory / example.name
    path.write_text(example.toml)
    if language == "mermaid":
        spec, problems = load_pipeline(path)
        assert spec is not None, [str(p) for p in problems]
        return graph_text(spec, "mermaid")
    if language == "console" and body.startswith(f"$ pipelined check {example.name}\n"):
        problems, checked, invalid = check_paths([path])
        lines = [str(p).replace(str(path), example.name) for p in problems]
        return (
            "\n".join([f"$ pipelined check {example.name}", *lines, summary(problems, checked, invalid)])
            + "\n"
        )
    return None


def regenerate(directory: Path) -> str:
    text = DOC.read_text()
    for example in reversed(examples(text)):
        for language, body, start, end in reversed(example.followers):
            wanted = expected_follower(example, language, body, directory)
            if wanted is not None:
                text = text[:start] + wanted + text[end:]
    return text


DOC_EXAMPLES = examples(DOC.read_text())


def test_the_doc_has_an_example_with_a_diagram_for_every_routing_rule() -> None:
    diagrams = [e for e in DOC_EXAMPLES if any(f[0] == "mermaid" for f in e.followers)]
    assert len(diagrams) >= 8


@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=[e.name for e in DOC_EXAMPLES])
def test_doc_example(example: Example, tmp_path: Path) -> None:
    tomllib.loads(example.toml)
    if "(needs" in example.note:
        return
    path = tmp_path / example.name
    path.write_text(example.toml)
    spec, problems = load_pipeline(path)
    if "(invalid)" in example.note:
        assert spec is None
    else:
        assert spec is not None, [str(p) for p in problems]
    for language, body, _, _ in example.followers:
        wanted = expected_follower(example, language, body, tmp_path)
        assert wanted is None or body == wanted, f"regenerate: {sys.executable} {__file__}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        DOC.write_text(regenerate(Path(scratch)))
    print(f"regenerated the diagrams and transcripts in {DOC}")
