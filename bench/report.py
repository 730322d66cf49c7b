"""Turn a results.jsonl into a markdown table, a target check and a PNG chart."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.run import SCENARIOS, WRITE_SCENARIOS

BEGIN = "<!-- bench:begin (written by `make bench`; edit around it, not inside) -->"
END = "<!-- bench:end -->"
CHART = "chart.png"


def load(results: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records = [json.loads(line) for line in results.read_text().splitlines() if line]
    machine = next(record for record in records if record["kind"] == "machine")
    summaries = [record for record in records if record["kind"] == "summary"]
    # The ceiling rows first; otherwise in the order measured (sorted() is stable).
    return machine, sorted(summaries, key=lambda record: record["target"] != "ceiling")


def write(results: Path, out: Path, *, command: str, minutes: float) -> None:
    machine, summaries = load(results)
    (out / "results.md").write_text(markdown(machine, summaries, command, minutes))
    chart(summaries, out / CHART)


def publish(out: Path, docs: Path) -> None:
    """Copy the chart and results into docs/ and replace the table in docs/benchmarks.md."""
    target = docs / "benchmarks"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / CHART, target / CHART)
    shutil.copyfile(out / "results.jsonl", target / "results.jsonl")
    page = docs / "benchmarks.md"
    text = page.read_text() if page.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    block = f"{BEGIN}\n{(out / 'results.md').read_text()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    page.write_text(pattern.sub(lambda _match: block, text))


def _find(summaries: list[dict[str, Any]], **key: Any) -> dict[str, Any] | None:
    for record in summaries:
        if all(record.get(name) == value for name, value in key.items()):
            return record
    return None


def targets(summaries: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(target, measured, reached) for every target the matrix has the rows for."""
    checks: list[tuple[str, str, bool]] = []
    service = [record for record in summaries if record["target"] == "service"]
    backends = sorted({record["backend"] for record in service})
    for backend in backends:
        for scenario in ("post_message_minimal", "post_session"):
            c16 = _find(service, backend=backend, workers=1, concurrency=16, scenario=scenario)
            if c16:
                checks.append(
                    (
                        f"{backend}, 1 worker, c16, `{scenario}`: ≥ 0.50 × ceiling",
                        f"{c16['ratio_to_ceiling']:.2f} ×",
                        c16["ratio_to_ceiling"] >= 0.5,
                    )
                )
                checks.append(
                    (
                        f"{backend}, 1 worker, c16, `{scenario}`: p99 ≤ 50 ms",
                        f"{c16['p99_ms']:.1f} ms",
                        c16["p99_ms"] <= 50,
                    )
                )
            c64 = _find(service, backend=backend, workers=1, concurrency=64, scenario=scenario)
            if c64:
                checks.append(
                    (
                        f"{backend}, 1 worker, c64, `{scenario}`: 0 errors",
                        f"{c64['errors']} errors",
                        c64["errors"] == 0,
                    )
                )
                ceiling = _find(summaries, target="ceiling", workers=1, concurrency=64)
                if ceiling:
                    # At 64 connections on one worker, Little's law puts even the
                    # ceiling's mean latency near 64 / its req/s: shown for comparison.
                    checks.append(
                        (
                            f"{backend}, 1 worker, c64, `{scenario}`: p99 ≤ 50 ms "
                            f"(the ceiling's own p99 at c64: {ceiling['p99_ms']:.0f} ms)",
                            f"{c64['p99_ms']:.1f} ms",
                            c64["p99_ms"] <= 50,
                        )
                    )
        for record in service:
            if record["backend"] != backend or not record["scenario"].startswith("page_10k"):
                continue
            short = _find(
                service,
                backend=backend,
                workers=record["workers"],
                concurrency=record["concurrency"],
                scenario="page_20",
            )
            if short:
                ratio = record["p50_ms"] / short["p50_ms"]
                checks.append(
                    (
                        f"{backend}, {record['workers']} worker(s), c{record['concurrency']}: "
                        f"`{record['scenario']}` ≤ 1.2 × `page_20` (p50 latency)",
                        f"{ratio:.2f} ×",
                        ratio <= 1.2,
                    )
                )
    for record in service:
        if record["backend"] != "postgresql" or record["workers"] != 2:
            continue
        if record["scenario"] not in WRITE_SCENARIOS:
            continue
        one = _find(
            service,
            backend="postgresql",
            workers=1,
            concurrency=record["concurrency"],
            scenario=record["scenario"],
        )
        if one:
            ratio = record["rps"] / one["rps"]
            checks.append(
                (
                    f"postgresql, c{record['concurrency']}, `{record['scenario']}`: "
                    "2 workers ≥ 1.5 × 1 worker",
                    f"{ratio:.2f} ×",
                    ratio >= 1.5,
                )
            )
    peak = max((record["rss_mb"] or 0 for record in service), default=0)
    if service:
        checks.append(("peak RSS of any server process < 200 MB", f"{peak:.0f} MB", peak < 200))
    return checks


def markdown(
    machine: dict[str, Any], summaries: list[dict[str, Any]], command: str, minutes: float
) -> str:
    plan = machine["plan"]
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `{command}` in {minutes:.1f} min: "
        f"{plan['repeats']} run(s) of {plan['duration']} s per row after a "
        f"{plan['warmup']} s warm-up, medians shown; wrk with {plan['threads']} threads on "
        "loopback; a fresh database for every backend × workers × concurrency.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, SQLite {machine['sqlite']}, "
        f"PostgreSQL {machine['postgresql']}, {machine['wrk']}; "
        f"load average at start {', '.join(map(str, machine['load_average']))}. "
        "The load generator, the service and PostgreSQL share these cores.",
        "",
        "### Targets",
        "",
        "| target | measured | reached |",
        "|---|---|---|",
    ]
    for name, measured, reached in targets(summaries):
        lines.append(f"| {name} | {measured} | {'yes' if reached else '**no**'} |")
    lines += [
        "",
        "### All rows",
        "",
        "`× ceiling`: requests/s divided by the ceiling's (a one-route Quart app on the "
        "same server settings) at the same workers and concurrency, measured just before "
        "and just after that service configuration (the ceiling rows show the median "
        "over all of them). Errors: socket errors and non-2xx answers, "
        "summed over the runs. RSS: the peak of any one server process during that row's "
        "server lifetime. CPU: cores busy during the run (CPU seconds / wall seconds) in "
        "the server's processes, in wrk, and in everything else (PostgreSQL, and whatever "
        f"else the shared machine ran); the machine has {machine['cores']}.",
        "",
        "| target | backend | workers | conc. | scenario | req/s | × ceiling "
        "| p50 ms | p90 ms | p99 ms | errors | peak RSS MB | CPU server / wrk / other |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for record in summaries:
        lines.append(
            f"| {record['target']} | {record['backend'] or '–'} | {record['workers']} "
            f"| {record['concurrency']} | {record['scenario']} | {record['rps']:.0f} "
            f"| {record['ratio_to_ceiling']:.2f} | {record['p50_ms']:.1f} "
            f"| {record['p90_ms']:.1f} | {record['p99_ms']:.1f} | {record['errors']} "
            f"| {record['rss_mb'] if record['rss_mb'] is not None else '–'} "
            f"| {record['cpu_server']:.2f} / {record['cpu_wrk']:.2f} / "
            f"{record['cpu_other']:.2f} |"
        )
    lines += ["", "Scenarios:", ""]
    lines += [f"- `{name}`: {description}" for name, description in SCENARIOS.items()]
    return "\n".join(lines) + "\n"


def chart(summaries: list[dict[str, Any]], path: Path) -> None:
    service = [record for record in summaries if record["target"] == "service"]
    configs = sorted(
        {(r["backend"], r["workers"], r["concurrency"]) for r in service},
        key=lambda config: (config[0], config[1], config[2]),
    )
    scenarios = [name for name in SCENARIOS if any(r["scenario"] == name for r in service)]
    groups = ["ceiling", *scenarios]
    figure, (throughput, latency) = plt.subplots(2, 1, figsize=(14, 9), sharex=True)
    width = 0.8 / max(len(configs), 1)
    for index, (backend, workers, concurrency) in enumerate(configs):
        rps, p99 = [], []
        for group in groups:
            if group == "ceiling":
                record = _find(
                    summaries, target="ceiling", workers=workers, concurrency=concurrency
                )
            else:
                record = _find(
                    service,
                    backend=backend,
                    workers=workers,
                    concurrency=concurrency,
                    scenario=group,
                )
            rps.append(record["rps"] if record else 0)
            p99.append(record["p99_ms"] if record else 0)
        offsets = [
            position + (index - (len(configs) - 1) / 2) * width for position in range(len(groups))
        ]
        label = f"{backend}, {workers} worker{'s' if workers > 1 else ''}, c{concurrency}"
        throughput.bar(offsets, rps, width, label=label)
        latency.bar(offsets, p99, width, label=label)
    throughput.set_ylabel("requests/s (median)")
    throughput.set_title("Throughput per scenario (the ceiling: same workers and concurrency)")
    throughput.legend(fontsize=8, ncol=2)
    latency.set_ylabel("p99 latency, ms (median)")
    latency.axhline(50, color="grey", linestyle="--", linewidth=1)
    latency.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
