"""A module whose import raises: `pipelined check` must report it, never crash."""

raise RuntimeError("boom at import")
