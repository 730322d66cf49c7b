"""Profile one scenario: py-spy samples the server while wrk loads it.

    python -m bench.profile --backend sqlite --scenario post_message_minimal
    python -m bench.profile --scenario ceiling

Writes the folded stacks to bench/results/ (for flamegraph.pl or speedscope) and
prints the functions where most samples were taken, inclusive and self.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from bench.run import (
    DEFAULT_POSTGRES,
    ROOT,
    SCENARIOS,
    Server,
    fresh_database,
    seed,
    serve,
    wrk,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--scenario", choices=("ceiling", *SCENARIOS), default="post_message_minimal"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CHAT_SERVICE_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chat-profile-"))
    if args.scenario == "ceiling":
        folded = args.out / "profile-ceiling.folded"
        with serve("bench.ceiling", {}, "/", workdir / "ceiling.log") as server:
            rps = sample(server, "ceiling", (["/"], []), args, folded)
    else:
        folded = args.out / f"profile-{args.backend}-{args.scenario}.folded"
        with fresh_database(args.backend, args.postgres_url, workdir) as url:
            secret = uuid.uuid4().hex
            env = {
                "CHAT_SERVICE_DATABASE_URL": url,
                "CHAT_SERVICE_HTTP_WORKERS": "1",
                "CHAT_SERVICE_SECURITY_CURSOR_SECRET": secret,
            }
            with serve("chat_service", env, "/health/ready", workdir / "service.log") as server:
                targets = seed(server.base_url, url, secret)
                rps = sample(server, args.scenario, targets.paths(args.scenario), args, folded)
    print(f"{args.scenario}: {rps} req/s while sampled")
    summarize(folded, args.top)
    breakdown(folded)
    print(f"folded stacks: {folded}")
    return 0


def sample(
    server: Server,
    scenario: str,
    paths: tuple[list[str], list[str]],
    args: argparse.Namespace,
    folded: Path,
) -> object:
    """Warm up, then sample the server with py-spy for one whole wrk run."""

    def load(duration: int) -> dict[str, object]:
        return wrk(
            server.base_url,
            scenario,
            paths,
            concurrency=args.concurrency,
            duration=duration,
            threads=2,
        )

    load(2)
    recorder = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(server.process.pid),
            "--duration",
            str(args.duration),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(folded),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict[str, object] = {}
    loader = threading.Thread(target=lambda: result.update(load(args.duration)))
    loader.start()
    recorder.wait()
    loader.join()
    return result.get("rps")


# Where a sample of the event-loop thread is spent: the first rule that matches,
# from the innermost frame outwards (pydantic called by a route counts as pydantic).
CATEGORIES = (
    ("access log", ("hypercorn/logging.py", "logging/__init__.py", "pythonjsonlogger")),
    (
        "database (services, SQLAlchemy, drivers)",
        ("sqlalchemy/", "asyncpg/", "aiosqlite/", "chat_service/model/", "chat_service/services/"),
    ),
    ("pydantic validation and JSON", ("pydantic", "json/")),
    ("the service's routes", ("chat_service/routes/", "chat_service/transport/")),
    ("Hypercorn and h11 (HTTP/1.1)", ("hypercorn/", "h11/")),
    ("Quart and Werkzeug", ("quart/", "quart_schema/", "werkzeug/", "flask/")),
)


def breakdown(folded: Path) -> None:
    """Share of the event-loop thread's samples per part of the stack."""
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if frame]
        if not any("_run_module_as_main" in frame for frame in frames):
            continue  # another thread
        total += int(count_text)
        shares[_category(frames)] += int(count_text)
    print(f"-- event-loop thread, {total} samples --")
    for name, count in shares.most_common():
        print(f"{100 * count / total:5.1f}%  {name}")


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return "event loop and asyncio"


def summarize(folded: Path, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    print(f"{total} samples\n-- inclusive --")
    for frame, count in inclusive.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")
    print("-- self --")
    for frame, count in own.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    raise SystemExit(main())
