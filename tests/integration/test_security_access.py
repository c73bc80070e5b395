"""Issue 16, findings 1, 2, 5 and 9: who can reach the API, with which secret, over what.

- the unix socket is 0600 (the review got 0666 and `nobody` reloaded the daemon through it);
  `socket_mode`/`socket_group` widen it on purpose, never to everyone without a token;
- `config_write = true` is refused (exit 2) unless a token is set or the API is a 0600 socket;
- the token: refused when group/others may read it, read from `$CREDENTIALS_DIRECTORY/api.token`,
  re-read on POST /reload and SIGHUP;
- TLS with `tls_cert`/`tls_key`, verified by the client with `--cacert`.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from harness import REPO_ROOT, DaemonProcess, wait_for, write_token

NOBODY = 65534
CONNECT_AS_NOBODY = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("refused", exc.errno); sys.exit(0)
auth = f"Authorization: Bearer {sys.argv[2]}\\r\\n" if len(sys.argv) > 2 else ""
s.sendall(f"POST /reload HTTP/1.1\\r\\nHost: x\\r\\n{auth}Content-Length: 0\\r\\nConnection: close\\r\\n\\r\\n".encode())
print("answered", s.recv(100).split(b"\\r\\n")[0].decode())
"""

can_switch_users = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists(), reason="needs root to act as nobody"
)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp dirs are 0700), holding the socket."""
    directory = Path(tempfile.mkdtemp(prefix="pipelined-sock-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def as_nobody(sock: Path, *token: str) -> str:
    done = subprocess.run(
        ["/usr/bin/python3", "-c", CONNECT_AS_NOBODY, str(sock), *token],
        user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def exits_2(make_daemon: Callable[..., DaemonProcess], **options: object) -> str:
    daemon = make_daemon(**options)
    daemon.start(wait=None)
    assert daemon.wait_exit(20) == 2, daemon.logs()
    return daemon.logs()


# -- finding 1: the unix socket -------------------------------------------------------------------
@can_switch_users
def test_the_socket_is_0600_and_another_user_cannot_connect(
    make_daemon: Callable[..., DaemonProcess], socket_dir: Path
) -> None:
    sock = socket_dir / "api.sock"
    daemon = make_daemon(listen=f"unix:{sock}")
    daemon.start()
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and sock.stat().st_uid == os.geteuid()
    assert as_nobody(sock) == "refused 13"  # EACCES: the review's `su nobody -c curl ... /reload` → 200
    assert daemon.client.post("/reload").status_code == 200  # its owner still can
    assert daemon.stop() == 0


@can_switch_users
def test_socket_mode_and_group_let_a_group_in_and_the_token_still_applies(
    make_daemon: Callable[..., DaemonProcess], socket_dir: Path
) -> None:
    sock = socket_dir / "group" / "api.sock"
    settings = '[api]\nsocket_mode = "0660"\nsocket_group = "nogroup"\n'
    daemon = make_daemon(listen=f"unix:{sock}", settings=settings, token="group-token")
    daemon.start()
    status = sock.stat()
    assert stat.S_IMODE(status.st_mode) == 0o660 and status.st_gid == NOBODY
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o750 and sock.parent.stat().st_gid == NOBODY
    assert as_nobody(sock) == "answered HTTP/1.1 401 Unauthorized"
    assert as_nobody(sock, "group-token") == "answered HTTP/1.1 200 OK"
    assert daemon.stop() == 0


def test_a_socket_every_user_may_use_needs_a_token(make_daemon: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    logs = exits_2(make_daemon, listen=f"unix:{tmp_path / 'x.sock'}", settings='[api]\nsocket_mode = "0666"\n')
    assert "socket_mode: refusing a unix socket every local user may use (0666) without a token" in logs


def test_a_socket_in_a_world_writable_directory_is_refused(
    make_daemon: Callable[..., DaemonProcess], socket_dir: Path
) -> None:
    socket_dir.chmod(0o777)
    daemon = make_daemon(listen=f"unix:{socket_dir / 'api.sock'}")
    daemon.start(wait=None)
    assert daemon.wait_exit(20) == 3
    assert "is writable by every user (mode 0777), who could replace the socket" in daemon.logs()


# -- finding 2: config writes ----------------------------------------------------------------------
def test_config_write_without_a_token_on_tcp_is_refused(make_daemon: Callable[..., DaemonProcess]) -> None:
    logs = exits_2(make_daemon, settings="[api]\nconfig_write = true\n")
    assert "config_write = true lets an API caller run any code as the daemon's user" in logs
    assert "unless a token is set ([api] token_file) or the API listens only on a unix socket of mode 0600" in logs


def test_config_write_on_a_group_socket_without_a_token_is_refused(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    settings = '[api]\nconfig_write = true\nsocket_mode = "0660"\n'
    assert "config_write" in exits_2(make_daemon, listen=f"unix:{tmp_path / 's.sock'}", settings=settings)


def test_config_write_on_a_0600_socket_without_a_token_runs(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = make_daemon(listen=f"unix:{tmp_path / 's.sock'}", settings="[api]\nconfig_write = true\n")
    daemon.start()
    body = (
        '[[stage]]\nname = "n"\nkind = "producer"\ncall = "pipelined.stages:count"\nargs = { stop = 1 }\n'
        '[[stage]]\nname = "out"\nkind = "consumer"\ncall = "pipelined.stages:log"\n'
    )
    r = daemon.client.put("/pipelines/made", content=body, headers={"Content-Type": "application/toml"})
    assert r.status_code == 201, r.text
    assert daemon.stop() == 0


def test_the_docs_say_what_config_write_means() -> None:
    for doc in ("api.md", "operations.md", "security.md"):
        text = " ".join((REPO_ROOT / "docs" / doc).read_text().split())
        assert "lets an API caller run any code as the daemon's user" in text, doc


# -- finding 5: the token --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o620])
def test_a_token_file_others_can_read_or_write_is_refused(
    make_daemon: Callable[..., DaemonProcess], tmp_path: Path, mode: int
) -> None:
    token = write_token(tmp_path / "loose.token", "loose")
    token.chmod(mode)
    logs = exits_2(make_daemon, settings=f'[api]\ntoken_file = "{token}"\n')
    assert f"{token} is readable or writable by group or others (mode {mode:04o})" in logs
    assert f"chmod 600 {token}" in logs


def test_the_token_comes_from_systemd_credentials(make_daemon: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write_token(credentials / "api.token", "from-credentials").chmod(0o400)  # as systemd makes it
    daemon = make_daemon(env={"CREDENTIALS_DIRECTORY": str(credentials)})
    daemon.start()
    assert daemon.client.get("/pipelines").status_code == 401
    ok = daemon.client.get("/pipelines", headers={"Authorization": "Bearer from-credentials"})
    assert ok.status_code == 200
    assert daemon.stop() == 0


def test_reload_and_sighup_re_read_the_token(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(token="first")
    daemon.start()
    token_file = daemon.base_dir / "api.token"

    def status(token: str) -> int:
        return daemon.client.get("/pipelines", headers={"Authorization": f"Bearer {token}"}).status_code

    write_token(token_file, "second")
    assert status("first") == 200  # nothing re-read it yet
    assert daemon.client.post("/reload", headers={"Authorization": "Bearer first"}).status_code == 200
    assert status("second") == 200 and status("first") == 401
    daemon.wait_log("API token re-read")

    write_token(token_file, "third")
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: status("third") == 200, 10, what="SIGHUP re-reads the token")
    assert status("second") == 401

    token_file.chmod(0o644)  # gone bad: the daemon keeps the token it has, and says why
    assert daemon.client.post("/reload", headers={"Authorization": "Bearer third"}).status_code == 200
    daemon.wait_log("API token not re-read (the previous token stays valid)")
    assert status("third") == 200
    assert daemon.stop() == 0


# -- finding 9: TLS --------------------------------------------------------------------------------
def test_tls_serves_https_and_the_client_verifies_it(
    make_daemon: Callable[..., DaemonProcess], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    daemon = make_daemon(settings=f'[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n', token="tls-token", tls_ca=cert)
    daemon.start()
    assert daemon.url.startswith("https://")
    assert daemon.client.get("/pipelines").status_code == 200
    with pytest.raises(httpx.HTTPError):  # no clear text on the same port
        httpx.get(f"http://{daemon.listen}/health", timeout=5)
    with pytest.raises(httpx.ConnectError):  # an unknown CA is refused
        httpx.get(f"{daemon.url}/health", timeout=5)

    def client(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelined", "status", "--api", daemon.url, "--json", *extra],
            capture_output=True, text=True, timeout=60, env=daemon.environment(),
        )  # fmt: skip

    verified = client("--cacert", str(cert))
    assert verified.returncode == 0 and verified.stdout.strip() == "[]", verified.stderr
    unverified = client()
    assert unverified.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in unverified.stderr
    assert daemon.stop() == 0


def test_tls_settings_are_checked_before_listening(
    make_daemon: Callable[..., DaemonProcess], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate
    loose = tmp_path / "loose-key.pem"
    shutil.copy(key, loose)
    loose.chmod(0o644)
    logs = exits_2(make_daemon, settings=f'[api]\ntls_cert = "{cert}"\ntls_key = "{loose}"\n', token="t")
    assert f"tls_key: {loose} is readable or writable by group or others (mode 0644)" in logs
    logs = exits_2(make_daemon, settings=f'[api]\ntls_cert = "{cert}"\n', token="t")
    assert "tls_key: tls_cert and tls_key go together" in logs
