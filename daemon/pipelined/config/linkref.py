"""Links between pipelines: the `pipeline/stage` references in `to` and `ctx.emit_to`.

    split_link("billing/charge")      # ("billing", "charge")
    split_link("charge")              # None: a stage of this pipeline
    link_format_problem("a/b/c")      # what is wrong with a name that has a "/" but is no link

A name with a `/` is a link; its pipeline part is a pipeline name (`[a-z0-9][a-z0-9_-]{0,63}`,
the file stem) and its stage part a stage name (`[A-Za-z0-9_-]+`). Whether that pipeline and
stage exist is a question about other files: `pipelined.graph.links` answers it.
"""

from __future__ import annotations

import re

LINK_SEPARATOR = "/"
PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def is_link(name: str) -> bool:
    return LINK_SEPARATOR in name


def split_link(name: str) -> tuple[str, str] | None:
    """(pipeline, stage) of a well-formed link, else None."""
    pipeline, sep, stage = name.partition(LINK_SEPARATOR)
    if not sep or not PIPELINE_NAME.match(pipeline) or not STAGE_NAME.match(stage):
        return None
    return pipeline, stage


def link_format_problem(name: str) -> str:
    """Why `name` (which has a "/") is not a link "pipeline/stage"."""
    pipeline, _, stage = name.partition(LINK_SEPARATOR)
    if not PIPELINE_NAME.match(pipeline):
        what = f'"{pipeline}" is not a pipeline name ([a-z0-9][a-z0-9_-]{{0,63}}, the file name without .toml)'
    elif LINK_SEPARATOR in stage:
        what = 'a link names one pipeline and one of its stages: "pipeline/stage"'
    else:
        what = f'"{stage}" is not a stage name (letters, digits, "_" and "-")'
    return f'"{name}" is not a link "pipeline/stage": {what}'
