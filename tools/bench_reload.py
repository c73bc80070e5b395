"""Hot reload latency: last write of a pipeline file → its new version running (target ≤ 0.5 s).

Starts a real daemon watching its conf dir (tests/harness.py), with a busy pipeline (items flowing
through producer → processor → consumer) and an idle one, then edits the busy pipeline's file
the ways editors do (temp file + rename, in-place write, a burst of saves) and polls the API
until the new version runs. Prints each latency and the ratio to the 0.5 s target and to the
watcher's quiet period (0.2 s, the floor).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from daemon_pipelines import echo, flow, install_flow_stages  # noqa: E402

from harness import DaemonProcess, file_version  # noqa: E402

TARGET = 0.5
QUIET = 0.2
ROUNDS = 8


def wait_running(daemon: DaemonProcess, version: str, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = daemon.client.get("/pipelines/busy").json()
        if body.get("version") == version and body.get("state") == "running":
            return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError(f"version {version} not running after {timeout}s")


def measure(daemon: DaemonProcess, out: Path, style: str, i: int) -> float:
    def text(n: int) -> str:
        return flow(out, delay=0.001, work_seconds=0.0005, description=f"{style} {i}.{n}")

    if style == "burst":
        for n in range(5):
            daemon.write_pipeline("busy", text(n), atomic=n % 2 == 0)
            time.sleep(0.03)
    daemon.write_pipeline("busy", text(99), atomic=style != "in-place")
    last_write = time.monotonic()
    version = file_version(daemon.conf_dir / "busy.toml")
    return wait_running(daemon, version) - last_write


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        daemon = DaemonProcess(Path(tmp), watch=True, log_level="warning")
        out = install_flow_stages(daemon)
        daemon.write_pipeline("busy", flow(out, delay=0.001, work_seconds=0.0005))
        daemon.write_pipeline("idle", echo("idle"))
        daemon.start()
        time.sleep(1.0)  # let the watcher set up and items flow before the first edit
        results: dict[str, list[float]] = {}
        try:
            for style in ("rename", "in-place", "burst"):
                results[style] = [measure(daemon, out, style, i) for i in range(ROUNDS)]
        finally:
            code = daemon.stop()
    worst = 0.0
    for style, latencies in results.items():
        median, top = statistics.median(latencies), max(latencies)
        worst = max(worst, top)
        print(
            f"reload {style:9s} last write -> new version running: median {median * 1000:6.1f} ms, "
            f"max {top * 1000:6.1f} ms  ({median / TARGET:.2f}x of the 0.5 s target, "
            f"{median / QUIET:.2f}x the 0.2 s quiet period)"
        )
    verdict = "OK" if worst <= TARGET else "SLOWER THAN TARGET"
    print(f"worst {worst * 1000:.1f} ms: {verdict}; daemon exit status {code}")
    return 0 if worst <= TARGET and code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
