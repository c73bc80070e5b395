"""A stand-in for the engine's stage context (`ctx`), for calling built-in stages directly."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeContext:
    pipeline: str = "demo"
    stage: str = "source"
    run: str | None = "r-000001"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("tests.stages"))
    stopping: bool = False
    emitted: list[Any] = field(default_factory=list)
    routed: list[tuple[str, Any]] = field(default_factory=list)

    def emit(self, item: Any) -> None:
        self.emitted.append(item)

    def emit_to(self, stage: str, item: Any) -> None:
        self.routed.append((stage, item))
