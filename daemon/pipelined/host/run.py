"""`pipelined run`: settings, logging, the API server, the watcher, the heartbeat, the control loop.

The `run` subcommand's parser is `pipelined.cli.main`'s, which imports this module only when
the daemon runs (it pulls in Litestar, uvicorn and the engine).

Exit statuses: 0 after a normal stop, 2 invalid settings (including a refused non-loopback bind
without a token, `config_write = true` without a token or a 0600 unix socket, a token or TLS key
file others can read, a settings file or state dir users other than root and the daemon's may
write), 3 the API cannot listen, 130 after a second SIGINT.

The daemon runs with umask 077 (like the unit's `UMask=0077`), so whatever it and its pipelines
create is private to its user whatever umask it was started with.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from pipelined import tracing
from pipelined.api.app import ApiSettings, create_app
from pipelined.api.server import ApiServer, CannotListen, SocketOptions
from pipelined.config.permissions import declared_python_path, path_problem
from pipelined.config.secrets import expand_credentials
from pipelined.config.settings import Settings, SettingsInvalid, changed_keys, load_settings
from pipelined.host.logs import configure_logging, logs_to_stderr
from pipelined.host.memory import return_big_buffers_to_the_system
from pipelined.host.notify import Heartbeat, Notifier
from pipelined.supervisor.loop import Supervisor
from pipelined.supervisor.watcher import ConfWatcher
from pipelined.workers import ray_cluster as ray_clusters

log = logging.getLogger("pipelined.daemon")

EXIT_OK, EXIT_SETTINGS, EXIT_LISTEN = 0, 2, 3


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, Settings]:
    """(settings from the file, settings with the flags applied); SettingsInvalid on error."""
    from_file = load_settings(args.config)
    settings = from_file.with_overrides(
        conf_dir=args.conf_dir,
        state_dir=args.state_dir,
        listen=args.listen,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    settings.check_all()
    return from_file, settings


def run_command(args: argparse.Namespace) -> int:
    os.umask(0o077)
    try:
        from_file, settings = resolve_settings(args)
        api_settings = ApiSettings.from_settings(settings.api)
    except SettingsInvalid as exc:
        text = str(exc)
        source = getattr(args, "config", None)
        if text.startswith("[") and source is not None:  # e.g. the token file: name the settings file
            text = f"{source}: {text}"
        print(f"pipelined: {text}", file=sys.stderr)
        return EXIT_SETTINGS
    configure_logging(settings.daemon.log_level, settings.daemon.log_format)
    return_big_buffers_to_the_system()  # big items' memory goes back when they are done
    tracing.configure()  # OTEL_TRACES_EXPORTER etc.; off (and nothing imported) when unset
    try:
        settings.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"pipelined: [daemon]: state_dir: cannot create {settings.daemon.state_dir}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return EXIT_SETTINGS
    refused = path_problem(settings.daemon.state_dir)
    if refused is not None:  # its disk buffers are pickles, replayed at start: code
        print(f"pipelined: [daemon]: state_dir: refused: {refused}", file=sys.stderr)
        return EXIT_SETTINGS
    export_stage_environment(settings)
    ray_clusters.configure(ray_clusters.RayConfig(
        address=settings.ray.address, namespace=settings.ray.namespace,
        object_store_memory=settings.ray.object_store_memory, state_dir=settings.daemon.state_dir.resolve()))
    return Daemon(settings, from_file, api_settings, watch=not args.no_watch).run()


def export_stage_environment(settings: Settings) -> None:
    """Where built-in stages resolve relative paths (the state dir) and may read and write (the
    roots); set before any pipeline starts so every worker process inherits it."""
    os.environ["PIPELINED_STATE_DIR"] = str(settings.daemon.state_dir.resolve())
    reads, writes = settings.daemon.stage_roots()
    os.environ["PIPELINED_READ_PATHS"] = os.pathsep.join(str(p) for p in reads)
    os.environ["PIPELINED_WRITE_PATHS"] = os.pathsep.join(str(p) for p in writes)


class Daemon:
    """Wires the pieces together in the order the spec wants: listen, apply, READY=1."""

    def __init__(self, settings: Settings, from_file: Settings, api_settings: ApiSettings, watch: bool) -> None:
        self.settings = settings
        self.from_file = from_file
        self.notifier = Notifier.from_environment()
        self.supervisor = Supervisor(settings, self.notifier)
        self.tokens = api_settings.token_holder()
        api_settings = replace(api_settings, tokens=self.tokens)
        api = settings.api
        cert, key = (expand_credentials(p) if p is not None else None for p in (api.tls_cert, api.tls_key))
        options = SocketOptions(api.socket_mode, api.socket_group, cert, key)
        self.server = ApiServer(create_app(self.supervisor, api_settings), api.listen, options,
                                max_connections=api.max_connections)  # fmt: skip
        self.heartbeat = Heartbeat(self.notifier, self.supervisor.is_loop_healthy, self.supervisor.status_line)
        self.watcher = self._make_watcher() if watch else None
        self.supervisor.on_reloaded.append(self._after_reload)
        self.supervisor.on_ready.append(self.heartbeat.poke)  # STATUS= right after READY=1

    def _make_watcher(self) -> ConfWatcher:
        return ConfWatcher(self._watched_directories, lambda _paths: self.supervisor.request_reload("watcher"))

    def _watched_directories(self) -> list[Path]:
        dirs = {self.settings.daemon.conf_dir}
        with self.supervisor.slots_lock:
            slots = list(self.supervisor.slots.values())
        for slot in slots:
            if slot.version is not None:
                dirs.update(slot.version.spec.python_path)
            else:  # failed at load: fixing its code (e.g. adding the missing function) reloads it too
                try:
                    dirs.update(declared_python_path(slot.path, resolve=True))
                except OSError:
                    continue
        return sorted(dirs)

    def _after_reload(self, _supervisor: Supervisor) -> None:
        if self.watcher is not None:
            self.watcher.refresh()
        self.tokens.refresh()  # rotation: POST /reload or SIGHUP reads the token file again
        self._log_settings_changes()

    def _log_settings_changes(self) -> None:
        if self.from_file.source is None:
            return
        try:
            current = load_settings(self.from_file.source)
        except SettingsInvalid as exc:
            log.warning("settings file is now invalid (still running with the old settings): %s", exc)
            return
        changed = changed_keys(self.from_file, current)
        if changed:
            log.warning("settings changed (%s): they take effect after a restart", ", ".join(changed))
            self.from_file = current

    def run(self) -> int:
        self.supervisor.install_signal_handlers()
        api = self.settings.api
        if api.unix_socket is None and api.host_port[0] in ("0.0.0.0", "::") and not api.allowed_hosts:
            log.warning(
                "listening on every address (%s) with no [api] allowed_hosts: requests must name the host"
                " as localhost, 127.0.0.1 or [::1]; list the names clients use in allowed_hosts", api.listen
            )
        try:
            self.server.start()
        except CannotListen as exc:
            log.error("%s", exc)
            if not logs_to_stderr():  # journal: say it on the terminal too (once: json stays json)
                print(f"pipelined: {exc}", file=sys.stderr)
            return EXIT_LISTEN
        if self.watcher is not None:
            self.watcher.start()
        self.heartbeat.start()
        try:
            return self.supervisor.run_loop()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            self.heartbeat.stop()
            self.server.stop()
            ray_clusters.shutdown_clusters()  # the embedded Ray stops; a cluster is only left
            tracing.shutdown()  # exports the spans still buffered
            logging.shutdown()
