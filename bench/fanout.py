"""Live fan-out: N subscribers on one stream, messages posted at a steady rate.

    python -m bench.fanout                 # the whole scenario (make bench-fanout)
    python -m bench.fanout --setups postgresql --streams session --subscribers 1000
    python -m bench.fanout --setups postgresql --subscribers 1000 --ws-subscribers '' \
        --profile                          # py-spy samples the subscribers' server

Setups: PostgreSQL with one `chat-service serve` process of one worker; SQLite, the
same; PostgreSQL with two such processes, the subscribers on one and the poster on the
other, so that every event crosses LISTEN/NOTIFY. For each setup, stream (one
session's, or the tenant's), transport (SSE, WebSocket) and number of subscribers: a
fresh migrated database, fresh server processes (auth off, the default settings) and
a new session. Subscribers are raw sockets spread over a few client processes
(bench/live_client.py); a poster posts to the session at ``--rate`` messages per
second, first for ``--warmup`` seconds (not measured), then for ``--duration``
seconds. The most SSE subscribers are measured at ``--slow-rate`` too, where one
message's fan-out ends before the next begins.

Commit-to-delivery latency, for every (measured message, subscriber): the kernel's
receive timestamp of the segment that carried the event to that subscriber, minus the
message's ``timestamp`` (its created_at), which the server stamps as it builds the
row, just before the transaction that inserts it: the figure includes the COMMIT, so
it is a little longer than commit to delivery, never shorter. On loopback the kernel
stamps a segment as it is sent, so it does not depend on when a client gets round to
reading. Both are CLOCK_REALTIME on the same machine. Every subscriber must
get every message posted (warm-up included), once and in order: anything else is
reported.

Each configuration is measured once (a run holds thousands of samples); the 1-subscriber
run of the same setup and stream is the baseline measured in the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import pickle
import platform
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.live_client import SO_TIMESTAMPNS, kernel_time, raise_open_files
from bench.profile import summarize
from bench.run import (
    DEFAULT_POSTGRES,
    ROOT,
    Server,
    _postgres_version,
    cpu_seconds,
    fresh_database,
    machine_busy_seconds,
    serve,
)

BEGIN = "<!-- fanout:begin (written by `make bench-fanout`; edit around it, not inside) -->"
END = "<!-- fanout:end -->"


@dataclass(frozen=True)
class Setup:
    backend: str
    processes: int
    label: str


SETUPS = {
    "postgresql": Setup("postgresql", 1, "PostgreSQL, 1 process × 1 worker"),
    "sqlite": Setup("sqlite", 1, "SQLite, 1 process × 1 worker"),
    "postgresql-2": Setup(
        "postgresql", 2, "PostgreSQL, 2 processes × 1 worker (LISTEN/NOTIFY): poster on B"
    ),
}
STREAMS = {
    "session": {"sse": "/sessions/{id}/events", "ws": "/sessions/{id}/live"},
    "tenant": {"sse": "/events", "ws": "/live"},
}
for _paths in STREAMS.values():
    _paths["wsz"] = _paths["ws"]  # a WebSocket that asks for per-message deflate
# wsz: WebSockets that ask for per-message deflate, as browsers do, measured with
# live.websocket_compression on (off by default: the server declines it).
TRANSPORT_LABELS = {"sse": "SSE", "ws": "WS", "wsz": "WS + deflate (opt-in)"}
# The goals: p99 commit-to-delivery at this many subscribers.
GOAL_SUBSCRIBERS = 1000
GOAL_ONE_PROCESS_MS = 50.0
GOAL_TWO_PROCESSES_MS = 100.0


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    client_processes: int
    drain: float
    client_poll_ms: float
    profile: bool
    out: Path


# --- one run --------------------------------------------------------------------------


def server_connections(pid: int, port: int) -> int:
    """Established TCP connections on the server's listening port."""
    with contextlib.suppress(psutil.Error):
        return sum(
            1
            for connection in psutil.Process(pid).net_connections("tcp")
            if connection.status == psutil.CONN_ESTABLISHED and connection.laddr.port == port
        )
    return -1


def rss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def new_session(server: Server) -> str:
    response = httpx.post(server.base_url + "/sessions", json={}, timeout=10)
    response.raise_for_status()
    return str(response.json()["id"])


class Clients:
    """The subscribers: ``total`` connections over a few ``bench.live_client`` processes."""

    def __init__(
        self,
        port: int,
        path: str,
        transport: str,
        total: int,
        options: Options,
        workdir: Path,
    ) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.results: list[Path] = []
        count = max(1, min(options.client_processes, total))
        shares = [total // count + (1 if index < total % count else 0) for index in range(count)]
        for index, share in enumerate(shares):
            result = workdir / f"client-{index}-{uuid.uuid4().hex[:6]}.pickle"
            self.results.append(result)
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.live_client",
                        "--port",
                        str(port),
                        "--path",
                        path,
                        "--transport",
                        transport,
                        "--connections",
                        str(share),
                        "--drain",
                        str(options.drain),
                        "--poll-ms",
                        str(options.client_poll_ms),
                        "--result",
                        str(result),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )

    def _line(self, process: subprocess.Popen[str], kind: str) -> dict[str, Any]:
        assert process.stdout is not None  # noqa: S101
        line = process.stdout.readline()
        if not line.startswith(kind + " "):
            raise RuntimeError(f"a client process said {line!r} instead of {kind}")
        parsed: dict[str, Any] = json.loads(line.split(" ", 1)[1])
        return parsed

    def ready(self) -> dict[str, Any]:
        reports = [self._line(process, "ready") for process in self.processes]
        return {
            "opened": sum(report["opened"] for report in reports),
            "failed": sum(report["failed"] for report in reports),
            "first_failures": [f for report in reports for f in report["first_failures"]][:3],
            "seconds": max(report["seconds"] for report in reports),
        }

    def stop(self, last_seq: int) -> list[dict[str, Any]]:
        for process in self.processes:
            assert process.stdin is not None  # noqa: S101
            process.stdin.write(f"stop {last_seq}\n")
            process.stdin.flush()
        for process in self.processes:
            self._line(process, "done")
        records: list[dict[str, Any]] = []
        for result in self.results:
            records.extend(pickle.loads(result.read_bytes()))  # noqa: S301 - our own file
            result.unlink()
        return records

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@dataclass
class Post:
    seq: int
    sent: float  # when the poster sent the POST
    created: float  # the message's created_at: the server's clock, just before COMMIT
    acked: float  # the kernel's timestamp of the answer's first segment
    measured: bool


def post_steadily(
    server: Server, session_id: str, rate: float, seconds: float, measured: bool, start_index: int
) -> list[Post]:
    """POST a message every 1/rate s for ``seconds`` (on one keep-alive connection).

    A post's ``acked`` is the kernel's receive timestamp of the first segment of its
    answer (on loopback: when the server sent it), not when this process got round to
    reading it; ``created`` is the message's ``created_at``.
    """
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    head = (
        f"POST /sessions/{session_id}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nPrefer: return=minimal\r\n"
    )
    posts: list[Post] = []
    start = time.monotonic()
    count = round(seconds * rate)
    try:
        for index in range(count):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = json.dumps(
                {
                    "content": f"Fan-out message {start_index + index}: where is my order?",
                    "author_type": "customer",
                }
            ).encode()
            sent = time.time()
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status, answer, acked = read_answer(sock)
            if status != 201:
                raise RuntimeError(f"POST answered {status}: {answer[:200]!r}")
            message = json.loads(answer)
            created = datetime.fromisoformat(message["timestamp"]).timestamp()
            posts.append(Post(message["seq"], sent, created, acked, measured))
    finally:
        sock.close()
    return posts


def read_answer(sock: socket.socket) -> tuple[int, bytes, float]:
    """(status, body, kernel time of its first segment) of one HTTP/1.1 answer."""
    data = b""
    first: float | None = None
    while True:
        chunk, ancillary, _flags, _address = sock.recvmsg(65536, 64)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        if first is None:
            first = kernel_time(ancillary, time.time())
        data += chunk
        header_end = data.find(b"\r\n\r\n")
        if header_end < 0:
            continue
        head = data[:header_end].decode("latin-1")
        length = re.search(r"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {head!r}")
        body = data[header_end + 4 :]
        if len(body) >= int(length.group(1)):
            return int(head.split()[1]), body[: int(length.group(1))], first


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def analyse(posts: list[Post], records: list[dict[str, Any]]) -> dict[str, Any]:
    by_seq = {post.seq: post for post in posts}
    latencies: list[float] = []
    from_send: list[float] = []
    read_lag: list[float] = []
    delivered = duplicates = out_of_order = extra = 0
    repeated: list[int] = []
    arrivals: dict[int, list[float]] = {}
    incomplete = 0
    for record in records:
        seqs, kernel, read = record["seqs"], record["kernel"], record["read"]
        seen: set[int] = set()
        previous = 0
        for seq, at, read_at in zip(seqs, kernel, read, strict=True):
            post = by_seq.get(seq)
            if post is None:
                extra += 1
                continue
            if seq in seen:
                duplicates += 1
                if len(repeated) < 5:
                    repeated.append(seq)
                continue
            if seq < previous:
                out_of_order += 1
            previous = max(previous, seq)
            seen.add(seq)
            delivered += 1
            if post.measured:
                latencies.append((at - post.created) * 1000)
                arrivals.setdefault(seq, []).append((at - post.created) * 1000)
                from_send.append((at - post.sent) * 1000)
                read_lag.append((read_at - at) * 1000)
        if len(seen) < len(posts):
            incomplete += 1
    per_message = []
    for seq, times in sorted(arrivals.items()):
        times.sort()
        per_message.append([seq, round(percentile(times, 0.5), 1), round(times[-1], 1)])
    latencies.sort()
    from_send.sort()
    read_lag.sort()
    answers = sorted((post.acked - post.sent) * 1000 for post in posts if post.measured)
    expected = len(posts) * len(records)
    return {
        "posted": len(posts),
        "measured_messages": sum(post.measured for post in posts),
        "expected": expected,
        "delivered": delivered,
        "missing": expected - delivered,
        "subscribers_missing_some": incomplete,
        "duplicates": duplicates,
        "repeated_seqs": repeated,
        "out_of_order": out_of_order,
        "unexpected": extra,
        "closed_by_server": sum(1 for record in records if record["closed"]),
        "samples": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "min_ms": round(latencies[0], 2) if latencies else None,
        "p99_from_send_ms": round(percentile(from_send, 0.99), 2),
        "read_lag_p50_ms": round(percentile(read_lag, 0.50), 2),
        "read_lag_p99_ms": round(percentile(read_lag, 0.99), 2),
        "post_p50_ms": round(percentile(answers, 0.50), 2),
        "post_p99_ms": round(percentile(answers, 0.99), 2),
        # Each measured message: [seq, median, slowest] over its subscribers, in ms.
        "per_message": per_message,
    }


def profile_server(pid: int, seconds: float, folded: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(folded),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_one(
    setup_name: str,
    database_url: str,
    stream: str,
    transport: str,
    subscribers: int,
    rate: float,
    direct: bool,
    options: Options,
    workdir: Path,
) -> dict[str, Any]:
    setup = SETUPS[setup_name]
    env = {
        "CHAT_SERVICE_DATABASE_URL": database_url,
        "CHAT_SERVICE_HTTP_WORKERS": "1",
        "CHAT_SERVICE_LIVE_DIRECT_WRITES": "true" if direct else "false",
        "CHAT_SERVICE_LIVE_WEBSOCKET_COMPRESSION": "true" if transport == "wsz" else "false",
    }
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(serve("chat_service", env, "/health/ready", workdir / "a.log"))
        poster = hub
        if setup.processes == 2:
            poster = stack.enter_context(
                serve("chat_service", env, "/health/ready", workdir / "b.log")
            )
        session_id = new_session(poster)
        pid, port = hub.process.pid, port_of(hub)
        rss_idle = rss_mb(pid)
        path = STREAMS[stream][transport].format(id=session_id)
        clients = Clients(port, path, transport, subscribers, options, workdir)
        stack.callback(clients.close)
        opened = clients.ready()
        time.sleep(1.0)
        held = server_connections(pid, port)
        rss_open = rss_mb(pid)
        warm = post_steadily(poster, session_id, rate, options.warmup, False, 0)
        watched = [psutil.Process(p) for p in clients.pids()]
        servers = [psutil.Process(pid)]
        if poster is not hub:
            servers.append(psutil.Process(poster.process.pid))
        hub_before, poster_before = cpu_seconds(servers[:1]), cpu_seconds(servers[1:])
        hub_system_before = servers[0].cpu_times().system
        clients_before = cpu_seconds(watched)
        machine_before = machine_busy_seconds()
        started = time.monotonic()
        recorder = None
        name = f"{setup_name}-{stream}-{transport}-{subscribers}-{rate:g}"
        name += "" if direct else "-asgi"
        folded = options.out / f"fanout-profile-{name}.folded"
        if options.profile:
            recorder = profile_server(pid, options.duration, folded)
        measured = post_steadily(poster, session_id, rate, options.duration, True, len(warm))
        elapsed = time.monotonic() - started
        hub_used = cpu_seconds(servers[:1]) - hub_before
        hub_system = servers[0].cpu_times().system - hub_system_before
        poster_used = cpu_seconds(servers[1:]) - poster_before
        clients_used = cpu_seconds(watched) - clients_before
        other_used = machine_busy_seconds() - machine_before - hub_used - poster_used - clients_used
        if recorder is not None:
            recorder.wait()
        posts = warm + measured
        records = clients.stop(posts[-1].seq)
        rss_end = rss_mb(pid)
        rss_peak = hub.sampler.peak_mb()
        result = analyse(posts, records)
    return {
        "kind": "run",
        "setup": setup_name,
        "backend": setup.backend,
        "processes": setup.processes,
        "stream": stream,
        "transport": transport,
        "direct_writes": direct,
        "subscribers": subscribers,
        "opened": opened["opened"],
        "failed_to_open": opened["failed"],
        "open_failures": opened["first_failures"],
        "open_seconds": opened["seconds"],
        "connections_held": held,
        "rss_idle_mb": rss_idle,
        "rss_open_mb": rss_open,
        "rss_end_mb": rss_end,
        "rss_peak_mb": rss_peak,
        "kb_per_connection": (
            round((rss_open - rss_idle) * 1024 / subscribers, 1) if subscribers >= 100 else None
        ),
        "rate": rate,
        "duration": options.duration,
        "cpu_server": round(hub_used / elapsed, 2),
        # The kernel's share of it (on loopback, a send() also runs the receiving side).
        "cpu_server_system_share": round(hub_system / hub_used, 2) if hub_used else None,
        # The subscribers' server's CPU per (measured message, subscriber).
        "cpu_us_per_delivery": (
            round(hub_used * 1e6 / (len(measured) * subscribers), 1) if subscribers >= 100 else None
        ),
        "cpu_poster_server": round(poster_used / elapsed, 2) if poster is not hub else None,
        "cpu_clients": round(clients_used / elapsed, 2),
        "cpu_other": round(max(other_used, 0.0) / elapsed, 2),
        "profile": str(folded) if options.profile else None,
        **result,
    }


# Where the subscribers' server spends a sample: the first rule that matches anywhere
# in the stack, in this order.
FANOUT_CATEGORIES = (
    (
        "events written straight to the connections (live_sinks: send(), loopback "
        "delivery included)",
        ("_ChunkedSink.write", "_WebSocketSink.write", "_CompressedWebSocketSink.write"),
    ),
    (
        "socket writes through ASGI (StreamWriter.write: send(), loopback delivery included)",
        ("StreamWriter.write",),
    ),
    (
        "Hypercorn's send path (h11/wsproto framing, send lock, drain)",
        ("protocol_send", "stream_send", "app_send", "h11/", "wsproto/"),
    ),
    ("the POST requests", ("create_message", "post_message", "group_commit")),
    (
        "feed reads (database)",
        ("_SessionFeed", "_TenantFeed", "sqlalchemy/", "asyncpg/", "aiosqlite/"),
    ),
    ("waking subscribers (Subscription.next: wait_for, Event)", ("Subscription.next",)),
    (
        "the streams' generators and Quart's response loop",
        ("routes/live.py", "services/live.py", "quart/"),
    ),
    ("access log", ("logging/", "pythonjsonlogger")),
)


def breakdown(
    folded: Path,
    categories: tuple[tuple[str, tuple[str, ...]], ...] = FANOUT_CATEGORIES,
    other: str = "event loop and other",
) -> dict[str, float]:
    """Share of the event-loop thread's samples per part of the path, printed.

    A stack counts for the first of ``categories`` with a marker in it, else ``other``.
    """
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "_run_module_as_main" not in stack:
            continue  # another thread
        total += int(count_text)
        name = next(
            (name for name, markers in categories if any(m in stack for m in markers)), other
        )
        shares[name] += int(count_text)
    print(f"-- event-loop thread, {total} samples --")
    for name, count in shares.most_common():
        print(f"{100 * count / max(total, 1):5.1f}%  {name}")
    return {name: round(count / max(total, 1), 3) for name, count in shares.most_common()}


# --- the matrix ---------------------------------------------------------------------


def plan_runs(args: argparse.Namespace) -> list[tuple[str, str, int, float, bool]]:
    """(stream, transport, subscribers, rate, direct writes) of each run of a setup."""
    runs = []
    for stream in args.streams:
        runs += [(stream, "sse", n, args.rate, True) for n in args.subscribers]
        runs += [(stream, "ws", n, args.rate, True) for n in args.ws_subscribers]
        runs += [(stream, "wsz", n, args.rate, True) for n in args.wsz_subscribers]
        if args.slow_rate and args.subscribers:
            runs.append((stream, "sse", max(args.subscribers), args.slow_rate, True))
        for n in args.asgi_subscribers:
            runs.append((stream, "sse", n, args.rate, False))
            if args.ws_subscribers:
                runs.append((stream, "ws", n, args.rate, False))
            if args.wsz_subscribers:
                runs.append((stream, "wsz", n, args.rate, False))
    return runs


def machine(postgres_url: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "kind": "machine",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": asyncio.run(_postgres_version(postgres_url)),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "commit": source_version(),
    }


def source_version() -> str:
    """The commit measured (``-dirty``: with uncommitted changes)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help=f"comma-separated, of: {', '.join(SETUPS)}",
    )
    parser.add_argument("--streams", default="session,tenant", help="session,tenant")
    parser.add_argument("--subscribers", default="1,100,1000", help="SSE subscriber counts")
    parser.add_argument(
        "--ws-subscribers", default="1000", help="WebSocket subscriber counts ('' for none)"
    )
    parser.add_argument(
        "--wsz-subscribers",
        default="1000",
        help="counts of WebSocket subscribers that ask for per-message deflate, as browsers "
        "do, with live.websocket_compression on ('' for none)",
    )
    parser.add_argument(
        "--asgi-subscribers",
        default="1000",
        help="subscriber counts also measured with live.direct_writes = false, every event "
        "through ASGI: the baseline of the `× ASGI` column (SSE, and WebSocket if any; '' "
        "for none)",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second")
    parser.add_argument(
        "--slow-rate",
        type=float,
        default=2.0,
        help="also the most SSE subscribers at this rate, one fan-out at a time (0: not)",
    )
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds posted first, unmeasured"
    )
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument(
        "--client-poll-ms",
        type=float,
        default=0.0,
        help="clients read every this many ms instead of as data comes (0: as it comes)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the subscribers' server")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CHAT_SERVICE_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write the tables into docs/benchmarks.md and the runs to docs/benchmarks/",
    )
    args = parser.parse_args(argv)

    def counts(text: str) -> list[int]:
        return [int(value) for value in text.split(",") if value.strip()]

    args.setups = [name for name in args.setups.split(",") if name]
    unknown = set(args.setups) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setups: {', '.join(sorted(unknown))}")
    args.streams = [name for name in args.streams.split(",") if name]
    if set(args.streams) - set(STREAMS):
        parser.error("streams are session and tenant")
    args.subscribers = counts(args.subscribers)
    args.ws_subscribers = counts(args.ws_subscribers)
    args.wsz_subscribers = counts(args.wsz_subscribers)
    args.asgi_subscribers = counts(args.asgi_subscribers)
    most = max(
        [*args.subscribers, *args.ws_subscribers, *args.wsz_subscribers, *args.asgi_subscribers, 1]
    )
    # The servers are started from here and inherit the limit.
    limit = raise_open_files(most + 1024)
    if limit < most + 64:
        parser.exit(2, f"the open-file limit is {limit}: too low for {most} connections\n")

    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        client_processes=args.client_processes,
        drain=args.drain,
        client_poll_ms=args.client_poll_ms,
        profile=args.profile,
        out=args.out,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.fanout " + " ".join(
        shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])
    )
    stamp = datetime.now(UTC)
    results = args.out / "fanout.jsonl"
    records: list[dict[str, Any]] = [
        {
            **machine(args.postgres_url),
            "command": command.strip(),
            "started": stamp.isoformat(timespec="seconds"),
            "rate": args.rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "client_processes": args.client_processes,
        }
    ]
    results.write_text(json.dumps(records[0]) + "\n")
    workdir = Path(tempfile.mkdtemp(prefix="chat-fanout-"))
    started = time.monotonic()
    for setup in args.setups:
        print(SETUPS[setup].label, flush=True)
        for stream, transport, subscribers, rate, direct in plan_runs(args):
            # A fresh database each time: a tenant stream shows every session of the
            # tenant that changed lately, earlier runs' sessions included.
            with fresh_database(SETUPS[setup].backend, args.postgres_url, workdir) as url:
                record = run_one(
                    setup, url, stream, transport, subscribers, rate, direct, options, workdir
                )
            records.append(record)
            with results.open("a") as file:
                file.write(json.dumps(record) + "\n")
            print(line_of(record), flush=True)
            if record["profile"]:
                summarize(Path(record["profile"]), 25)
                breakdown(Path(record["profile"]))
    shutil.rmtree(workdir, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    text = markdown(records, minutes)
    (args.out / "fanout.md").write_text(text)
    if args.publish:
        publish(text, results, ROOT / "docs")
    print(f"done in {minutes:.1f} min: {args.out / 'fanout.md'}")
    return 0


def line_of(record: dict[str, Any]) -> str:
    return (
        f"  {record['setup']:13} {record['stream']:7} {record['transport']:3} "
        f"{'' if record['direct_writes'] else '(ASGI) '}"
        f"n={record['subscribers']:<5} held {record['connections_held']:<5} "
        f"{record['rate']:g}/s p50 {ms_text(record['p50_ms'])} p99 {ms_text(record['p99_ms'])} "
        f"max {ms_text(record['max_ms'])} ms "
        f"delivered {record['delivered']}/{record['expected']} "
        f"RSS {record['rss_idle_mb']}→{record['rss_open_mb']}→{record['rss_end_mb']} MB "
        f"cpu {record['cpu_server']:.2f}/{record['cpu_clients']:.2f}/{record['cpu_other']:.2f}"
    )


# --- the report -----------------------------------------------------------------------


def _find(runs: list[dict[str, Any]], **fields: Any) -> dict[str, Any] | None:
    """The first of ``runs`` with these values."""
    return next((run for run in runs if all(run[k] == v for k, v in fields.items())), None)


def _baseline(runs: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any] | None:
    """The 1-subscriber SSE run of ``run``'s setup and stream."""
    return _find(runs, setup=run["setup"], stream=run["stream"], transport="sse", subscribers=1)


def _through_asgi(runs: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any] | None:
    """The run like ``run`` with every event sent through ASGI, if it was measured."""
    if not run["direct_writes"]:
        return None
    same = {key: run[key] for key in ("setup", "stream", "transport", "subscribers", "rate")}
    return _find(runs, direct_writes=False, **same)


def ms_text(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.1f}"  # nan: no samples


def _count(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def goals(runs: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    checks = []
    for run in runs:
        if (
            run["subscribers"] != GOAL_SUBSCRIBERS
            or not run["direct_writes"]
            or run["transport"] == "wsz"
        ):
            continue  # the goals are for the default settings: not ASGI, nor deflate
        limit = GOAL_ONE_PROCESS_MS if run["processes"] == 1 else GOAL_TWO_PROCESSES_MS
        name = (
            f"{SETUPS[run['setup']].label}, {run['stream']} stream, "
            f"{TRANSPORT_LABELS[run['transport']]}, "
            f"{_count(run['subscribers'])} subscribers, {run['rate']:g} msg/s: "
            f"p99 ≤ {limit:.0f} ms"
        )
        checks.append((name, f"{ms_text(run['p99_ms'])} ms", run["p99_ms"] <= limit))
    for stream in STREAMS:
        chosen = [run for run in runs if run["stream"] == stream]
        if not chosen:
            continue
        missing = sum(run["missing"] for run in chosen)
        repeated = sum(run["duplicates"] for run in chosen)
        disordered = sum(run["out_of_order"] for run in chosen)
        checks.append(
            (
                f"{stream} streams: every subscriber gets every message, once, in order",
                f"{_count(sum(run['delivered'] for run in chosen))} of "
                f"{_count(sum(run['expected'] for run in chosen))}; {_count(missing)} missing, "
                f"{_count(repeated)} repeated, {_count(disordered)} out of order",
                missing + repeated + disordered == 0,
            )
        )
    return checks


def markdown(records: list[dict[str, Any]], minutes: float) -> str:
    machine_record = records[0]
    # Runs recorded before live.direct_writes existed sent every event through ASGI.
    runs = [{"direct_writes": False, **record} for record in records if record["kind"] == "run"]
    slow = sorted({run["rate"] for run in runs} - {machine_record["rate"]})
    also = f" (the most SSE subscribers also at {', '.join(f'{r:g}' for r in slow)}/s)"
    lines = [
        f"Measured {machine_record['started'].replace('T', ' ')[:16]} UTC by "
        f"`{machine_record['command']}` in {minutes:.1f} min: messages posted at "
        f"{machine_record['rate']:g}/s{also if slow else ''}, {machine_record['warmup']:g} s "
        f"of warm-up (not measured) then {machine_record['duration']:g} s measured, one run "
        "per row, each on a fresh database and fresh server processes; subscribers over "
        f"{machine_record['client_processes']} client processes.",
        "",
        f"Machine: {machine_record['cpu']}, {machine_record['cores']} cores, "
        f"{machine_record['memory_gib']} GiB, Linux {machine_record['kernel']}, Python "
        f"{machine_record['python']}, SQLite {machine_record['sqlite']}, PostgreSQL "
        f"{machine_record['postgresql']}; source `{machine_record['commit']}`; "
        "load average at start "
        f"{', '.join(map(str, machine_record['load_average']))}. The server(s), the "
        "client processes, the poster and PostgreSQL share these cores.",
        "",
        "#### Goals",
        "",
        "| goal | measured | reached |",
        "|---|---|---|",
    ]
    for name, measured, reached in goals(runs):
        lines.append(f"| {name} | {measured} | {'yes' if reached else '**no**'} |")
    lines += [
        "",
        "#### All runs",
        "",
        "Writes: `direct`, the default, where an event goes straight to each waiting "
        "connection; `ASGI`, with `live.direct_writes = false`, where every event goes "
        "through the connection's task, Quart and Hypercorn's send path (the only path "
        "before 2026-12-02). `WS + deflate (opt-in)`: WebSocket clients that ask for "
        "per-message deflate, as browsers do, with `live.websocket_compression = true` (by "
        "default the server declines it, and such a client is a `WS` one); these rows are "
        "not goals. "
        "Latency: commit to delivery per (message, subscriber), in ms. `× base`: p99 over "
        "the p99 of the 1-subscriber SSE run of the same setup and stream. `× ASGI`: p99 "
        "and server CPU per delivery over those of the same run through ASGI. POST p99: the "
        "poster's answers. Delivered: (message, subscriber) pairs received of those "
        "expected. Held: established connections on the subscribers' server once they "
        "were open. RSS: that server process idle → with the subscribers → at the end, "
        "MB; KB / conn.: the growth from idle to open per subscriber. CPU: cores used "
        "while measured by the subscribers' server (+ the poster's server), the client "
        "processes, and everything else (PostgreSQL, the poster, the rest of the machine). "
        "Server CPU µs / delivery: the subscribers' server's CPU time while measured over "
        "(messages × subscribers); a tenant stream sends two events per message (the "
        "message, then the session's state).",
        "",
        "| setup | stream | transport | writes | subscribers | msg/s | p50 | p90 | p99 | max "
        "| × base | × ASGI (p99, CPU) | POST p99 | delivered | held | RSS MB | KB / conn. "
        "| CPU server / clients / other | server CPU µs / delivery |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|---:|---|---:|",
    ]
    for run in runs:
        base = _baseline(runs, run)
        ratio = f"{run['p99_ms'] / base['p99_ms']:.1f}" if base and base["p99_ms"] else "–"
        asgi = _through_asgi(runs, run)
        versus = "–"
        if asgi and asgi["p99_ms"] and asgi["cpu_us_per_delivery"] and run["cpu_us_per_delivery"]:
            versus = (
                f"{run['p99_ms'] / asgi['p99_ms']:.2f}, "
                f"{run['cpu_us_per_delivery'] / asgi['cpu_us_per_delivery']:.2f}"
            )
        writes = "direct" if run["direct_writes"] else "ASGI"
        cpu_server = f"{run['cpu_server']:.2f}"
        if run["cpu_poster_server"] is not None:
            cpu_server += f" + {run['cpu_poster_server']:.2f}"
        delivered = f"{_count(run['delivered'])}/{_count(run['expected'])}"
        if run["missing"] or run["duplicates"] or run["out_of_order"]:
            delivered = f"**{delivered}**"
        lines.append(
            f"| {run['setup']} | {run['stream']} | {TRANSPORT_LABELS[run['transport']]} "
            f"| {writes} "
            f"| {_count(run['subscribers'])} | {run['rate']:g} | {ms_text(run['p50_ms'])} "
            f"| {ms_text(run['p90_ms'])} | {ms_text(run['p99_ms'])} "
            f"| {ms_text(run['max_ms'])} | {ratio} | {versus} "
            f"| {ms_text(run['post_p99_ms'])} | {delivered} | {run['connections_held']} "
            f"| {run['rss_idle_mb']:.0f} → {run['rss_open_mb']:.0f} → {run['rss_end_mb']:.0f} "
            f"| {run['kb_per_connection'] if run['kb_per_connection'] is not None else '–'} "
            f"| {cpu_server} / {run['cpu_clients']:.2f} / {run['cpu_other']:.2f} "
            f"| {ms_text(run['cpu_us_per_delivery'])} |"
        )
    lines += ["", "Setups:", ""]
    lines += [f"- `{name}`: {setup.label}" for name, setup in SETUPS.items()]
    return "\n".join(lines) + "\n"


def publish(
    text: str,
    results: Path,
    docs: Path,
    *,
    begin: str = BEGIN,
    end: str = END,
    raw_name: str = "fanout.jsonl",
) -> None:
    """Replace the block between ``begin`` and ``end`` in docs/benchmarks.md, and copy
    the raw results to docs/benchmarks/``raw_name``."""
    page = docs / "benchmarks.md"
    content = page.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{page} has no markers for {raw_name}: add\n{begin}\n{end}")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    page.write_text(pattern.sub(lambda _match: f"{begin}\n{text}\n{end}", content))
    (docs / "benchmarks").mkdir(exist_ok=True)
    shutil.copyfile(results, docs / "benchmarks" / raw_name)


if __name__ == "__main__":
    raise SystemExit(main())
