"""A flood from one customer: does it slow the other customers down?

    python -m bench.flood                  # both backends, about 5 minutes (make bench-flood)
    python -m bench.flood --quick          # every phase, briefly, to try it (about a minute)
    python -m bench.flood --backends sqlite --flood-connections 64 --duration 30
    python -m bench.flood --backends sqlite --profile   # py-spy on the server in the floods

For each backend, a fresh migrated database; each phase runs on a fresh `chat-service
serve` process of one worker (so the rate limits' counts start at zero), with the
other benches' settings: authentication off, the JSON access log. The phases, in this
order, differ only in whether there is a flood and whether rate limits are on:

1. ``baseline``: the victims alone, rate limits on (the shipped defaults);
2. ``flood-limited``: the victims and the flood, rate limits on;
3. ``flood-unlimited``: the same with ``rate_limits.enabled = false``: what the
   limits protect against;
4. ``baseline-after``: the victims alone again, to see how far the machine drifted.

The victims are ``--victims`` customers (each a session of its own, posting with its
``customer_token``), who post ``--rate`` messages a second in all, in turn, one at a
time over one keep-alive connection from this process, each well within the shipped
message limits: the latency of every POST is taken here on the monotonic clock, from
sending the request to reading the whole answer. The flooder is another customer,
posting to its own session as fast as the server answers over ``--flood-connections``
connections, from wrk (a separate process, so its CPU is not in the victims' client),
counting its 201 and 429 answers. Each phase has ``--warmup`` seconds (victims and
flood alike) that are not measured, then ``--duration`` seconds measured.

The baseline is both victims-alone phases' samples together, measured in the same
invocation; the flood phases' victim percentiles are given as ratios to it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.fanout import breakdown, machine, ms_text, percentile, profile_server, publish
from bench.profile import summarize as print_hottest
from bench.run import (
    DEFAULT_POSTGRES,
    ROOT,
    Server,
    cpu_seconds,
    fresh_database,
    machine_busy_seconds,
    serve,
    server_processes,
)

BEGIN = "<!-- flood:begin (written by `make bench-flood`; edit around it, not inside) -->"
END = "<!-- flood:end -->"
FLOOD_SCRIPT = Path(__file__).resolve().parent / "flood.lua"
FLOOD_THREADS = 2
BACKENDS = ("sqlite", "postgresql")
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# A victim's send this much later than its schedule counts as late: the previous
# answer took longer than the interval between two posts.
LATE_MS = 10.0


@dataclass(frozen=True)
class Phase:
    name: str
    limits: bool
    flood: bool
    label: str


PHASES = (
    Phase("baseline", limits=True, flood=False, label="victims alone"),
    Phase("flood-limited", limits=True, flood=True, label="flood, rate limits on"),
    Phase("flood-unlimited", limits=False, flood=True, label="flood, rate limits off"),
    Phase("baseline-after", limits=True, flood=False, label="victims alone, again"),
)
BASELINES = ("baseline", "baseline-after")


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    rate: float
    victims: int
    flood_connections: int
    profile: Path | None  # where py-spy's folded stacks of the flood phases go
    phases: tuple[Phase, ...]


@dataclass(frozen=True)
class Customer:
    session_id: str
    token: str

    @property
    def path(self) -> str:
        return f"/sessions/{self.session_id}/messages"


def new_customer(server: Server) -> Customer:
    """A new session, and the customer token that makes the caller its customer."""
    response = httpx.post(server.base_url + "/sessions", json={}, timeout=10)
    if response.status_code == 429:
        raise RuntimeError("POST /sessions answered 429: fewer --victims, or a higher limit")
    response.raise_for_status()
    answer = response.json()
    return Customer(str(answer["id"]), str(answer["customer_token"]))


# --- the victims ------------------------------------------------------------------------


@dataclass
class Victims:
    latencies_ms: list[float]
    # From when the post was due, as if each had its own client: what a customer would
    # see if posts did not wait for the previous answer (no coordinated omission).
    from_due_ms: list[float]
    statuses: collections.Counter[int]
    late: int  # sends LATE_MS or more behind their schedule
    most_behind_ms: float
    first_failures: list[str]
    policy: str | None  # the server's RateLimit-Policy header on a victim's post


def post_as_victims(
    server: Server, victims: list[Customer], rate: float, seconds: float, first: int
) -> Victims:
    """POST a message every 1/rate s for ``seconds``, the victims in turn, one at a time.

    One keep-alive connection (``http.client`` reconnects if the server closes it);
    the latency of a post is from sending its request to having read its whole answer,
    on the monotonic clock. A post that fails at the socket counts as status 0.
    """
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    result = Victims([], [], collections.Counter(), 0, 0.0, [], None)
    start = time.monotonic()
    try:
        for index in range(round(seconds * rate)):
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            victim = victims[index % len(victims)]
            body = json.dumps(
                {"author_type": "customer", "content": f"Message {first + index}: my order?"}
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "Prefer": "return=minimal",
                "Authorization": f"Bearer {victim.token}",
            }
            sent = time.monotonic()
            try:
                connection.request("POST", victim.path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                status = response.status
                if status == 201 and result.policy is None:
                    result.policy = response.getheader("RateLimit-Policy")
                if status != 201 and len(result.first_failures) < 3:
                    result.first_failures.append(f"{status}: {answer[:200]!r}")
            except (OSError, http.client.HTTPException) as error:
                status = 0
                connection.close()
                if len(result.first_failures) < 3:
                    result.first_failures.append(repr(error))
            done = time.monotonic()
            result.latencies_ms.append((done - sent) * 1000)
            result.from_due_ms.append((done - due) * 1000)
            result.statuses[status] += 1
            behind = (sent - due) * 1000
            result.most_behind_ms = max(result.most_behind_ms, behind)
            result.late += behind >= LATE_MS
    finally:
        connection.close()
    return result


# --- the flooder ------------------------------------------------------------------------


def start_flood(
    server: Server, flooder: Customer, connections: int, seconds: int
) -> subprocess.Popen[str]:
    """wrk posting the flooder's messages as fast as the server answers, for ``seconds``."""
    return subprocess.Popen(
        [
            "wrk",
            f"-t{min(FLOOD_THREADS, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(FLOOD_SCRIPT),
            server.base_url,
        ],
        env={**os.environ, "BENCH_FLOOD_PATH": flooder.path, "BENCH_FLOOD_TOKEN": flooder.token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_flood(process: subprocess.Popen[str], seconds: int) -> dict[str, Any]:
    """What the flooder got: its answers by status, per second of its run."""
    stdout, stderr = process.communicate(timeout=seconds + 60)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {stderr.strip()}")
    line = next((line for line in stdout.splitlines() if line.startswith("BENCH_FLOOD ")), None)
    if line is None:
        raise RuntimeError(f"wrk said nothing of its run: {stdout.strip()} {stderr.strip()}")
    raw = json.loads(line.removeprefix("BENCH_FLOOD "))
    elapsed = raw["duration_us"] / 1e6
    statuses = {int(status): count for status, count in raw["statuses"].items()}
    accepted, refused = statuses.get(201, 0), statuses.get(429, 0)
    return {
        "requests": raw["requests"],
        "seconds": round(elapsed, 2),
        "accepted": accepted,
        "refused": refused,
        "accepted_per_s": round(accepted / elapsed, 1),
        "refused_per_s": round(refused / elapsed, 1),
        "answers_per_s": round(sum(statuses.values()) / elapsed, 1),
        "other_statuses": {
            str(status): count for status, count in statuses.items() if status not in (201, 429)
        },
        "socket_errors": sum(raw[key] for key in raw if key.startswith("errors_")),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


# --- one phase --------------------------------------------------------------------------


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_phase(
    backend: str, database_url: str, phase: Phase, options: Options, workdir: Path
) -> dict[str, Any]:
    env = {
        "CHAT_SERVICE_DATABASE_URL": database_url,
        "CHAT_SERVICE_HTTP_WORKERS": "1",
        "CHAT_SERVICE_RATE_LIMITS_ENABLED": "true" if phase.limits else "false",
    }
    log_file = workdir / f"{backend}-{phase.name}.log"
    with serve("chat_service", env, "/health/ready", log_file) as server:
        victims = [new_customer(server) for _ in range(options.victims)]
        flooder = new_customer(server) if phase.flood else None
        warmup_posts = round(options.warmup * options.rate)
        if options.warmup:
            flood = (
                start_flood(server, flooder, options.flood_connections, options.warmup)
                if flooder
                else None
            )
            post_as_victims(server, victims, options.rate, options.warmup, 0)
            if flood is not None:
                finish_flood(flood, options.warmup)
        processes = server_processes(server.process.pid)
        server_before = cpu_seconds(processes)
        children_before = children_cpu_seconds()
        own_before = own_cpu_seconds()
        machine_before = machine_busy_seconds()
        started = time.monotonic()
        folded = recorder = None
        if options.profile is not None and phase.flood:
            folded = options.profile / f"flood-profile-{backend}-{phase.name}.folded"
            recorder = profile_server(server.process.pid, options.duration, folded)
        flood = (
            start_flood(server, flooder, options.flood_connections, options.duration)
            if flooder
            else None
        )
        victims_got = post_as_victims(server, victims, options.rate, options.duration, warmup_posts)
        flooded = finish_flood(flood, options.duration) if flood is not None else None
        elapsed = time.monotonic() - started
        server_used = cpu_seconds(processes) - server_before
        flooder_used = children_cpu_seconds() - children_before
        own_used = own_cpu_seconds() - own_before
        other_used = machine_busy_seconds() - machine_before - server_used - flooder_used - own_used
        rss_peak = server.sampler.peak_mb()
        if recorder is not None:
            recorder.wait()
    requests = len(victims_got.latencies_ms) + (flooded["requests"] if flooded else 0)
    ordered = sorted(victims_got.latencies_ms)
    statuses = victims_got.statuses
    return {
        "kind": "phase",
        "backend": backend,
        "phase": phase.name,
        "rate_limits": phase.limits,
        "flood": phase.flood,
        "victims": options.victims,
        "rate": options.rate,
        "duration": options.duration,
        "posts": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50), 2),
        "p90_ms": round(percentile(ordered, 0.90), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else None,
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "victim_refused": statuses[429],
        "victim_errors": sum(
            count for status, count in statuses.items() if status not in (201, 429)
        ),
        "victim_failures": victims_got.first_failures,
        "p99_from_due_ms": round(percentile(sorted(victims_got.from_due_ms), 0.99), 2),
        "late_sends": victims_got.late,
        "most_behind_ms": round(victims_got.most_behind_ms, 1),
        "policy": victims_got.policy,
        "flooder": flooded,
        "cpu_server": round(server_used / elapsed, 2),
        "cpu_flooder": round(flooder_used / elapsed, 2),
        "cpu_victims": round(own_used / elapsed, 2),
        "cpu_other": round(max(other_used, 0.0) / elapsed, 2),
        # The server's CPU time per request answered while measured (victims' and flood's).
        "cpu_us_per_request": round(server_used * 1e6 / max(requests, 1), 1),
        "rss_peak_mb": rss_peak,
        "profile": str(folded) if folded else None,
        # Every measured post's latency, in the order sent.
        "latencies_ms": [round(value, 2) for value in victims_got.latencies_ms],
    }


# Where the worker's event-loop thread spends a sample during a flood: the first rule
# that matches anywhere in the stack, in this order.
FLOOD_CATEGORIES = (
    ("access log", ("hypercorn/logging.py", "logging/__init__.py", "pythonjsonlogger")),
    ("rate limits (limits, the count and the headers)", ("rate_limits.py", "limits/")),
    ("the customer token's lookup", ("credentials.py",)),
    ("the error answer (problem document)", ("problems.py", "handle_user_exception")),
    (
        "the message post (group commit, database)",
        ("post_message", "create_message", "group_commit", "sqlalchemy/", "aiosqlite/"),
    ),
    ("the rest of Quart's request handling", ("quart/", "quart_schema/", "werkzeug/")),
    ("Hypercorn and h11 (HTTP/1.1)", ("hypercorn/", "h11/")),
)


def summarize(backend: str, phases: list[dict[str, Any]]) -> dict[str, Any]:
    """The baseline (the victims-alone phases together) and each phase's ratios to it."""
    pooled = sorted(
        value for phase in phases if phase["phase"] in BASELINES for value in phase["latencies_ms"]
    )
    base_p50, base_p99 = percentile(pooled, 0.50), percentile(pooled, 0.99)

    def ratio(value: float, base: float) -> float | None:
        return round(value / base, 2) if pooled else None

    return {
        "kind": "summary",
        "backend": backend,
        "baseline_posts": len(pooled),
        "baseline_p50_ms": round(base_p50, 2) if pooled else None,
        "baseline_p99_ms": round(base_p99, 2) if pooled else None,
        "ratios": {
            phase["phase"]: {
                "p50": ratio(phase["p50_ms"], base_p50),
                "p99": ratio(phase["p99_ms"], base_p99),
            }
            for phase in phases
        },
        "victims_refused": sum(phase["victim_refused"] for phase in phases),
        "victims_errors": sum(phase["victim_errors"] for phase in phases),
    }


def line_of(record: dict[str, Any]) -> str:
    text = (
        f"  {record['backend']:10} {record['phase']:15} victims p50 {record['p50_ms']:.1f} "
        f"p99 {record['p99_ms']:.1f} max {record['max_ms']:.1f} ms, "
        f"{record['statuses']}, late {record['late_sends']}"
    )
    flooder = record["flooder"]
    if flooder:
        text += (
            f"; flood {flooder['accepted_per_s']:g} 201/s {flooder['refused_per_s']:g} 429/s"
            f" other {flooder['other_statuses'] or '-'} errors {flooder['socket_errors']}"
        )
    return text + (
        f"; cpu {record['cpu_server']:.2f}/{record['cpu_flooder']:.2f}/"
        f"{record['cpu_victims']:.2f}/{record['cpu_other']:.2f}"
    )


# --- the report -------------------------------------------------------------------------


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _rate(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:,.0f}".replace(",", " ") if value >= 10 else f"{value:.1f}"


def _policy(records: list[dict[str, Any]]) -> str:
    policies = sorted({run["policy"] for run in records if run.get("policy")})
    return " / ".join(f"`{policy}`" for policy in policies) or "unknown"


def markdown(records: list[dict[str, Any]], minutes: float) -> str:
    head = records[0]
    runs = [record for record in records if record["kind"] == "phase"]
    summaries = {record["backend"]: record for record in records if record["kind"] == "summary"}
    per_victim = head["rate"] / head["victims"]
    overrides = head["rate_limit_environment"]
    lines = [
        f"Measured {head['started'].replace('T', ' ')[:16]} UTC by `{head['command']}` in "
        f"{minutes:.1f} min. Each phase on a fresh `chat-service serve` process (one worker, "
        f"authentication off, the JSON access log) over the backend's database: "
        f"{head['warmup']} s of warm-up, then {head['duration']} s measured. Victims: "
        f"{head['victims']} customers posting {head['rate']:g} messages/s in all "
        f"({per_victim:g}/s each), one at a time over one keep-alive connection. Flooder: one "
        f"customer posting over {head['flood_connections']} connections (wrk, "
        f"{FLOOD_THREADS} threads) as fast as it is answered. Rate limits on: the shipped "
        f"defaults, messages {_policy(runs)} per customer (the server's `RateLimit-Policy`)"
        + (f", with {', '.join(overrides)} from the environment" if overrides else "")
        + ".",
        "",
        f"Machine: {head['cpu']}, {head['cores']} cores, {head['memory_gib']} GiB, Linux "
        f"{head['kernel']}, Python {head['python']}, SQLite {head['sqlite']}, PostgreSQL "
        f"{head['postgresql']}, {head['wrk']}; source `{head['commit']}`; load average at "
        f"start {', '.join(map(str, head['load_average']))}. The server, wrk, the victims' "
        "client and PostgreSQL share these cores.",
        "",
        f"Victims' latency: POST sent to answer read, ms; late: posts sent {LATE_MS:g} ms or "
        "more after they were due, the previous answer having taken that much longer than "
        "the interval (so the slow periods are sampled less). `× base`: over the baseline, both "
        "victims-alone phases' posts together. Flood: the flooder's answers per second, "
        "accepted (201) / refused (429). CPU: cores used while measured by the server, the "
        "flooder (wrk), the victims' client and everything else (PostgreSQL, the rest of "
        "the machine). Server CPU µs / request: in a flood, the server's CPU time while "
        "measured over the requests it answered (the victims' and the flood's).",
    ]
    for backend in dict.fromkeys(run["backend"] for run in runs):
        summary = summaries[backend]
        lines += [
            "",
            f"#### {LABELS[backend]}",
            "",
            f"Baseline: {summary['baseline_posts']} posts, "
            f"p50 {ms_text(summary['baseline_p50_ms'])} ms, "
            f"p99 {ms_text(summary['baseline_p99_ms'])} ms.",
            "",
            "| phase | rate limits | victim posts | p50 | p90 | p99 | max | p50 × base "
            "| p99 × base | victims' 429 / errors | flood 201/s / 429/s | flood other "
            "| CPU server / flooder / victims / other | server CPU µs / request |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|",
        ]
        for run in (run for run in runs if run["backend"] == backend):
            ratios = summary["ratios"][run["phase"]]
            flooder = run["flooder"]
            bad = run["victim_refused"] or run["victim_errors"]
            refused = f"{run['victim_refused']} / {run['victim_errors']}"
            other = flood = per_request = "–"
            if flooder:
                flood = f"{_rate(flooder['accepted_per_s'])} / {_rate(flooder['refused_per_s'])}"
                per_request = f"{run['cpu_us_per_request']:.0f}"
                other_statuses = ", ".join(
                    f"{count} × {status}" for status, count in flooder["other_statuses"].items()
                )
                errors = (
                    f"{flooder['socket_errors']} socket errors" if flooder["socket_errors"] else ""
                )
                other = ", ".join(part for part in (other_statuses, errors) if part) or "–"
            lines.append(
                f"| {run['phase']} | {'on' if run['rate_limits'] else 'off'} "
                f"| {run['posts']} ({run['late_sends']} late) "
                f"| {ms_text(run['p50_ms'])} | {ms_text(run['p90_ms'])} | {ms_text(run['p99_ms'])} "
                f"| {ms_text(run['max_ms'])} | {_times(ratios['p50'])} | {_times(ratios['p99'])} "
                f"| {f'**{refused}**' if bad else refused} "
                f"| {flood} | {other} "
                f"| {run['cpu_server']:.2f} / {run['cpu_flooder']:.2f} / "
                f"{run['cpu_victims']:.2f} / {run['cpu_other']:.2f} | {per_request} |"
            )
        lines += ["", findings(summary, [run for run in runs if run["backend"] == backend])]
    return "\n".join(lines) + "\n"


def findings(summary: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """What the rows of one backend say, in words."""
    by_phase = {run["phase"]: run for run in runs}
    sentences = []
    limited, unlimited = by_phase.get("flood-limited"), by_phase.get("flood-unlimited")
    for run, how in ((limited, "With rate limits on"), (unlimited, "With rate limits off")):
        if run is None or run["flooder"] is None:
            continue
        ratios = summary["ratios"][run["phase"]]
        flooder = run["flooder"]
        sentences.append(
            f"{how}, the flooder had {_rate(flooder['accepted_per_s'])} messages/s accepted "
            f"and {_rate(flooder['refused_per_s'])}/s refused, the worker used "
            f"{run['cpu_server']:.2f} cores, and the victims' p50 was {ms_text(run['p50_ms'])} ms "
            f"({_times(ratios['p50'])} × the baseline), their p99 {ms_text(run['p99_ms'])} ms "
            f"({_times(ratios['p99'])} ×)."
        )
    refused, errors = summary["victims_refused"], summary["victims_errors"]
    if refused or errors:
        sentences.append(f"**The victims got {refused} 429 and {errors} errors.**")
    else:
        sentences.append("The victims got no 429 and no error in any phase.")
    return " ".join(sentences)


def wrk_version() -> str:
    with contextlib.suppress(OSError):
        output = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
        return output.split(" Copyright")[0].strip() or "wrk"
    return "wrk (unknown version)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="sqlite,postgresql")
    parser.add_argument("--quick", action="store_true", help="5 s phases after 1 s of warm-up")
    parser.add_argument("--duration", type=int, help="measured seconds per phase (25)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per phase (4)")
    parser.add_argument("--rate", type=float, default=5.0, help="victims' messages/s in all")
    parser.add_argument("--victims", type=int, default=5, help="victim customers, in turn")
    parser.add_argument("--flood-connections", type=int, default=32)
    parser.add_argument(
        "--phases",
        default=",".join(phase.name for phase in PHASES),
        help="comma-separated, of those, run in their order (the baseline needs one of "
        f"{' or '.join(BASELINES)})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the server in the flood phases (which it slows: not for the figures)",
    )
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
    backends = [name for name in args.backends.split(",") if name]
    if set(backends) - set(BACKENDS):
        parser.error("backends are sqlite and postgresql")
    if shutil.which("wrk") is None:
        parser.exit(2, "wrk is not installed: `make bench-deps` installs it\n")
    chosen = tuple(phase for phase in PHASES if phase.name in args.phases.split(","))
    if set(args.phases.split(",")) - {phase.name for phase in PHASES}:
        parser.error(f"phases are {', '.join(phase.name for phase in PHASES)}")
    if args.victims < 1 or args.rate <= 0 or args.flood_connections < 1:
        parser.error("--victims, --rate and --flood-connections must be positive")
    options = Options(
        duration=args.duration or (5 if args.quick else 25),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 4),
        rate=args.rate,
        victims=args.victims,
        flood_connections=args.flood_connections,
        profile=args.out if args.profile else None,
        phases=chosen,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.flood " + " ".join(
        shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])
    )
    # Whatever the environment says of the rate limits reaches the server too: said so.
    overrides = sorted(
        name
        for name in os.environ
        if name.startswith("CHAT_SERVICE_RATE_LIMITS_")
        and name != "CHAT_SERVICE_RATE_LIMITS_ENABLED"
    )
    results = args.out / "flood.jsonl"
    records: list[dict[str, Any]] = [
        {
            **machine(args.postgres_url),
            "wrk": wrk_version(),
            "command": command.strip(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "backends": backends,
            "duration": options.duration,
            "warmup": options.warmup,
            "rate": options.rate,
            "victims": options.victims,
            "flood_connections": options.flood_connections,
            "phases": [phase.name for phase in chosen],
            "rate_limit_environment": overrides,
        }
    ]
    results.write_text(json.dumps(records[0]) + "\n")
    workdir = Path(tempfile.mkdtemp(prefix="chat-flood-"))
    started = time.monotonic()
    try:
        for backend in backends:
            print(LABELS[backend], flush=True)
            phases = []
            with fresh_database(backend, args.postgres_url, workdir) as url:
                for phase in options.phases:
                    record = run_phase(backend, url, phase, options, workdir)
                    if record["profile"]:
                        print_hottest(Path(record["profile"]), 25)
                        record["profile_shares"] = breakdown(
                            Path(record["profile"]), FLOOD_CATEGORIES, "the event loop and the rest"
                        )
                    phases.append(record)
                    with results.open("a") as file:
                        file.write(json.dumps(record) + "\n")
                    print(line_of(record), flush=True)
            summary = summarize(backend, phases)
            records += [*phases, summary]
            with results.open("a") as file:
                file.write(json.dumps(summary) + "\n")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    text = markdown(records, minutes)
    (args.out / "flood.md").write_text(text)
    if args.publish:
        publish(text, results, ROOT / "docs", begin=BEGIN, end=END, raw_name="flood.jsonl")
    print(text)
    print(f"done in {minutes:.1f} min: {args.out / 'flood.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
