"""pipelined: run TOML-defined pipelines as a long-running, hot-reloading daemon."""

__version__ = "0.1.0"
