"""The code a pipeline file names: import every `call` and hook, check signatures and arguments,
`emit_to("literal")` targets (a stage of this pipeline, or a link "pipeline/stage"), and which
top-level modules each pipeline uses (module names are global to the daemon, so two pipelines
must not use different modules of the same name).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipelined.config.callables import (
    ArgumentsMismatch,
    CallableInfo,
    bind_args,
    call_shape,
    check_hook,
    check_signature,
    check_trigger_args,
    classify,
    emit_to_targets,
)
from pipelined.config.importing import CallableError, import_callable, module_origin
from pipelined.config.lines import TablePath
from pipelined.config.linkref import is_link, link_format_problem, split_link
from pipelined.config.permissions import code_dir_problems
from pipelined.config.spec import Hooks, PipelineSpec, Problem, StageSpec
from pipelined.config.values import Checker

EmittedLinks = tuple[tuple[str, str], ...]
"""(stage, "pipeline/stage") for each `ctx.emit_to("pipeline/stage", ...)` literal in a stage's call."""


def check_code(ck: Checker, spec: PipelineSpec) -> tuple[set[str], EmittedLinks]:
    """Report every problem with the callables and hooks a (structurally valid) spec names.

    Returns the stages that calls send to with `ctx.emit_to("literal", ...)` (they are reached
    even when no edge leads to them) and the links such literals name."""
    names = {stage.name for stage in spec.walk()}
    reached: set[str] = set()
    links: list[tuple[str, str]] = []
    if _refuses_code_dirs(ck, spec):
        return reached, ()  # nothing is imported from where others may write
    _check_hooks(ck, spec.hooks, spec.python_path, ck.pipeline, ())
    for stage in spec.walk():
        table = ck.stage_tables.get(stage.name, ())
        where = f"{ck.pipeline}/{stage.name}"
        _check_hooks(ck, stage.hooks, spec.python_path, where, table)
        _warn_fork_hooks(ck, stage, where, table)
        if stage.call is not None:
            targets = _check_call(ck, stage, spec.python_path, names, where, table)
            reached |= {t for t in targets if not is_link(t)}
            links.extend((stage.name, t) for t in sorted(targets) if is_link(t))
    return reached, tuple(links)


def _refuses_code_dirs(ck: Checker, spec: PipelineSpec) -> bool:
    """Report each `python_path` directory, or module in one, that others may write
    (config/permissions.py): whoever may write them runs code as the daemon's user. True when one
    was reported (nothing may then be imported)."""
    refused = code_dir_problems(spec.python_path)
    for why in refused:
        ck.report(f"{ck.pipeline}/python_path", f"refused: {why}", (), "python_path")
    return bool(refused)


def _check_hooks(
    ck: Checker, hooks: Hooks, python_path: Sequence[Path], where: str, table: TablePath
) -> None:
    for hook, ref in vars(hooks).items():
        if ref is None:
            continue
        hook_table = (*table, "hooks")
        try:
            obj = import_callable(ref, python_path)
        except CallableError as exc:
            ck.report(f"{where}/hooks/{hook}", str(exc), hook_table, hook)
            continue
        wrong = check_hook(hook, obj, ref)
        if wrong:
            ck.report(f"{where}/hooks/{hook}", wrong, hook_table, hook)


def _check_call(
    ck: Checker,
    stage: StageSpec,
    python_path: Sequence[Path],
    names: set[str],
    where: str,
    table: TablePath,
) -> set[str]:
    assert stage.call is not None
    try:
        obj = import_callable(stage.call, python_path)
    except CallableError as exc:
        ck.report(f"{where}/call", str(exc), table, "call")
        return set()
    info = classify(obj, stage.call)
    wrong = check_signature(stage.kind, info, stage.args)
    if wrong:
        ck.report(f"{where}/call", wrong, table, "call")
    else:
        complete = info.is_class or stage.kind != "producer" or stage.auto_start
        try:
            bind_args(info, stage.args, item=stage.kind != "producer", complete=complete)
        except ArgumentsMismatch as exc:
            target = f"{stage.call}.__init__" if info.is_class else stage.call
            ck.report(
                f"{where}/args", str(ArgumentsMismatch(target, exc.unknown, exc.missing)), table, "args"
            )
        if info.is_class and stage.kind == "producer" and stage.auto_start:
            _check_auto_start_call(ck, stage, info, where, table)
        if stage.kind == "producer" and stage.trigger_args:
            _check_trigger_arg_names(ck, stage, info, where, table)
    return _emit_targets(ck, stage, emit_to_targets(obj), names, where, table)


def _emit_targets(
    ck: Checker, stage: StageSpec, targets: set[str], names: set[str], where: str, table: TablePath
) -> set[str]:
    """The literal emit_to targets that are fine: stages of this pipeline, and well-formed links
    to other pipelines ("this/stage" counts as "stage"); every other one is reported."""
    found: set[str] = set()
    for target in sorted(targets):
        local = target
        if is_link(target):
            parsed = split_link(target)
            if parsed is None:
                message = f'{stage.call} calls emit_to("{target}"): {link_format_problem(target)}'
                ck.report(f"{where}/call", message, table, "call")
                continue
            if parsed[0] != ck.pipeline:
                found.add(target)  # another pipeline's: checked with the conf dir (graph.links)
                continue
            local = parsed[1]
        if local in names:
            found.add(local)
        else:
            ck.report(
                f"{where}/call",
                f'{stage.call} calls emit_to("{target}"), but "{local}" is not a stage of this pipeline',
                table,
                "call",
            )
    return found


def _check_trigger_arg_names(
    ck: Checker, stage: StageSpec, info: CallableInfo, where: str, table: TablePath
) -> None:
    """Every name in `trigger_args` must be a keyword argument the producer accepts (not `ctx`)."""
    names = stage.trigger_args or ()
    if "ctx" in names and info.accepts_ctx:
        ck.report(f"{where}/trigger_args", '"ctx" is the stage context, never a trigger argument', table,
                  "trigger_args")  # fmt: skip
    if info.signature is None:
        return
    shape = call_shape(info.signature, 0, [n for n in names if n != "ctx"])
    if shape.unknown:
        target = f"{stage.call}.__call__" if info.is_class else stage.call
        ck.report(
            f"{where}/trigger_args",
            f"{target} does not accept {', '.join(repr(n) for n in shape.unknown)}: trigger_args lists"
            " the keyword arguments a trigger may set",
            table,
            "trigger_args",
        )


def _check_auto_start_call(
    ck: Checker, stage: StageSpec, info: CallableInfo, where: str, table: TablePath
) -> None:
    """An auto_start class producer's `__call__` runs without trigger args: nothing may be required."""
    try:
        check_trigger_args(info, stage.args, {})
    except ArgumentsMismatch as exc:
        names = ", ".join(f'"{name}"' for name in exc.missing)
        ck.report(
            f"{where}/call",
            f"auto_start calls {stage.call}.__call__() without arguments, but it requires {names} "
            "(set auto_start = false, or give defaults)",
            table,
            "call",
        )


def _warn_fork_hooks(ck: Checker, stage: StageSpec, where: str, table: TablePath) -> None:
    if stage.processes is not None or stage.kind == "pipeline":
        return
    for hook in ("before_fork", "after_fork"):
        if getattr(stage.hooks, hook) is not None:
            ck.warn(
                f"{where}/hooks/{hook}",
                'never called: this stage runs in threads (only stages with "processes" fork workers)',
                (*table, "hooks"),
                hook,
            )


def used_modules(spec: PipelineSpec) -> dict[str, str]:
    """Top-level module name → the file or directory it resolves to, for every call and hook."""
    refs = [stage.call for stage in spec.walk() if stage.call]
    for hooks in [spec.hooks, *(stage.hooks for stage in spec.walk())]:
        refs.extend(ref for ref in vars(hooks).values() if ref)
    found: dict[str, str] = {}
    for ref in refs:
        top = ref.split(":")[0].split(".")[0]
        if top not in found:
            origin = module_origin(top, spec.python_path)
            if origin is not None:
                found[top] = origin
    return found


def module_clashes(specs: Sequence[PipelineSpec]) -> list[Problem]:
    """An error for each pipeline that uses a different module than an earlier one of the same name."""
    first: dict[str, tuple[str, str]] = {}  # module → (origin, pipeline)
    problems = []
    for spec in specs:
        for module, origin in used_modules(spec).items():
            if module not in first:
                first[module] = (origin, spec.name)
            elif first[module][0] != origin:
                other_origin, other = first[module]
                problems.append(
                    Problem(
                        str(spec.file),
                        spec.name,
                        f'module "{module}" ({origin}) is not the module "{module}" that pipeline '
                        f'"{other}" uses ({other_origin}); module names are global to the daemon',
                    )
                )
    return problems
