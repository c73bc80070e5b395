"""Stage keys `executor`, `replicas` and `ray_options` (docs/config.md, Cluster execution).

`executor = "ray"` runs a processor or consumer in `replicas` Ray actors instead of threads or
worker processes; producers and accumulators stay local. A file that needs Ray while it is not
installed is an error saying how to install it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

from pipelined.config.durations import parse_size
from pipelined.config.spec import RayOptions, StageSpec
from pipelined.config.values import (
    Checker,
    Table,
    check_unknown_keys,
    describe,
    read_choice,
    read_int,
    read_table,
)

EXECUTORS = ("local", "ray")
RAY_OPTION_KEYS = ("num_cpus", "num_gpus", "memory", "resources", "max_in_flight")
LOCAL_KEYS = ("threads", "processes", "process_mode", "start_method", "max_items_per_worker")
RAY_INSTALL_HINT = "pip install 'pipelined[ray]' (or tools/install --with ray)"


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def read_executor(ck: Checker, table: Table, spec: StageSpec) -> StageSpec:
    """`spec` with its executor, replicas and ray_options (threads/processes cleared for Ray)."""
    executor = read_choice(ck, table, "executor", EXECUTORS) or "local"
    replicas = read_int(ck, table, "replicas", 1)
    options = read_table(ck, table, "ray_options")
    if executor != "ray":
        for key in ("replicas", "ray_options"):
            if key in table.data:
                ck.report(table.at(key), f'"{key}" only applies with executor = "ray"', table.path, key)
        return spec
    if spec.kind == "producer":
        ck.report(table.at("executor"), 'executor = "ray" is not available for producers: they run in '
                  "the daemon (threads or processes); run the heavy work in a processor after them",
                  table.path, "executor")
        return spec
    for key in LOCAL_KEYS:
        if key in table.data:
            ck.report(table.at(key), f'"{key}" and executor = "ray" are exclusive: a Ray stage runs in '
                      '"replicas" actors', table.path, key)
    if not ray_installed():
        ck.report(table.at("executor"), f'executor = "ray" needs Ray, which is not installed: {RAY_INSTALL_HINT}',
                  table.path, "executor")
    return replace(spec, executor="ray", replicas=replicas or 1, threads=None, processes=None,
                   ray_options=_read_options(ck, options) if options is not None else RayOptions())


def _read_options(ck: Checker, table: Table) -> RayOptions:
    check_unknown_keys(ck, table, RAY_OPTION_KEYS)
    return RayOptions(
        num_cpus=_number(ck, table, "num_cpus"),
        num_gpus=_number(ck, table, "num_gpus"),
        memory=_size(ck, table, "memory"),
        resources=_resources(ck, table),
        max_in_flight=read_int(ck, table, "max_in_flight", 1) or 2,
    )


def _number(ck: Checker, table: Table, key: str) -> float | None:
    value = table.data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        ck.report(table.at(key), f"must be a number >= 0, got {describe(value)}", table.path, key)
        return None
    return value


def _size(ck: Checker, table: Table, key: str) -> int | None:
    value = table.data.get(key)
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        ck.report(table.at(key), str(exc), table.path, key)
        return None
    if size < 1:
        ck.report(table.at(key), f"must be a positive size, got {describe(value)}", table.path, key)
        return None
    return size


def _resources(ck: Checker, table: Table) -> dict[str, float]:
    resources = read_table(ck, table, "resources")
    if resources is None:
        return {}
    found: dict[str, float] = {}
    for name in resources.data:
        amount = _number(ck, resources, name)
        if amount is not None:
            found[name] = amount
    return found
