"""Links in the graph layer: `to = ["pipeline/stage"]` routing, external nodes and their
rendering, checks across files (unknown targets, loops) and the daemon-wide graph."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_render import parse_mermaid

from pipelined.config.spec import PipelineSpec, StageSpec
from pipelined.graph.check import check_paths
from pipelined.graph.limits import allocate
from pipelined.graph.links import Linked, check_links, closing_loop, links_of
from pipelined.graph.render import render_dot, render_json, render_mermaid
from pipelined.graph.render_daemon import (
    PipelineDrawing,
    render_daemon_dot,
    render_daemon_json,
    render_daemon_mermaid,
)
from pipelined.graph.routing import build_graph


def stage(name: str, kind: str = "processor", **kw: Any) -> StageSpec:
    return StageSpec(name=name, kind=kind, call=None if kind in ("accumulator", "pipeline") else "m:f", **kw)  # type: ignore[arg-type]


def spec_of(name: str, *stages: StageSpec, **kw: Any) -> PipelineSpec:
    return PipelineSpec(name=name, file=Path(f"/c/{name}.toml"), version="0" * 12, stages=stages, **kw)


INGEST = spec_of(
    "ingest",
    stage("read", "producer"),
    stage("split", to=("archive/keep", "audit"), fanout="weighted", weights={"archive/keep": 3, "audit": 1}),
    stage("audit", "consumer"),
)
ARCHIVE = spec_of("archive", stage("keep"), stage("store", "consumer"))


def linked(spec: PipelineSpec) -> Linked:
    result = build_graph(spec)
    assert result.ok, result.problems
    return Linked(spec, result.graph)


def messages(spec: PipelineSpec) -> list[str]:
    return [f"{p.where}: {p.message}" for p in build_graph(spec).problems if p.severity == "error"]


# -- routing -----------------------------------------------------------------------------------
def test_a_link_is_an_edge_to_an_external_node() -> None:
    graph = linked(INGEST).graph
    external = graph.node("archive/keep")
    assert external.kind == "external" and external.parent is None
    assert [(e.src, e.dst, e.route) for e in graph.out_edges("split")] == [  # in node order: links last
        ("split", "audit", "weighted"),
        ("split", "archive/keep", "weighted"),
    ]
    assert graph.links == (("split", "archive/keep"),)
    assert [n.id for n in graph.stage_nodes()] == ["read", "split", "audit"]
    assert graph.downstream("split") == ("audit", "archive/keep")


def test_a_stage_whose_only_downstream_is_a_link_is_no_terminal() -> None:
    spec = spec_of("a", stage("src", "producer", to=("b/in",)))
    assert build_graph(spec).problems == ()


def test_link_names_are_checked_for_their_form_and_their_place() -> None:
    spec = spec_of(
        "a",
        stage("src", "producer", to=("B/in", "b/in/x", "b/", "a/sink")),
        stage("sink", "consumer", from_=("b/out",)),
    )
    assert messages(spec) == [
        'a/src/to: "B/in" is not a link "pipeline/stage": "B" is not a pipeline name ([a-z0-9][a-z0-9_-]{0,63}, '
        "the file name without .toml)",
        'a/src/to: "b/in/x" is not a link "pipeline/stage": a link names one pipeline and one of its stages: '
        '"pipeline/stage"',
        'a/src/to: "b/" is not a link "pipeline/stage": "" is not a stage name (letters, digits, "_" and "-")',
        'a/src/to: "a/sink" names this pipeline; write its stage as "sink" (a link is to another pipeline)',
        "a/sink/from: \"b/out\" is a link: links are written in the sending stage's `to` (or ctx.emit_to); "
        "`from` names stages of this pipeline",
        'a/src: producer "src" has no downstream stage: its items would go nowhere',  # none of its links held
    ]


def test_a_consumer_cannot_link() -> None:
    spec = spec_of("a", stage("src", "producer"), stage("sink", "consumer", to=("b/in",)))
    assert messages(spec) == ['a/sink/to: "sink" is a consumer; consumers send nothing downstream']


def test_a_nested_stage_links_from_inside_its_block() -> None:
    spec = spec_of(
        "a",
        stage("src", "producer"),
        stage("block", "pipeline", stages=(stage("x", to=("b/in",)), stage("y"))),
        stage("sink", "consumer"),
    )
    graph = linked(spec).graph
    assert ("x", "b/in") in graph.links and graph.node("b/in").parent is None
    assert render_json(graph, allocate(spec, graph, None, None))["nodes"][-1]["id"] == "b/in"


def test_the_limits_give_an_external_node_nothing() -> None:
    graph = linked(INGEST).graph
    allocation = allocate(INGEST, graph, None, None)
    assert "archive/keep" not in allocation.stages
    assert allocation.totals() == (3, 0)


# -- a pipeline's own graph ------------------------------------------------------------------------
def test_json_mermaid_and_dot_show_the_external_node() -> None:
    graph = linked(INGEST).graph
    allocation = allocate(INGEST, graph, None, None)
    nodes = render_json(graph, allocation)["nodes"]
    assert nodes[-1] == {
        "id": "archive/keep", "kind": "external", "threads": 0, "processes": 0, "auto_start": False,
        "pipeline": "archive", "stage": "keep",
    }  # fmt: skip
    mermaid = render_mermaid(graph, allocation)
    labels, edges, _ = parse_mermaid(mermaid)
    assert labels["st_archive_2f_keep"] == "archive/keep<br/>link to pipeline archive"
    assert 'st_archive_2f_keep[/"archive/keep<br/>link to pipeline archive"/]' in mermaid
    assert ("st_split", "st_archive_2f_keep", "weighted 3") in edges
    dot = render_dot(graph, allocation)
    assert '"s:archive/keep" [label="archive/keep\\nlink to pipeline archive", shape=box, style=dashed];' in dot
    assert '"s:split" -> "s:archive/keep" [label="weighted 3"];' in dot
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, timeout=30, check=False)
        assert done.returncode == 0 and b"<svg" in done.stdout, done.stderr


# -- across files ------------------------------------------------------------------------------
def test_links_of_lists_to_links_then_literal_emit_to_links() -> None:
    spec = spec_of("a", stage("src", "producer", to=("b/in",)), emitted_links=(("src", "c/in"), ("src", "b/in")))
    assert [(ln.source, ln.target, ln.written_in) for ln in links_of(spec, build_graph(spec).graph)] == [
        ("a/src", "b/in", "to"),
        ("a/src", "c/in", "emit_to"),
    ]


def test_check_links_names_unknown_pipelines_stages_and_producers() -> None:
    spec = spec_of(
        "ingest",
        stage("read", "producer", to=("archive/kep", "archiv/keep", "archive/store", "gone/x")),
        emitted_links=(("read", "archive/read2"),),
    )
    archive = spec_of("archive", stage("read2", "producer"), stage("keep"), stage("store", "consumer"))
    problems = check_links([linked(spec), linked(archive)], lambda s: True)
    assert [(p.where, p.message, p.severity) for p in problems] == [
        ("ingest/read/to", 'link "archive/kep": pipeline "archive" has no stage "kep" (did you mean "keep"?)', "error"),
        ("ingest/read/to", 'link "archiv/keep": no pipeline "archiv" in this directory (did you mean "archive"?)', "error"),
        ("ingest/read/to", 'link "gone/x": no pipeline "gone" in this directory', "error"),
        ("ingest/read/call", 'emit_to("archive/read2"): "archive/read2" is a producer; producers take no input', "error"),
    ]  # fmt: skip
    lenient = check_links([linked(spec)], lambda s: False, invalid=["archiv"])
    assert {p.severity for p in lenient} == {"warning"}
    assert [p.message for p in lenient][0] == (
        'link "archive/kep": no pipeline "archive" among the files checked (check the whole conf dir)'
    )
    assert len(lenient) == 4  # archiv (invalid) is skipped; the other three and the emit_to


def test_closing_loop_finds_the_shortest_way_back() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert closing_loop(edges, "c", {"a"}) == ["c", "a", "b", "c"]
    assert closing_loop(edges, "c", {"d", "b"}) == ["c", "b", "c"]
    assert closing_loop(edges, "e", {"a"}) is None
    assert closing_loop({}, "a", {"a"}) == ["a", "a"]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


SRC = '[[stage]]\nname = "src"\nkind = "producer"\ncall = "pipelined.stages:count"\nargs = {{ stop = 3 }}\nto = {to}\n'
KEEP = '[[stage]]\nname = "in"\ncall = "pipelined.stages:log"\n{extra}\n[[stage]]\nname = "out"\nkind = "consumer"\ncall = "pipelined.stages:log"\n'


def test_check_dir_errors_single_files_warn_and_siblings_reach_a_stage(tmp_path: Path) -> None:
    a = write(tmp_path, "a", SRC.format(to='["b/in", "b/nope"]'))
    b = write(tmp_path, "b", KEEP.format(extra=""))
    problems, checked, invalid = check_paths([tmp_path])
    assert (checked, invalid) == (2, 1)
    assert [(p.file, p.where, p.message, p.severity) for p in problems] == [
        (str(a), "a/src/to", 'link "b/nope": pipeline "b" has no stage "nope"', "error"),
    ]
    problems, checked, invalid = check_paths([a])
    assert (checked, invalid) == (1, 0)
    assert {p.severity for p in problems} == {"warning"} and len(problems) == 2
    problems, _, invalid = check_paths([b])  # b/in is reached by a's link (a sibling file)
    assert (problems, invalid) == ([], 0)


def test_check_dir_reports_the_file_that_closes_a_loop(tmp_path: Path) -> None:
    write(tmp_path, "a", SRC.format(to='["b/in"]'))
    b = write(tmp_path, "b", KEEP.format(extra='to = ["out", "c/in"]\nfanout = "broadcast"'))
    c = write(tmp_path, "c", KEEP.format(extra='to = ["out", "a/src"]\nfanout = "broadcast"'))
    problems, checked, invalid = check_paths([tmp_path])
    errors = [(p.file, p.where, p.message) for p in problems if p.severity == "error"]
    assert errors == [
        (str(c), "c/in/to", 'link "a/src": "a/src" is a producer; producers take no input'),
        (str(c), "c/in/to", "links close a loop between pipelines: c -> a -> b -> c (c/in -> a/src, a/src -> b/in, b/in -> c/in)"),
    ]  # fmt: skip
    assert invalid == 1 and str(b) not in {p.file for p in problems}


# -- the daemon-wide graph ---------------------------------------------------------------------
def drawings() -> list[PipelineDrawing]:
    ingest, archive = linked(INGEST), linked(ARCHIVE)
    broken = PipelineDrawing("broken", "failed", None)
    return [
        PipelineDrawing("ingest", "running", ingest.graph, allocate(INGEST, ingest.graph, None, None)),
        PipelineDrawing("archive", "draining", archive.graph, allocate(ARCHIVE, archive.graph, None, None)),
        broken,
    ]


def test_daemon_json_lists_pipelines_by_name_and_their_links() -> None:
    assert render_daemon_json(drawings()) == {
        "pipelines": [
            {"name": "archive", "state": "draining"},
            {"name": "broken", "state": "failed"},
            {"name": "ingest", "state": "running"},
        ],
        "links": [{"from": "ingest/split", "to": "archive/keep"}],
    }
    orjson.dumps(render_daemon_json([]))


def test_daemon_mermaid_has_a_subgraph_per_pipeline_and_links_between_them() -> None:
    text = render_daemon_mermaid(drawings())
    nodes, edges, subgraphs = parse_mermaid(text)
    assert subgraphs == ["pl_archive", "pl_broken", "pl_ingest"]
    assert 'subgraph pl_archive ["archive · draining"]' in text
    assert nodes["st_ingest_2f_split"].startswith("split<br/>processor")
    assert nodes["st_broken_2f_"] == "broken<br/>no valid version"
    assert ("st_ingest_2f_split", "st_archive_2f_keep", "link") in edges
    assert ("st_ingest_2f_split", "st_ingest_2f_audit", "weighted 1") in edges
    assert ("st_archive_2f_keep", "st_archive_2f_store", None) in edges
    assert not any(dst.endswith("archive_2f_keep") and label != "link" for _, dst, label in edges)


def test_daemon_mermaid_draws_a_missing_target_outside_every_subgraph() -> None:
    lonely = spec_of("a", stage("src", "producer", to=("gone/x", "b/nope")))
    b = spec_of("b", stage("in", "consumer"))
    text = render_daemon_mermaid([
        PipelineDrawing("a", "running", linked(lonely).graph), PipelineDrawing("b", "running", linked(b).graph),
    ])  # fmt: skip
    nodes, edges, _ = parse_mermaid(text)
    assert nodes["st_gone_2f_x"] == "gone/x<br/>not loaded"
    assert nodes["st_b_2f_nope"] == "b/nope<br/>no such stage"
    assert ("st_a_2f_src", "st_gone_2f_x", "link") in edges


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_daemon_dot_renders_with_a_cluster_per_pipeline() -> None:
    text = render_daemon_dot(drawings())
    done = subprocess.run(["dot", "-Tjson"], input=text.encode(), capture_output=True, timeout=30, check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr
    parsed = orjson.loads(done.stdout)
    clusters = {o["name"] for o in parsed["objects"] if o["name"].startswith("cluster")}
    assert clusters == {"cluster:archive", "cluster:broken", "cluster:ingest"}
    names = [o["name"] for o in parsed["objects"]]
    pairs = {(names[e["tail"]], names[e["head"]], e.get("label")) for e in parsed["edges"]}
    assert ("s:ingest/split", "s:archive/keep", "link") in pairs
    svg = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=30, check=False)
    assert svg.returncode == 0 and b"<svg" in svg.stdout


def test_the_linked_pair_in_docs_config_checks_clean_as_a_directory(tmp_path: Path) -> None:
    import re

    doc = (Path(__file__).resolve().parents[3] / "docs" / "config.md").read_text()
    blocks = re.findall(r"```toml\n# example: (shop\.toml|billing\.toml)\n(.*?)```", doc, re.DOTALL)
    pair = {name: f"# example: {name}\n{body}" for name, body in blocks}
    assert set(pair) == {"shop.toml", "billing.toml"}
    for name, text in pair.items():
        (tmp_path / name).write_text(text)
    assert check_paths([tmp_path]) == ([], 2, 0)
