"""What a reload (and the shutdown) must know about links between the pipelines it handles.

- `refuse_loops`: a changed or new file whose `to` links would close a loop between pipelines
  fails to load (its running version, if any, keeps running) with an error naming the loop.
  Files are tried in name order against what runs; one refused in a pass is tried again after
  the others (a loop another change of the same reload removes is no loop), until a pass
  accepts none.
- `log_warnings`: each prepared version's own warnings, and its links to pipelines or stages
  that are not loaded (only logged: the target may come later; meanwhile items fail and are
  dead-lettered). A stage that another pipeline links to is not "reached by nothing".
- `start_order`: new pipelines start targets first, so a source's first items find them running.
- `upstream_pipelines`: for the shutdown, which pipelines send to each one (drained first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace

from pipelined.graph.check import UNREACHED
from pipelined.graph.links import Linked, check_links, closing_loop, link_targets, links_of, loop_problem
from pipelined.supervisor.reload import Prepared
from pipelined.supervisor.slot import PipelineSlot

log = logging.getLogger("pipelined.reload")


def running_links(slots: Iterable[PipelineSlot], leaving: set[str]) -> dict[str, Linked]:
    """The versions the slots hold now (except those in `leaving`), as link checks see them."""
    return {
        slot.name: Linked(slot.version.spec, slot.version.graph)
        for slot in slots
        if slot.version is not None and slot.name not in leaving
    }


def _to_targets(linked: Linked) -> set[str]:
    return {link.target_pipeline for link in links_of(linked.spec, linked.graph) if link.written_in == "to"}


def refuse_loops(
    prepared: list[tuple[Prepared, bool]], current: Mapping[str, Linked]
) -> list[tuple[Prepared, bool]]:
    """`prepared` with every version whose links would close a loop turned into a failure."""
    everything = dict(current)
    edges = {name: _to_targets(linked) for name, linked in current.items()}
    waiting = sorted((ready.name for ready, _ in prepared if ready.version is not None))
    by_name = {ready.name: ready for ready, _ in prepared}
    while waiting:
        refused = []
        for name in waiting:
            version = by_name[name].version
            assert version is not None
            candidate = Linked(version.spec, version.graph)
            others = {n: targets for n, targets in edges.items() if n != name}
            if closing_loop(others, name, _to_targets(candidate)) is None:
                edges[name] = _to_targets(candidate)
                everything[name] = candidate
            else:
                refused.append(name)
        if len(refused) == len(waiting):
            break
        waiting = refused
    failed: dict[str, Prepared] = {}
    for name in waiting:
        ready = by_name[name]
        assert ready.version is not None
        candidate = Linked(ready.version.spec, ready.version.graph)
        others = {n: targets for n, targets in edges.items() if n != name}
        loop = closing_loop(others, name, _to_targets(candidate))
        problem = loop_problem(candidate, loop or [name, name], everything)
        failed[name] = replace(ready, version=None, error=str(problem))
    return [(failed.get(ready.name, ready), is_new) for ready, is_new in prepared]


def after_reload(current: Mapping[str, Linked], prepared: list[tuple[Prepared, bool]]) -> dict[str, Linked]:
    """What is loaded once the valid prepared versions replace the current ones."""
    loaded = dict(current)
    for ready, _ in prepared:
        if ready.version is not None:
            loaded[ready.name] = Linked(ready.version.spec, ready.version.graph)
    return loaded


def log_warnings(prepared: Iterable[Prepared], loaded: Mapping[str, Linked]) -> None:
    """Log each prepared version's warnings and its links to what is not loaded."""
    reached = link_targets(loaded.values())
    for ready in prepared:
        if ready.version is None:
            continue
        for warning in ready.version.warnings:
            if not (warning.message.startswith(UNREACHED) and warning.where in reached):
                log.warning("%s", warning, extra={"pipeline": ready.name})
        mine = Linked(ready.version.spec, ready.version.graph)
        others = [linked for name, linked in loaded.items() if name != ready.name]
        for problem in check_links([mine, *others], lambda spec: True, scope="loaded"):
            if problem.where.startswith(f"{mine.spec.name}/"):
                log.warning("%s (until it is, its items fail and are dead-lettered)", problem.message,
                            extra={"pipeline": ready.name, "stage": problem.where.split("/")[1]})  # fmt: skip


def start_order(fresh: list[Prepared]) -> list[Prepared]:
    """New pipelines in name order, except that a pipeline starts after those it links to."""
    by_name = {ready.name: ready for ready in fresh}
    order: list[Prepared] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        version = by_name[name].version
        if version is not None:
            for target in sorted(_to_targets(Linked(version.spec, version.graph))):
                visit(target)
        order.append(by_name[name])

    for name in sorted(by_name):
        visit(name)
    return order


def upstream_pipelines(slots: Iterable[PipelineSlot]) -> dict[str, set[str]]:
    """pipeline → the other pipelines whose `to` links send to it."""
    senders: dict[str, set[str]] = {}
    for slot in slots:
        if slot.version is None:
            continue
        for target in _to_targets(Linked(slot.version.spec, slot.version.graph)):
            if target != slot.name:
                senders.setdefault(target, set()).add(slot.name)
    return senders
