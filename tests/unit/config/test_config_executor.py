"""Stage keys executor / replicas / ray_options: values read, every misuse an error naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pipelined.config.spec import RayOptions
from pipelined.graph.check import load_pipeline

HEAD = 'python_path = ["code"]\n'
STAGE = '[[stage]]\nname = "src"\nkind = "producer"\ncall = "pipelined.stages:count"\n'


def load(tmp_path: Path, text: str) -> tuple[object, list[str]]:
    path = tmp_path / "orders.toml"
    path.write_text(HEAD + STAGE + textwrap.dedent(text))
    spec, problems = load_pipeline(path)
    return spec, [str(p) for p in problems if p.severity == "error"]


def test_ray_stage_keys_are_read(tmp_path: Path) -> None:
    spec, errors = load(tmp_path, """
        [[stage]]
        name = "score"
        call = "pipelined.stages:log"
        kind = "consumer"
        executor = "ray"
        replicas = 3
        ray_options = { num_cpus = 0.5, num_gpus = 1, memory = "1GiB", resources = { tpu = 2 }, max_in_flight = 4 }
    """)
    assert errors == []
    stage = spec.stage("score")  # type: ignore[attr-defined]
    assert (stage.executor, stage.replicas, stage.requested_threads) == ("ray", 3, 0)
    assert stage.ray_options == RayOptions(num_cpus=0.5, num_gpus=1, memory=1024**3, resources={"tpu": 2}, max_in_flight=4)


def test_misuses_are_errors_naming_the_key(tmp_path: Path) -> None:
    _, errors = load(tmp_path, """
        [[stage]]
        name = "a"
        call = "pipelined.stages:log"
        executor = "ray"
        threads = 2
        ray_options = { num_cpus = -1, gpus = 1 }
        [[stage]]
        name = "b"
        call = "pipelined.stages:log"
        replicas = 2
        [[stage]]
        name = "c"
        kind = "accumulator"
        executor = "ray"
        [[stage]]
        name = "d"
        call = "pipelined.stages:log"
        executor = "cluster"
    """)
    text = "\n".join(errors)
    assert 'orders/a/threads: "threads" and executor = "ray" are exclusive' in text
    assert "orders/a/ray_options/num_cpus: must be a number >= 0, got integer -1" in text
    assert 'orders/a/ray_options/gpus: unknown key "gpus"' in text
    assert 'orders/b/replicas: "replicas" only applies with executor = "ray"' in text
    assert 'orders/c/executor: "executor" only applies to' in text and "always run in the daemon" in text
    assert "orders/d/executor:" in text and "cluster" in text


def test_producers_stay_local(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(STAGE + 'executor = "ray"\n')
    _, problems = load_pipeline(path)
    assert any("executor = \"ray\" is not available for producers" in str(p) for p in problems)
