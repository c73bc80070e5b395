"""A module whose import calls sys.exit: `pipelined check` must report it, never exit."""

import sys

sys.exit(3)
