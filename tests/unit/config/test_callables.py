"""pipelined.config.callables: importing `module:attr`, classifying, signatures, arguments, emit_to."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelined.config.callables import (
    ArgumentsMismatch,
    bind_args,
    check_hook,
    check_signature,
    check_trigger_args,
    classify,
    emit_to_targets,
    is_async_callable,
)
from pipelined.config.importing import CallableError, import_callable, module_origin


def write_module(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def code_dir(tmp_path: Path) -> Iterator[Path]:
    """A python_path directory; the modules tests put there are forgotten afterwards."""
    directory = tmp_path / "code"
    directory.mkdir()
    before = set(sys.modules)
    yield directory
    for name in set(sys.modules) - before:
        del sys.modules[name]
    if str(directory) in sys.path:
        sys.path.remove(str(directory))


# -- import_callable ---------------------------------------------------------------------------
def test_imports_a_function_with_python_path_first(code_dir: Path) -> None:
    write_module(code_dir, "cb_basic", "def double(item):\n    return item * 2\n")
    fn = import_callable("cb_basic:double", [code_dir])
    assert fn(4) == 8  # type: ignore[operator]
    assert sys.path[0] == str(code_dir)


def test_imports_a_dotted_attribute_from_a_package(code_dir: Path) -> None:
    write_module(code_dir / "cb_pkg", "__init__", "")
    write_module(
        code_dir / "cb_pkg",
        "mod",
        "class Box:\n    @staticmethod\n    def make(item):\n        return [item]\n",
    )
    fn = import_callable("cb_pkg.mod:Box.make", [code_dir])
    assert fn(1) == [1]  # type: ignore[operator]


@pytest.mark.parametrize("ref", ["nocolon", "a:b:c", "a.:b", ":b", "a:", "1a:b", "a b:c"])
def test_rejects_a_malformed_reference(ref: str) -> None:
    with pytest.raises(CallableError, match='expected "package.module:attribute"'):
        import_callable(ref, [])


def test_missing_module_names_it_and_the_python_path(code_dir: Path) -> None:
    with pytest.raises(CallableError, match=r'module "cb_absent" not found \(python_path: .*code\)'):
        import_callable("cb_absent:fn", [code_dir])


def test_missing_dependency_inside_the_module_is_an_import_failure(code_dir: Path) -> None:
    write_module(code_dir, "cb_dep", "import cb_not_installed\n")
    with pytest.raises(CallableError, match='importing module "cb_dep" failed: ModuleNotFoundError'):
        import_callable("cb_dep:fn", [code_dir])


def test_missing_attribute(code_dir: Path) -> None:
    write_module(code_dir, "cb_attr", "x = 1\n")
    with pytest.raises(CallableError, match='module "cb_attr" has no attribute "fn"'):
        import_callable("cb_attr:fn", [code_dir])


def test_not_callable(code_dir: Path) -> None:
    write_module(code_dir, "cb_value", "limit = 'ten'\n")
    with pytest.raises(CallableError, match="is not callable \\(it is str 'ten'\\)"):
        import_callable("cb_value:limit", [code_dir])


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("raise ValueError('bad config')\n", "ValueError: bad config (cb_raises.py:1)"),
        ("import sys\nsys.exit(4)\n", "SystemExit: 4"),
        ("def broken(:\n", "SyntaxError"),
    ],
)
def test_any_exception_while_importing_is_a_callable_error(code_dir: Path, source: str, shown: str) -> None:
    write_module(code_dir, "cb_raises", source)
    with pytest.raises(CallableError) as caught:
        import_callable("cb_raises:fn", [code_dir])
    assert 'importing module "cb_raises" failed: ' in str(caught.value)
    assert shown in str(caught.value)


def test_callable_error_is_an_import_error() -> None:
    with pytest.raises(ImportError):
        import_callable("cb_nowhere_at_all:fn", [])


def test_a_cached_module_of_the_same_name_from_elsewhere_is_replaced(tmp_path: Path, code_dir: Path) -> None:
    other = tmp_path / "other"
    write_module(code_dir, "cb_same", "def which():\n    return 'first'\n")
    write_module(other, "cb_same", "def which():\n    return 'second'\n")
    assert import_callable("cb_same:which", [code_dir])() == "first"  # type: ignore[operator]
    try:
        assert import_callable("cb_same:which", [other])() == "second"  # type: ignore[operator]
    finally:
        sys.path.remove(str(other))


def test_module_origin_follows_python_path(tmp_path: Path, code_dir: Path) -> None:
    path = write_module(code_dir, "cb_origin", "")
    assert module_origin("cb_origin", [code_dir]) == str(path)
    assert module_origin("cb_origin_missing", [code_dir]) is None


# -- classify ----------------------------------------------------------------------------------
def plain(item: Any) -> Any:
    return item


def gen(item: Any) -> Iterator[Any]:
    yield item


async def coro(item: Any) -> Any:
    return item


async def agen(item: Any) -> Any:
    yield item


def with_ctx(item: Any, ctx: Any) -> Any:
    return item


class Worker:
    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def setup(self) -> None:
        self.ready = True

    def close(self) -> None:
        self.ready = False

    async def __call__(self, item: Any, ctx: Any = None) -> Any:
        return item * self.factor


class Bare:
    pass


@pytest.mark.parametrize(
    ("obj", "flavor"),
    [(plain, "function"), (gen, "generator"), (coro, "async"), (agen, "async_generator")],
)
def test_classify_flavors(obj: Any, flavor: str) -> None:
    info = classify(obj, "m:f")
    assert (info.flavor, info.is_class, info.accepts_ctx, info.has_setup) == (flavor, False, False, False)
    assert info.ref == "m:f"


def test_classify_ctx_parameter() -> None:
    assert classify(with_ctx).accepts_ctx is True


def test_classify_a_class_uses_its_call_and_finds_setup_and_close() -> None:
    info = classify(Worker, "m:Worker")
    assert info.is_class and info.flavor == "async" and info.accepts_ctx
    assert info.has_setup and info.has_close
    assert info.signature is not None and list(info.signature.parameters) == ["item", "ctx"]
    assert info.init_signature is not None and list(info.init_signature.parameters) == ["factor"]


def test_classify_an_instance_with_call() -> None:
    info = classify(Worker(3))
    assert info.flavor == "async" and not info.is_class


def test_class_without_call_is_a_signature_error() -> None:
    wrong = check_signature("processor", classify(Bare, "m:Bare"))
    assert wrong is not None and "no __call__ method" in wrong


# -- check_signature ---------------------------------------------------------------------------
def producer_ok(limit: int = 10) -> Iterator[int]:
    yield from range(limit)


def producer_needs(source: str) -> list[str]:
    return [source]


def producer_kwonly(*, source: str) -> list[str]:
    return [source]


def two(item: Any, other: Any) -> Any:
    return item


def nothing() -> None:
    return None


def star(*items: Any) -> Any:
    return items


@pytest.mark.parametrize(
    ("kind", "obj", "args", "wrong"),
    [
        ("producer", producer_ok, {}, None),
        ("producer", producer_needs, {}, 'requires "source"'),
        ("producer", producer_needs, {"source": "x"}, None),
        ("producer", producer_kwonly, {}, None),  # a trigger may supply it
        ("producer", plain, {}, "must not have a required positional parameter"),
        ("processor", plain, {}, None),
        ("processor", with_ctx, {}, None),
        ("processor", two, {}, 'also requires "other"'),
        ("processor", two, {"other": 1}, None),
        ("consumer", nothing, {}, "takes none"),
        ("consumer", star, {}, None),
        ("processor", Worker, {"factor": 3}, None),
        ("accumulator", nothing, {}, None),
    ],
)
def test_check_signature(kind: str, obj: Any, args: dict[str, Any], wrong: str | None) -> None:
    found = check_signature(kind, classify(obj, "m:f"), args)
    if wrong is None:
        assert found is None
    else:
        assert found is not None and wrong in found


def test_builtin_without_signature_is_accepted() -> None:
    assert check_signature("processor", classify(print, "builtins:print")) is None


# -- bind_args / check_trigger_args ------------------------------------------------------------
def test_bind_args_names_unknown_and_missing() -> None:
    def fn(item: Any, *, factor: int, offset: int = 0) -> Any:
        return item

    bind_args(classify(fn, "m:fn"), {"factor": 2}, item=True)
    with pytest.raises(ArgumentsMismatch) as caught:
        bind_args(classify(fn, "m:fn"), {"facter": 2}, item=True)
    assert caught.value.unknown == ("facter",) and caught.value.missing == ("factor",)
    assert (
        str(caught.value)
        == 'm:fn does not accept argument "facter" and is missing required argument "factor"'
    )
    assert isinstance(caught.value, TypeError)


def test_bind_args_partial_only_rejects_unknown() -> None:
    info = classify(producer_kwonly, "m:p")
    bind_args(info, {}, complete=False)
    with pytest.raises(ArgumentsMismatch, match='does not accept argument "limit"'):
        bind_args(info, {"limit": 1}, complete=False)


def test_bind_args_for_a_class_goes_to_init() -> None:
    bind_args(classify(Worker, "m:Worker"), {"factor": 5}, item=True)
    with pytest.raises(ArgumentsMismatch, match='"scale"'):
        bind_args(classify(Worker, "m:Worker"), {"scale": 5}, item=True)


def test_bind_args_accepts_anything_with_var_keyword() -> None:
    def fn(item: Any, **options: Any) -> Any:
        return item

    bind_args(classify(fn), {"anything": 1}, item=True)


def test_ctx_is_not_a_user_argument() -> None:
    bind_args(classify(with_ctx, "m:f"), {}, item=True)


def test_trigger_args_merge_with_toml_args_for_a_function_producer() -> None:
    def fetch(source: str, limit: int = 10) -> list[str]:
        return [source] * limit

    info = classify(fetch, "m:fetch")
    check_trigger_args(info, {"source": "db"}, {"limit": 3})
    with pytest.raises(ArgumentsMismatch) as caught:
        check_trigger_args(info, {"source": "db"}, {"limt": 3})
    assert caught.value.unknown == ("limt",)
    with pytest.raises(ArgumentsMismatch, match='missing required argument "source"'):
        check_trigger_args(info, {}, {"limit": 3})


def test_trigger_args_of_a_class_producer_go_to_call_only() -> None:
    class Source:
        def __init__(self, dsn: str) -> None:
            self.dsn = dsn

        def __call__(self, since: int = 0) -> list[int]:
            return [since]

    info = classify(Source, "m:Source")
    check_trigger_args(info, {"dsn": "x"}, {"since": 5})
    with pytest.raises(ArgumentsMismatch, match='"dsn"'):
        check_trigger_args(info, {"dsn": "x"}, {"dsn": "y"})


# -- hooks -------------------------------------------------------------------------------------
def hook_run(run: Any) -> None:
    return None


def hook_error(item: Any, error: Any, stage: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("hook", "obj", "ok"),
    [
        ("before_run", hook_run, True),
        ("after_run", nothing, False),
        ("before_fork", nothing, True),
        ("after_fork", hook_run, False),
        ("on_error", hook_error, True),
        ("on_error", hook_run, False),
        ("on_error", star, True),
    ],
)
def test_check_hook(hook: str, obj: Any, ok: bool) -> None:
    wrong = check_hook(hook, obj, "m:h")
    assert (wrong is None) is ok
    if not ok:
        assert wrong is not None and f"hook {hook} is called with" in wrong and "m:h" in wrong


# -- emit_to targets ---------------------------------------------------------------------------
def router(item: Any, ctx: Any) -> None:
    if item:
        ctx.emit_to("audit", item)
    else:
        ctx.emit_to(target_name(), item)
    ctx.emit_to("errors", item)


def target_name() -> str:
    return "dynamic"


class Routing:
    def __call__(self, item: Any, ctx: Any) -> None:
        ctx.emit_to("inside_class", item)


def test_emit_to_targets_finds_string_literals_only() -> None:
    assert emit_to_targets(router) == {"audit", "errors"}
    assert emit_to_targets(Routing) == {"inside_class"}
    assert emit_to_targets(Routing()) == {"inside_class"}
    assert emit_to_targets(plain) == set()
    assert emit_to_targets(print) == set()  # no source: nothing to check


def test_is_async_callable(code_dir: Path) -> None:
    write_module(code_dir, "cb_async", "async def a(item):\n    return item\ndef s(item):\n    return item\n")
    assert is_async_callable("cb_async:a", [code_dir]) is True
    assert is_async_callable("cb_async:s", [code_dir]) is False
    assert is_async_callable("cb_async:missing", [code_dir]) is False
    assert is_async_callable(None) is False
