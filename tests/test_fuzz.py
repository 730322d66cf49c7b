"""Schemathesis against the real server: every operation of its /openapi.json, every check.

The service runs as in production (``chat-service serve``, authentication required) on
the backend's database, bootstrapped with ``create-tenant`` and ``create-admin``. The
``st`` command fuzzes it with the admin's API key, which reaches every operation;
schemathesis also sends each request without it, and with a bad one, to check the 401s.
Its configuration is ``tests/schemathesis.toml`` (a fixed seed, bounded examples) and its
hooks ``tests/fuzz_hooks.py``; docs/testing.md lists what either leaves out, and why.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import free_port, run_cli, service_env, serving
from tests.support import ROOT

pytestmark = pytest.mark.slow

ST = str(Path(sys.executable).with_name("st"))
CONFIG = ROOT / "tests" / "schemathesis.toml"
HOOKS = ROOT / "tests" / "fuzz_hooks.py"
CURSOR_SECRET = "fuzz-cursor-secret-0123456789abcdef0123"
# Some 75 seconds per database on two cores: ample for a slower machine, within pytest's
# timeout.
RUN_SECONDS = 240
# Every check schemathesis has (max_response_time needs a limit, and there is none).
CHECKS = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
}


@dataclass
class Reports:
    """What one ``st run`` did, from its reports."""

    summary: dict[str, Any]  # the JSON report
    checks: set[str]  # the checks that looked at an answer
    statuses: dict[str, set[int]]  # by operation ("GET /sessions"), probes included

    @classmethod
    def read(cls, directory: Path) -> Reports:
        [summary], [events] = directory.glob("*.json"), directory.glob("*.ndjson")
        checks, statuses = set(), collections.defaultdict(set)
        for line in events.read_text(encoding="utf-8").splitlines():
            scenario = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
            for results in scenario.get("checks", {}).values():
                checks.update(check["name"] for check in results)
            for exchange in scenario.get("interactions", {}).values():
                method = exchange["request"]["method"]
                # Probes with methods the path does not have (405) are left out.
                if exchange["response"] and scenario["label"].startswith(f"{method} "):
                    statuses[scenario["label"]].add(exchange["response"]["status_code"])
        return cls(json.loads(summary.read_text(encoding="utf-8")), checks, statuses)


def bootstrap(env: dict[str, str]) -> str:
    """A tenant of its own with an admin, as an operator makes them; the admin's API key."""
    tenant = f"fuzz-{uuid.uuid4().hex[:8]}"
    created = run_cli("create-tenant", tenant, env=env)
    assert created.returncode == 0, created.stderr
    admin = run_cli("create-admin", tenant, "--name", "Fuzz", env=env)
    assert admin.returncode == 0, admin.stderr
    return str(json.loads(admin.stdout)["api_key"])


def fuzz(base_url: str, api_key: str, reports: Path) -> subprocess.CompletedProcess[str]:
    """``st run`` against ``base_url`` as the holder of ``api_key``, reporting into ``reports``."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}) as client:
        [key] = client.get("/api-keys").json()["items"]
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("FUZZ_")},
        "FUZZ_BEARER": api_key,
        "FUZZ_KEY_ID": key["id"],
        "SCHEMATHESIS_HOOKS": str(HOOKS),
    }
    command = [ST, "--config-file", str(CONFIG), "run", f"{base_url}/openapi.json", "--no-color"]
    command += ["--report", "json,ndjson", "--report-dir", str(reports)]
    return subprocess.run(
        command,
        cwd=reports.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )


def test_schemathesis_finds_nothing(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = service_env(
        DATABASE_URL=database_url,
        HTTP_BIND=f"127.0.0.1:{port}",
        AUTH_REQUIRED="true",
        SECURITY_CURSOR_SECRET=CURSOR_SECRET,
        LOG_ACCESS_LOG="false",
    )
    api_key = bootstrap(env)
    with serving(env, tmp_path / "server.log", port=port) as server:
        spec = httpx.get(f"{server.base_url}/openapi.json").json()
        result = fuzz(server.base_url, api_key, tmp_path / "reports")
        logs = server.logs()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in logs, logs
    reports = Reports.read(tmp_path / "reports")
    phases = reports.summary["phases"]
    assert [phases[name]["status"] for name in ("coverage", "fuzzing", "stateful")] == [
        "success"
    ] * 3
    assert CHECKS - reports.checks == set()
    operations = {
        f"{method.upper()} {path}": operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert reports.summary["operations"]["tested"] == len(operations)
    # Not only refusals: every operation did its work at least once, and each one that
    # needs a credential refused a request without a good one.
    done = {
        name for name, statuses in reports.statuses.items() if any(s // 100 == 2 for s in statuses)
    }
    assert set(operations) - done == set()
    refused = {name for name, statuses in reports.statuses.items() if 401 in statuses}
    assert {name for name, op in operations.items() if "security" in op} - refused == set()
