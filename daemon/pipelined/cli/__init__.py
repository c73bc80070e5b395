"""The `pipelined` command: the dispatcher (`main`), offline commands (`offline`: check, graph
FILE), and the commands that ask a running daemon (`remote`, over `client`).
"""

import sys

# `import httpx` also imports httpx's own command line (click, pygments, rich.syntax: about 60 ms
# of CPU) whenever those happen to be installed; no pipelined command uses it. A None entry makes
# that import fail, which httpx expects (it then leaves `httpx.main` a stub).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
