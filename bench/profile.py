"""Profile one scenario: py-spy samples the server while wrk loads it.

    python -m bench.profile --backend sqlite --scenario post_message_minimal

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

from bench.run import DEFAULT_POSTGRES, ROOT, SCENARIOS, fresh_database, seed, serve, wrk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), default="post_message_minimal")
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
    stem = args.out / f"profile-{args.backend}-{args.scenario}"
    workdir = Path(tempfile.mkdtemp(prefix="chat-profile-"))
    with fresh_database(args.backend, args.postgres_url, workdir) as url:
        secret = uuid.uuid4().hex
        env = {
            "CHAT_SERVICE_DATABASE_URL": url,
            "CHAT_SERVICE_HTTP_WORKERS": "1",
            "CHAT_SERVICE_SECURITY_CURSOR_SECRET": secret,
        }
        with serve("chat_service", env, "/health/ready", workdir / "service.log") as server:
            targets = seed(server.base_url, url, secret)
            paths = targets.paths(args.scenario)
            # Warm up, then sample for the whole measured run.
            wrk(
                server.base_url,
                args.scenario,
                paths,
                concurrency=args.concurrency,
                duration=2,
                threads=2,
            )
            folded = stem.with_suffix(".folded")
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
            load = threading.Thread(
                target=lambda: result.update(
                    wrk(
                        server.base_url,
                        args.scenario,
                        paths,
                        concurrency=args.concurrency,
                        duration=args.duration,
                        threads=2,
                    )
                )
            )
            load.start()
            recorder.wait()
            load.join()
    print(f"{args.scenario} on {args.backend}: {result.get('rps')} req/s while sampled")
    summarize(folded, args.top)
    print(f"folded stacks: {folded}")
    return 0


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
