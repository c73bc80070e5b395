"""Built-in stages, referenced as `call = "pipelined.stages:<name>"` (docs/stages.md).

Producers: `count`, `read_lines`, `tail_file`. Processors: `log`, `sleep`, `command`.
Consumer: `write_jsonl`. Relative paths resolve against the daemon's state dir
(`PIPELINED_STATE_DIR`); durations are numbers of seconds or strings like "250ms", "5s".
"""

from pipelined.stages.command import CommandFailed, command
from pipelined.stages.processors import JsonlWriter, log, sleep, write_jsonl
from pipelined.stages.producers import count, read_lines
from pipelined.stages.tail import tail_file

__all__ = [
    "CommandFailed",
    "JsonlWriter",
    "command",
    "count",
    "log",
    "read_lines",
    "sleep",
    "tail_file",
    "write_jsonl",
]
