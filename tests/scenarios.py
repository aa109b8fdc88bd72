"""Scenarios that load neonize run in their own interpreter: a Go crash (or a neonize call
that never returns) then fails one test, not the whole session. A test module names its
scenarios in a dict and ends with `run_main(SCENARIOS)`; a test calls `play`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCENARIO_TIMEOUT = 240.0

Report = dict[str, Any]
Scenario = Callable[[Path], Awaitable[Report]]


def play(module: str, scenario: str, workdir: Path) -> Report:
    """Runs `module`'s scenario in its own interpreter, in `workdir` (any file neonize drops
    in its working directory shows up there); returns the report it wrote."""
    done = subprocess.run(
        [sys.executable, "-m", module, scenario, str(workdir)],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=SCENARIO_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{scenario} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report: Report = json.loads((workdir / "report.json").read_text())
    return report


def run_main(scenarios: dict[str, Scenario]) -> None:
    """The scenario process: runs the scenario named on the command line."""
    scenario, workdir = sys.argv[1], Path(sys.argv[2])
    report = asyncio.run(scenarios[scenario](workdir))
    (workdir / "report.json").write_text(json.dumps(report))
