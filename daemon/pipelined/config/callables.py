"""Stage callables and hooks: classify, check signatures and arguments (the import itself,
`import_callable`, is `config/importing.py`'s).

    fn = import_callable("orders.enrich:enrich", [Path("/etc/pipelined/code")])
    info = classify(fn)                 # flavor, is_class, accepts_ctx, setup/close, signatures
    check_signature("processor", info)  # None, or what is wrong (a sentence)
    bind_args(info, {"limit": 5}, item=True)        # ArgumentsMismatch naming unknown/missing args
    check_trigger_args(info, toml_args, trigger_args)  # the API's 400 for trigger args
    emit_to_targets(fn)                 # {"audit"} for `ctx.emit_to("audit", item)` in its source
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import textwrap
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipelined.config.importing import CallableError, import_callable

Flavor = Literal["function", "generator", "async", "async_generator"]
HOOK_POSITIONAL_ARGS: dict[str, int] = {
    "before_run": 1,  # (run)
    "after_run": 1,  # (run)
    "before_fork": 0,
    "after_fork": 0,
    "on_error": 3,  # (item, error, stage)
}
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ArgumentsMismatch(TypeError):
    """Arguments do not fit a callable: `unknown` names it does not accept, `missing` it requires."""

    def __init__(self, ref: str, unknown: Sequence[str], missing: Sequence[str]) -> None:
        self.ref = ref
        self.unknown = tuple(unknown)
        self.missing = tuple(missing)
        parts = []
        if self.unknown:
            parts.append(f"does not accept argument{_plural(self.unknown)} {_names(self.unknown)}")
        if self.missing:
            parts.append(f"is missing required argument{_plural(self.missing)} {_names(self.missing)}")
        super().__init__(f"{ref} {' and '.join(parts)}")


@dataclass(frozen=True)
class CallableInfo:
    """What a stage callable is. For a class, `flavor`/`signature` describe its `__call__`."""

    ref: str
    obj: object
    flavor: Flavor
    is_class: bool
    accepts_ctx: bool
    has_setup: bool
    has_close: bool
    signature: inspect.Signature | None  # of what is called per item/run (class: __call__ without self)
    init_signature: inspect.Signature | None = None  # class only: of the constructor


@dataclass(frozen=True)
class CallShape:
    """How a call with `positional` arguments and some keywords fits a signature."""

    unknown: tuple[str, ...]
    missing_positional: tuple[str, ...]
    missing_keyword: tuple[str, ...]
    too_many_positional: bool

    @property
    def ok(self) -> bool:
        return not (
            self.unknown or self.missing_positional or self.missing_keyword or self.too_many_positional
        )


def _plural(names: Sequence[str]) -> str:
    return "s" if len(names) > 1 else ""


def _names(names: Collection[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _signature(obj: Any) -> inspect.Signature | None:
    """inspect.signature(obj), computed once per function or class (Signatures are immutable;
    a thousand pipelines calling one built-in stage ask for the same one)."""
    try:
        if obj in _SIGNATURES:
            return _SIGNATURES[obj]
    except Exception:  # noqa: BLE001 - unhashable, not weakly referenceable, an odd __eq__: not cached
        return _signature_now(obj)
    found = _signature_now(obj)
    with contextlib.suppress(TypeError):
        _SIGNATURES[obj] = found
    return found


def _signature_now(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


_SIGNATURES: weakref.WeakKeyDictionary[Any, inspect.Signature | None] = weakref.WeakKeyDictionary()


def _class_call(cls: type) -> Any | None:
    for klass in cls.__mro__:
        if klass is not object and "__call__" in vars(klass):
            return vars(klass)["__call__"]
    return None


def _flavor(fn: Any) -> Flavor:
    if inspect.isasyncgenfunction(fn):
        return "async_generator"
    if inspect.iscoroutinefunction(fn):
        return "async"
    if inspect.isgeneratorfunction(fn):
        return "generator"
    return "function"


def classify(obj: object, ref: str | None = None) -> CallableInfo:
    """Describe a callable: its flavor, whether it is a class, takes `ctx`, has setup()/close()."""
    name = ref or getattr(obj, "__qualname__", None) or repr(obj)
    if inspect.isclass(obj):
        call = _class_call(obj)
        signature = _signature(call) if call is not None else None
        if signature is not None:
            params = list(signature.parameters.values())[1:]  # drop self
            signature = signature.replace(parameters=params)
        return CallableInfo(
            ref=name,
            obj=obj,
            flavor=_flavor(call) if call is not None else "function",
            is_class=True,
            accepts_ctx=signature is not None and "ctx" in signature.parameters,
            has_setup=callable(getattr(obj, "setup", None)),
            has_close=callable(getattr(obj, "close", None)),
            signature=signature,
            init_signature=_signature(obj),
        )
    target = obj if inspect.isroutine(obj) else inspect.getattr_static(type(obj), "__call__", obj)
    signature = _signature(obj)
    return CallableInfo(
        ref=name,
        obj=obj,
        flavor=_flavor(target),
        is_class=False,
        accepts_ctx=signature is not None and "ctx" in signature.parameters,
        has_setup=False,
        has_close=False,
        signature=signature,
    )


def call_shape(signature: inspect.Signature, positional: int, keywords: Collection[str]) -> CallShape:
    """How `f(<positional args>, **{k: ... for k in keywords})` fits `signature`."""
    params = list(signature.parameters.values())
    by_position = [p for p in params if p.kind in _POSITIONAL]
    var_positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    filled = {p.name for p in by_position[:positional]}
    accepted = {p.name for p in params if p.kind in _KEYWORD}
    unknown = tuple(k for k in keywords if k in filled or (k not in accepted and not var_keyword))
    required = [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and p.name not in filled
        and p.name not in keywords
    ]
    return CallShape(
        unknown=unknown,
        missing_positional=tuple(p.name for p in required if p.kind in _POSITIONAL),
        missing_keyword=tuple(p.name for p in required if p.kind is inspect.Parameter.KEYWORD_ONLY),
        too_many_positional=positional > len(by_position) and not var_positional,
    )


def _keywords(info: CallableInfo, names: Collection[str]) -> list[str]:
    return [*names, "ctx"] if info.accepts_ctx and "ctx" not in names else list(names)


def check_signature(kind: str, info: CallableInfo, args: Mapping[str, Any] | None = None) -> str | None:
    """What is wrong with this callable for a stage of `kind` (None: it fits).

    producer: no required positional parameter (parameters named in `args` count as given);
    processor/consumer: takes the item as one positional argument. For a class, `__init__` takes
    `args` as keywords and `__call__` is checked without them.
    """
    if info.is_class and info.signature is None and _class_call(info.obj) is None:  # type: ignore[arg-type]
        return f"class {info.ref} has no __call__ method, so its instances cannot be called"
    if info.signature is None:
        return None  # a builtin without a signature: nothing to check
    given = {} if info.is_class else dict(args or {})
    keywords = _keywords(info, given)
    what = f"{info.ref}.__call__" if info.is_class else info.ref
    if kind == "producer":
        shape = call_shape(info.signature, 0, keywords)
        if shape.missing_positional:
            return (
                f"a producer must not have a required positional parameter, but {what} requires "
                f"{_names(shape.missing_positional)} (give it a default, or set it in args)"
            )
        return None
    if kind in ("processor", "consumer"):
        shape = call_shape(info.signature, 1, keywords)
        if shape.too_many_positional:
            return f"a {kind} is called with the item as one positional argument, but {what} takes none"
        if shape.missing_positional:
            return (
                f"a {kind} is called with the item as its only positional argument, but {what} "
                f"also requires {_names(shape.missing_positional)}"
            )
    return None


def bind_args(
    info: CallableInfo, args: Mapping[str, Any], *, item: bool = False, complete: bool = True
) -> None:
    """Raise ArgumentsMismatch unless `args` fit as keyword arguments (after the item, if `item`).

    For a class the arguments go to its constructor. `complete=False` only rejects unknown names
    (arguments a later trigger may still supply are not required).
    """
    signature = info.init_signature if info.is_class else info.signature
    if signature is None:
        return
    keywords = list(args) if info.is_class else _keywords(info, args)
    shape = call_shape(signature, 1 if item and not info.is_class else 0, keywords)
    missing = [*shape.missing_positional, *shape.missing_keyword] if complete else []
    if shape.unknown or missing:
        raise ArgumentsMismatch(info.ref, shape.unknown, missing)


def check_trigger_args(
    info: CallableInfo, toml_args: Mapping[str, Any], trigger_args: Mapping[str, Any]
) -> None:
    """Raise ArgumentsMismatch unless a producer accepts a trigger with `trigger_args`.

    A function producer gets the TOML args overridden by the trigger's; a class producer's
    `__call__` gets only the trigger's (its TOML args went to `__init__`).
    """
    if info.is_class:
        if info.signature is None:
            return
        shape = call_shape(info.signature, 0, _keywords(info, trigger_args))
    else:
        if info.signature is None:
            return
        shape = call_shape(info.signature, 0, _keywords(info, {**toml_args, **trigger_args}))
    unknown = [name for name in shape.unknown if name in trigger_args]
    missing = [*shape.missing_positional, *shape.missing_keyword]
    if unknown or missing:
        raise ArgumentsMismatch(info.ref, unknown, missing)


def check_hook(hook: str, obj: object, ref: str) -> str | None:
    """What is wrong with a hook callable for `hook` (None: it fits)."""
    signature = _signature(obj)
    count = HOOK_POSITIONAL_ARGS[hook]
    if signature is None:
        return None
    shape = call_shape(signature, count, ())
    if shape.too_many_positional or shape.missing_positional or shape.missing_keyword:
        wanted = {0: "no arguments", 1: "one argument (the run)", 3: "(item, error, stage)"}[count]
        return f"hook {hook} is called with {wanted}, which {ref} does not accept"
    return None


def emit_to_targets(obj: object) -> set[str]:
    """String literals passed as the first argument of `.emit_to(...)` in obj's source code
    (read once per function or class: a thousand pipelines calling the same built-in stage parse
    its source once)."""
    target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
    key = getattr(target, "__code__", None) or target
    try:
        cached = _EMIT_TO_CACHE.get(key)
    except TypeError:  # unhashable: not cached
        return set(_emit_to_targets(target))
    if cached is None:
        cached = _EMIT_TO_CACHE[key] = _emit_to_targets(target)
    return set(cached)


_EMIT_TO_CACHE: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def _emit_to_targets(target: object) -> frozenset[str]:
    try:
        source = textwrap.dedent(inspect.getsource(target))  # type: ignore[arg-type]
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, ValueError):
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "emit_to"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return frozenset(found)


def is_async_callable(ref: str | None, python_path: Sequence[Path] = ()) -> bool:
    """Whether `ref` names an `async def` / async generator (or a class whose `__call__` is one).

    False when there is no call or it cannot be imported (load-time checks report that).
    """
    if ref is None:
        return False
    try:
        info = classify(import_callable(ref, python_path), ref)
    except CallableError:
        return False
    return info.flavor in ("async", "async_generator")
