"""Run the benchmark matrix with wrk and write the results.

Every invocation measures the ceiling (a trivial Quart app served by the same code
and settings) and the service in the same run, so each figure comes with its ratio
to a baseline taken minutes apart on the same machine. Absolute numbers from
different invocations are not comparable on a shared machine; ratios are.

    python -m bench            # the full matrix (make bench)
    python -m bench --quick    # a reduced set in about a minute (make bench-quick)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import insert, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from chat_service.model import DEFAULT_TENANT_ID, AuthorType, ChatSession, Message, SessionTag
from chat_service.model.base import new_id
from chat_service.services.cursors import CursorCodec
from chat_service.services.messages import MESSAGES_CURSOR

ROOT = Path(__file__).resolve().parent.parent
LOAD_SCRIPT = Path(__file__).resolve().parent / "load.lua"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

SCENARIOS: dict[str, str] = {
    "post_session": "POST /sessions",
    "post_message": "POST /sessions/{id}/messages (full session answer)",
    "post_message_minimal": "POST /sessions/{id}/messages, Prefer: return=minimal",
    "get_session": "GET /sessions/{id} (20 messages)",
    "page_20": "GET /sessions/{id}/messages?limit=50 (20-message session)",
    "page_10k": "GET /sessions/{id}/messages?limit=50 (10 000-message session)",
    "page_10k_tail": "GET /sessions/{id}/messages?limit=50&after=… (its last 20 messages)",
    "inbox_100k": "GET /sessions?limit=50 (the inbox of a tenant with 100 000 sessions)",
    "inbox_100k_status": "GET /sessions?status=pending&limit=50 (a fifth of them pending)",
    "inbox_100k_tag": "GET /sessions?tag=vip&limit=50 (1 % of them tagged)",
    "inbox_100k_q": "GET /sessions?q=…&limit=50 (an order number in one session of 100 000)",
    "mixed": "70 % reads, 30 % writes",
}
WRITE_SCENARIOS = ("post_session", "post_message", "post_message_minimal")
LONG_HISTORY = 10_000
SHORT_HISTORY = 20
INBOX_SESSIONS = 100_000
INBOX_STATUSES = ("open", "pending", "assigned", "resolved", "closed")
# Message posts are spread over this many sessions per scenario.
WRITE_SESSIONS = 8


@dataclass(frozen=True)
class Plan:
    backends: tuple[str, ...]
    workers: tuple[int, ...]
    concurrency: tuple[int, ...]
    scenarios: tuple[str, ...]
    repeats: int
    duration: int
    warmup: int
    threads: int


FULL = Plan(
    backends=("sqlite", "postgresql"),
    workers=(1, 2),
    concurrency=(16, 64),
    scenarios=tuple(SCENARIOS),
    repeats=3,
    duration=4,
    warmup=2,
    threads=2,
)
QUICK = Plan(
    backends=("sqlite", "postgresql"),
    workers=(1,),
    concurrency=(16,),
    scenarios=(
        "post_session",
        "post_message_minimal",
        "page_20",
        "page_10k",
        "page_10k_tail",
        "inbox_100k",
        "mixed",
    ),
    repeats=1,
    duration=3,
    warmup=1,
    threads=2,
)


@dataclass
class Targets:
    """What the load script aims at, filled in by seeding a fresh database."""

    minimal_writes: list[str] = field(default_factory=list)
    full_writes: list[str] = field(default_factory=list)
    session_20: str = ""
    page_20: str = ""
    page_10k: str = ""
    page_10k_tail: str = ""

    def paths(self, scenario: str) -> tuple[list[str], list[str]]:
        """(paths, read paths) for the load script."""
        reads = [self.session_20, self.page_20, self.page_10k]
        return {
            "post_session": (["/sessions"], []),
            "post_message": (self.full_writes, []),
            "post_message_minimal": (self.minimal_writes, []),
            "get_session": ([self.session_20], []),
            "page_20": ([self.page_20], []),
            "page_10k": ([self.page_10k], []),
            "page_10k_tail": ([self.page_10k_tail], []),
            "inbox_100k": (["/sessions?limit=50"], []),
            "inbox_100k_status": (["/sessions?status=pending&limit=50"], []),
            "inbox_100k_tag": (["/sessions?tag=vip&limit=50"], []),
            "inbox_100k_q": ([f"/sessions?q={order_number(INBOX_SESSIONS - 1)}&limit=50"], []),
            "mixed": (self.minimal_writes, reads),
        }[scenario]


# --- servers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RssSampler(threading.Thread):
    """Samples the resident memory of a process and all its children."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak: dict[int, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            with contextlib.suppress(psutil.Error):
                for process in [self.root, *self.root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        rss = process.memory_info().rss
                        self.peak[process.pid] = max(self.peak.get(process.pid, 0), rss)

    def peak_mb(self) -> float:
        """The largest RSS any one process of the server reached, in MB."""
        return round(max(self.peak.values(), default=0) / 2**20, 1)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    sampler: RssSampler


@contextlib.contextmanager
def serve(module: str, env: dict[str, str], ready_path: str, log_file: Path) -> Iterator[Server]:
    port = free_port()
    environment = {
        **os.environ,
        # The load comes from one address at thousands of requests a second: rate
        # limits would answer most of it with 429. (A scenario that measures them
        # turns them on in ``env``: bench/flood.py.)
        "CHAT_SERVICE_RATE_LIMITS_ENABLED": "false",
        **env,
        "CHAT_SERVICE_HTTP_BIND": f"127.0.0.1:{port}",
        # The production log shape: one JSON access line per request, for both.
        "CHAT_SERVICE_LOG_FORMAT": "json",
        "CHAT_SERVICE_LOG_ACCESS_LOG": "true",
        "CHAT_SERVICE_LOG_LEVEL": "INFO",
    }
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *(["serve"] if module == "chat_service" else [])],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base_url + ready_path)
        sampler = RssSampler(process.pid)
        sampler.start()
        yield Server(process=process, base_url=base_url, sampler=sampler)
        sampler.stopped.set()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after 60 s: {url}")


# --- databases ----------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(backend: str, postgres_url: str, workdir: Path) -> Iterator[str]:
    """A new, migrated, empty database; dropped afterwards."""
    if backend == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        migrate(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"chat_bench_{uuid.uuid4().hex[:12]}"
    admin = make_url(postgres_url)
    asyncio.run(_admin_sql(admin, f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        asyncio.run(_admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin_sql(admin: Any, statement: str) -> None:
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "chat_service", "migrate"],
        cwd=ROOT,
        env={**os.environ, "CHAT_SERVICE_DATABASE_URL": url, "CHAT_SERVICE_LOG_LEVEL": "WARNING"},
        check=True,
    )


def seed(base_url: str, database_url: str, cursor_secret: str) -> Targets:
    """Sessions for every scenario; the long history goes straight into the database."""
    targets = Targets()
    with httpx.Client(base_url=base_url, timeout=10) as client:

        def new_session() -> str:
            response = client.post("/sessions", json={})
            response.raise_for_status()
            return str(response.json()["id"])

        for _ in range(WRITE_SESSIONS):
            targets.minimal_writes.append(f"/sessions/{new_session()}/messages")
            targets.full_writes.append(f"/sessions/{new_session()}/messages")
        short = new_session()
        for index in range(SHORT_HISTORY - 1):  # the greeting is the first message
            client.post(
                f"/sessions/{short}/messages",
                json={"author_type": "customer", "content": f"message {index}"},
                headers={"Prefer": "return=minimal"},
            ).raise_for_status()
        long = new_session()
    asyncio.run(_seed_inbox(database_url, INBOX_SESSIONS))
    # Last: it ends with a checkpoint, so measuring starts from a steady state.
    asyncio.run(_seed_history(database_url, uuid.UUID(long), LONG_HISTORY))
    targets.session_20 = f"/sessions/{short}"
    targets.page_20 = f"/sessions/{short}/messages?limit=50"
    targets.page_10k = f"/sessions/{long}/messages?limit=50"
    # The same 20 messages as the short session's page, but at the end of 10 000: the
    # cursor a client paging through would hold at seq 9 980.
    tail = CursorCodec(cursor_secret).encode(
        MESSAGES_CURSOR, uuid.UUID(long), LONG_HISTORY - SHORT_HISTORY
    )
    targets.page_10k_tail = f"/sessions/{long}/messages?limit=50&after={tail}"
    return targets


def order_number(index: int) -> str:
    """The order a seeded inbox session's customer asks about: ten hex digits."""
    return hashlib.sha256(str(index).encode()).hexdigest()[:10]


async def _seed_inbox(url: str, total: int) -> None:
    """``total`` sessions of the default tenant, each with a greeting and a customer
    message, over the last 30 days: statuses in turn, 1 % tagged `vip`."""
    engine = create_async_engine(url)
    now = datetime.now(UTC) - timedelta(days=1)
    try:
        async with engine.begin() as connection:
            for start in range(0, total, 5_000):
                sessions, messages, tags = [], [], []
                for index in range(start, min(start + 5_000, total)):
                    session_id = new_id()
                    at = now - timedelta(seconds=index * 26)
                    sessions.append(
                        {
                            "id": session_id,
                            "created_at": at,
                            "updated_at": at,
                            "last_seq": 2,
                            "tenant_id": DEFAULT_TENANT_ID,
                            "status": INBOX_STATUSES[index % len(INBOX_STATUSES)],
                            "priority": "normal",
                            "last_activity_at": at,
                        }
                    )
                    for seq, author in ((1, AuthorType.SERVICE_AGENT), (2, AuthorType.CUSTOMER)):
                        messages.append(
                            {
                                "id": new_id(),
                                "session_id": session_id,
                                "seq": seq,
                                "author_type": author,
                                "content": (
                                    "Hello, how may I help you?"
                                    if seq == 1
                                    else f"My order {order_number(index)} has not arrived."
                                ),
                                "created_at": at,
                            }
                        )
                    if index % 100 == 0:
                        tags.append({"session_id": session_id, "tag": "vip"})
                await connection.execute(insert(ChatSession), sessions)
                await connection.execute(insert(Message), messages)
                await connection.execute(insert(SessionTag), tags)
    finally:
        await engine.dispose()


async def _seed_history(url: str, session_id: uuid.UUID, total: int) -> None:
    """Messages 2..total of a session (1 is its greeting), inserted in bulk."""
    engine = create_async_engine(url)
    start = datetime.now(UTC) - timedelta(days=1)
    rows = [
        {
            "id": new_id(),
            "session_id": session_id,
            "seq": seq,
            "author_type": AuthorType.CUSTOMER if seq % 2 else AuthorType.SERVICE_AGENT,
            "content": f"Earlier message number {seq} of a long conversation.",
            "created_at": start + timedelta(seconds=seq),
        }
        for seq in range(2, total + 1)
    ]
    try:
        async with engine.begin() as connection:
            for batch in range(0, len(rows), 2_000):
                await connection.execute(insert(Message), rows[batch : batch + 2_000])
            await connection.execute(
                update(ChatSession).where(ChatSession.id == session_id).values(last_seq=total)
            )
        # Start measuring from a steady state: the seeding's WAL written back now, not
        # by a checkpoint in the middle of the first measured run.
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                # Statistics as autovacuum would have them after a bulk load.
                await connection.exec_driver_sql("ANALYZE")
                await connection.exec_driver_sql("CHECKPOINT")
    finally:
        await engine.dispose()


# --- load ---------------------------------------------------------------------------


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def server_processes(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def wrk(
    base_url: str,
    scenario: str,
    paths: tuple[list[str], list[str]],
    *,
    concurrency: int,
    duration: int,
    threads: int,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """One wrk run; with ``server_pid``, also the CPU (in cores) each party used."""
    command = [
        "wrk",
        f"-t{min(threads, concurrency)}",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(LOAD_SCRIPT),
        base_url,
    ]
    env = {
        **os.environ,
        "BENCH_SCENARIO": scenario,
        "BENCH_PATHS": " ".join(paths[0]),
        "BENCH_READ_PATHS": " ".join(paths[1]),
    }
    # Who used the machine's cores during the run: the server (all its processes),
    # wrk (the only child process that ends during the run), and everything else,
    # which is PostgreSQL's processes when the machine is otherwise quiet (counted
    # from the machine's totals: PostgreSQL processes come and go with connections).
    server = server_processes(server_pid) if server_pid else []
    server_before = cpu_seconds(server)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = machine_busy_seconds()
    started = time.monotonic()
    output = subprocess.run(
        command, env=env, capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    elapsed = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_used = cpu_seconds(server) - server_before
    wrk_used = (
        children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    )
    other_used = machine_busy_seconds() - machine_before - server_used - wrk_used
    cpu = {
        "cpu_server": round(server_used / elapsed, 2),
        "cpu_wrk": round(wrk_used / elapsed, 2),
        "cpu_other": round(max(other_used, 0.0) / elapsed, 2),
    }
    line = next(line for line in output.splitlines() if line.startswith("BENCH_RESULT "))
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    errors = sum(value for key, value in raw.items() if key.startswith("errors_"))
    return {
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "errors": errors,
        "errors_detail": {k: v for k, v in raw.items() if k.startswith("errors_") and v},
        **cpu,
    }


# --- the matrix ---------------------------------------------------------------------


class Recorder:
    """Appends every run and every summary to a JSON-lines file as it goes."""

    def __init__(self, path: Path, invocation: str) -> None:
        self.path = path
        self.invocation = invocation

    def write(self, record: dict[str, Any]) -> None:
        record = {"invocation": self.invocation, **record}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


def measure(
    recorder: Recorder,
    plan: Plan,
    server: Server,
    key: dict[str, Any],
    scenario: str,
    paths: tuple[list[str], list[str]],
    concurrency: int,
) -> list[dict[str, Any]]:
    def load(duration: int) -> dict[str, Any]:
        return wrk(
            server.base_url,
            scenario,
            paths,
            concurrency=concurrency,
            duration=duration,
            threads=plan.threads,
            server_pid=server.process.pid,
        )

    if plan.warmup:
        load(plan.warmup)
    runs = []
    for repeat in range(plan.repeats):
        result = load(plan.duration)
        record = {"kind": "run", **key, "scenario": scenario, "repeat": repeat, **result}
        recorder.write(record)
        runs.append(record)
        print(
            f"  {key['target']:8} {key.get('backend') or '-':10} w{key['workers']} "
            f"c{concurrency:<3} {scenario:22} {result['rps']:8.0f} req/s "
            f"p99 {result['p99_ms']:6.1f} ms errors {result['errors']} "
            f"cpu {result['cpu_server']:.2f}/{result['cpu_wrk']:.2f}/"
            f"{result['cpu_other']:.2f}",
            flush=True,
        )
    return runs


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(run["rps"] for run in runs), 1),
        "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 2),
        "p90_ms": round(statistics.median(run["p90_ms"] for run in runs), 2),
        "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 2),
        "errors": sum(run["errors"] for run in runs),
        "runs": len(runs),
        "cpu_server": round(statistics.median(run["cpu_server"] for run in runs), 2),
        "cpu_wrk": round(statistics.median(run["cpu_wrk"] for run in runs), 2),
        "cpu_other": round(statistics.median(run["cpu_other"] for run in runs), 2),
    }


def run_ceiling(
    recorder: Recorder, plan: Plan, workdir: Path, workers: int, concurrency: int, phase: str
) -> list[dict[str, Any]]:
    env = {"CHAT_SERVICE_HTTP_WORKERS": str(workers)}
    with serve("bench.ceiling", env, "/", workdir / "ceiling.log") as server:
        key = {
            "target": "ceiling",
            "backend": None,
            "workers": workers,
            "concurrency": concurrency,
            "phase": phase,
        }
        return measure(recorder, plan, server, key, "ceiling", (["/"], []), concurrency)


def run_matrix(plan: Plan, postgres_url: str, out: Path) -> Path:
    """Every service configuration between two measurements of the ceiling.

    A service row's ratio is to the ceiling measured just before and just after it,
    so that a shared machine's drift over the run does not skew one side.
    """
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = out / "results.jsonl"
    results.unlink(missing_ok=True)
    recorder = Recorder(results, stamp)
    recorder.write({"kind": "machine", **machine(postgres_url), "plan": asdict(plan)})
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    all_ceilings: dict[tuple[int, int], list[dict[str, Any]]] = {}
    try:
        for backend in plan.backends:
            for workers in plan.workers:
                for concurrency in plan.concurrency:
                    print(f"{backend}, {workers} worker(s), c{concurrency}", flush=True)
                    before = run_ceiling(recorder, plan, workdir, workers, concurrency, "before")
                    services = run_service(
                        recorder, plan, workdir, postgres_url, backend, workers, concurrency
                    )
                    after = run_ceiling(recorder, plan, workdir, workers, concurrency, "after")
                    ceiling = median_of(before + after)
                    all_ceilings.setdefault((workers, concurrency), []).extend(before + after)
                    for key, runs, rss_mb in services:
                        summary = median_of(runs)
                        recorder.write(
                            {
                                "kind": "summary",
                                **key,
                                **summary,
                                "ceiling_rps": ceiling["rps"],
                                "ratio_to_ceiling": round(summary["rps"] / ceiling["rps"], 3),
                                "rss_mb": rss_mb,
                            }
                        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for (workers, concurrency), runs in sorted(all_ceilings.items()):
        summary = median_of(runs)
        recorder.write(
            {
                "kind": "summary",
                "target": "ceiling",
                "backend": None,
                "workers": workers,
                "concurrency": concurrency,
                "scenario": "ceiling",
                **summary,
                "ceiling_rps": summary["rps"],
                "ratio_to_ceiling": 1.0,
                "rss_mb": None,
            }
        )
    return results


def run_service(
    recorder: Recorder,
    plan: Plan,
    workdir: Path,
    postgres_url: str,
    backend: str,
    workers: int,
    concurrency: int,
) -> list[tuple[dict[str, Any], list[dict[str, Any]], float]]:
    measured = []
    with fresh_database(backend, postgres_url, workdir) as url:
        secret = uuid.uuid4().hex
        env = {
            "CHAT_SERVICE_DATABASE_URL": url,
            "CHAT_SERVICE_HTTP_WORKERS": str(workers),
            "CHAT_SERVICE_SECURITY_CURSOR_SECRET": secret,
        }
        with serve("chat_service", env, "/health/ready", workdir / "service.log") as server:
            targets = seed(server.base_url, url, secret)
            for scenario in plan.scenarios:
                key = {
                    "target": "service",
                    "backend": backend,
                    "workers": workers,
                    "concurrency": concurrency,
                    "scenario": scenario,
                }
                runs = measure(
                    recorder,
                    plan,
                    server,
                    {k: v for k, v in key.items() if k != "scenario"},
                    scenario,
                    targets.paths(scenario),
                    concurrency,
                )
                measured.append((key, runs))
            rss_mb = server.sampler.peak_mb()
    return [(key, runs, rss_mb) for key, runs in measured]


def machine(postgres_url: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": asyncio.run(_postgres_version(postgres_url)),
        "wrk": wrk_version.splitlines()[0] if wrk_version else "unknown",
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


async def _postgres_version(url: str) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return str(await connection.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the reduced set (about a minute)")
    parser.add_argument("--repeats", type=int, help="measured runs per scenario")
    parser.add_argument("--duration", type=int, help="seconds per measured run")
    parser.add_argument("--backends", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--workers", help="comma-separated worker counts")
    parser.add_argument("--concurrency", help="comma-separated connection counts")
    parser.add_argument("--scenarios", help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CHAT_SERVICE_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="a PostgreSQL server where fresh databases can be created",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="results directory"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write the table and chart into docs/benchmarks.md and docs/benchmarks/",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.exit(2, "wrk is not installed: `make bench` installs it (apt-get install wrk)\n")

    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.repeats:
        changes["repeats"] = args.repeats
    if args.duration:
        changes["duration"] = args.duration
    if args.backends:
        changes["backends"] = tuple(args.backends.split(","))
    if args.workers:
        changes["workers"] = tuple(int(value) for value in args.workers.split(","))
    if args.concurrency:
        changes["concurrency"] = tuple(int(value) for value in args.concurrency.split(","))
    if args.scenarios:
        unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        changes["scenarios"] = tuple(args.scenarios.split(","))
    plan = Plan(**{**asdict(plan), **changes})

    from bench import report

    command = "python -m bench " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    started = time.monotonic()
    results = run_matrix(plan, args.postgres_url, args.out)
    minutes = (time.monotonic() - started) / 60
    report.write(results, args.out, command=command.strip(), minutes=minutes)
    if args.publish:
        report.publish(args.out, ROOT / "docs")
    print(f"done in {minutes:.1f} min: {args.out / 'results.md'}")
    return 0
