"""A Ray cluster's settings and the errors its users see (workers/ray_cluster.py, ray_stage.py).

    config = RayConfig(address="", namespace="pipelined", state_dir=state_dir)   # "" = embedded
    config.describe()     # "the embedded Ray instance" / "the Ray cluster at '10.0.0.5:6379'"
    ray_installed()       # is the `pipelined[ray]` extra there (without importing ray)

RayUnavailable (connect failed: not installed, unreachable), RayCallFailed (a batch did not
return), ActorStartFailed (an actor's import or setup() raised, or it did not start).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_OBJECT_STORE = 200 * 1024 * 1024
INSTALL_HINT = "install it with: pip install 'pipelined[ray]' (or tools/install --with ray)"


class RayUnavailable(Exception):
    """Ray is not installed, or the cluster cannot be reached; the message says which and why."""


class RayCallFailed(Exception):
    """A call did not return: `error` is `"TypeName: message"`, `dead` when its actor is gone."""

    def __init__(self, error: str, dead: bool) -> None:
        self.error = error
        self.dead = dead
        super().__init__(error)


class ActorStartFailed(Exception):
    """An actor did not start: `where` (setup(), import of ..., actor start) and `error`."""

    def __init__(self, where: str, error: str, traceback: str | None) -> None:
        self.where = where
        self.error = error
        self.traceback = traceback
        super().__init__(f"{where} failed: {error}")


@dataclass(frozen=True)
class RayConfig:
    address: str = ""  # "" = embedded local instance
    namespace: str = "pipelined"
    object_store_memory: int | None = None  # bytes, embedded only (None: DEFAULT_OBJECT_STORE)
    state_dir: Path = Path("/var/lib/pipelined")
    num_cpus: int | None = None  # embedded only (None: the machine's)

    @property
    def embedded(self) -> bool:
        return not self.address

    def describe(self) -> str:
        return "the embedded Ray instance" if self.embedded else f"the Ray cluster at {self.address!r}"


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None
