"""Running the real service (``chat-service ...``) as a subprocess for tests.

Configuration reaches the process only through ``CHAT_SERVICE_*`` environment variables,
as in the Docker image; the working directory is the repository root, so the shipped
``config/config.toml`` and ``alembic.ini`` are found.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import ROOT

# The console script the Docker image and `make run` use, from the same environment.
CHAT_SERVICE = str(Path(sys.executable).with_name("chat-service"))
STARTUP_SECONDS = 20.0
STOP_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``CHAT_SERVICE_*`` variable, plus ``settings``.

    ``settings`` are given without the prefix: ``DATABASE_URL="..."`` becomes
    ``CHAT_SERVICE_DATABASE_URL``. Rate limits are off unless ``settings`` say otherwise
    (tests post from one address as fast as they can), and a refusal is answered at once.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("CHAT_SERVICE")}
    env["CHAT_SERVICE_RATE_LIMITS_ENABLED"] = "false"
    env["CHAT_SERVICE_RATE_LIMITS_REFUSAL_DELAY_SECONDS"] = "0"
    env.update({f"CHAT_SERVICE_{name}": value for name, value in settings.items()})
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``chat-service *args`` to completion (bounded by ``timeout``)."""
    return subprocess.run(
        [CHAT_SERVICE, *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Server:
    """A running ``chat_service serve`` process; its stderr goes to ``log_path``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self, timeout: float = 5.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def wait_until_healthy(self, deadline_seconds: float = STARTUP_SECONDS) -> None:
        """Poll ``GET /health`` until it answers 200; fail if the process dies or time runs out."""
        deadline = time.monotonic() + deadline_seconds
        with httpx.Client(base_url=self.base_url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.process.returncode} while starting:\n"
                        + self.logs()
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health").status_code == 200:
                        return
                time.sleep(0.1)
        raise AssertionError(f"server not healthy after {deadline_seconds} s:\n{self.logs()}")

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM the process and wait for it (bounded); returns its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill_everything(self) -> None:
        """Kill the process group (the server and any worker it started), then reap."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_SECONDS)


@contextlib.contextmanager
def serving(
    env: Mapping[str, str],
    log_path: Path,
    *,
    port: int,
    wait: bool = True,
    command: Sequence[str] = (CHAT_SERVICE, "serve"),
) -> Iterator[Server]:
    """Start ``chat-service serve`` (or ``command``) with ``env``; always killed on the way out.

    The process gets a session (and process group) of its own, so that any worker left
    behind by a failing test is killed with it.
    """
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    server = Server(process=process, port=port, log_path=log_path)
    try:
        if wait:
            server.wait_until_healthy()
        yield server
    finally:
        server.kill_everything()


def child_pids(pid: int) -> set[int]:
    """The direct children of ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children.update(int(c) for c in (task / "children").read_text().split())
    return children


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


def port_refuses(port: int) -> bool:
    """Whether a connection to 127.0.0.1:``port`` is refused (nothing listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@dataclass
class RawResponse:
    """An HTTP/1.1 response read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes


def read_response(connection: socket.socket, timeout: float) -> RawResponse:
    """Read one response with a ``Content-Length`` from ``connection``, within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""

    def receive() -> None:
        nonlocal data
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete response within {timeout} s: {data!r}")
        connection.settimeout(remaining)
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a complete response: {data!r}")
        data += chunk

    while b"\r\n\r\n" not in data:
        receive()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(data) - len(head) - 4 < length:
        receive()
    body = data[len(head) + 4 :][:length]
    return RawResponse(status=int(status_line.split()[1]), headers=headers, body=body)
