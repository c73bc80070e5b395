"""The package layering of daemon/pipelined/ stays true (docs/architecture.md, Layers).

Every module is parsed with `ast`; every import counts, at the top, inside functions and under
`if TYPE_CHECKING:`. The test fails on an import cycle between modules, a cycle between
packages, an import of a higher layer, or a built-in stage that imports more than the layers
user code may see.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "daemon"
PACKAGE = "pipelined"

# lowest first; a module may import from its own layer or a lower one
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pipelined.errors", "pipelined.logcontext", "pipelined.tracing"),
    ("pipelined.config",),
    ("pipelined.graph",),
    ("pipelined.calls",),
    ("pipelined.workers",),
    ("pipelined.engine",),
    ("pipelined.supervisor",),
    ("pipelined.api",),
    ("pipelined.host",),
    ("pipelined.cli",),
)
TOP = {"pipelined", "pipelined.__main__"}  # the package itself (`__version__`) and `python -m`
STAGES = "pipelined.stages"
STAGES_MAY_IMPORT = ("pipelined.errors", "pipelined.logcontext", "pipelined.config", STAGES)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


MODULES = all_modules()


def imported(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(module imported, line) for every pipelined import in the file, wherever it is."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:  # `from pipelined.x import y`: y may be a module
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def module_graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges = graph.setdefault(name, {})
        for target, line in imported(name, path):
            while target not in MODULES and "." in target:  # `import pipelined.x.attr`
                target = target.rsplit(".", 1)[0]
            if target != name:
                edges.setdefault(target, line)
    return graph


def package_of(module: str) -> str:
    """The layer package a module belongs to (`pipelined.engine.runtime` → `pipelined.engine`)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def layer_of(module: str) -> int | None:
    package = package_of(module)
    for index, members in enumerate(LAYERS):
        if package in members:
            return index
    return None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


GRAPH = module_graph()


def test_every_module_is_in_a_layer() -> None:
    lost = [m for m in MODULES if m not in TOP and layer_of(m) is None and package_of(m) != STAGES]
    assert not lost, f"modules outside every layer (add them to a layer package): {lost}"


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle({m: set(edges) for m, edges in GRAPH.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for module, edges in GRAPH.items():
        if module in TOP:
            continue
        mine = package_of(module)
        packages.setdefault(mine, set()).update(
            package_of(t) for t in edges if t not in TOP and package_of(t) != mine
        )
    cycle = find_cycle(packages)
    assert cycle is None, "package cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module, edges in GRAPH.items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target, line in edges.items():
            theirs = layer_of(target)
            if target not in TOP and (theirs is None or theirs > mine):
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} imports {target}")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_built_in_stages_import_only_what_user_code_may() -> None:
    wrong = [
        f"{MODULES[module].relative_to(ROOT)}:{line}: {module} imports {target}"
        for module, edges in GRAPH.items()
        if package_of(module) == STAGES
        for target, line in edges.items()
        if not any(target == allowed or target.startswith(allowed + ".") for allowed in STAGES_MAY_IMPORT)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(source: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(source) == expected


def test_imports_inside_functions_and_type_checking_blocks_count(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pipelined.cli.main import main\n"
        "def f():\n    from pipelined.supervisor import loop\n"
    )
    assert {target for target, _ in imported("pipelined.config.m", module)} == {
        "pipelined.cli.main",
        "pipelined.supervisor.loop",
    }
