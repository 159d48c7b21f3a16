"""``make lint``'s dependency audit: pip-audit on this environment and on the serving pins.

    python scripts/audit_dependencies.py [--require]

pip-audit looks every installed (or pinned) version up in a vulnerability service. Where
that service cannot be reached (a package-index mirror that serves installs but not the
advisory queries, or no network), pip-audit reports each package as "could not be audited"
and still exits 0: a pass that checked nothing. So a canary goes first: a release with
published advisories (``CANARY``). Only when the service reports them does the real audit
run, with ``--strict`` so that a package it cannot look up fails the audit too. Without
the service this prints one warning saying the audit did not run and exits 0, or 1 with
``--require`` (for a CI that has the network). The dependency floors in pyproject.toml are
the guard that works offline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVE_CONSTRAINTS = REPO / "docker" / "constraints-serve.txt"
# Pillow 10.0.0 has published advisories (fixed in 10.0.1, 10.2.0, 10.3.0): a service that
# answers reports them.
CANARY = "pillow==10.0.0"
PIP_AUDIT = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off"]


def _audit_requirements(requirements: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIP_AUDIT, "--no-deps", "--disable-pip", "--requirement", str(requirements), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def service_reachable() -> tuple[bool, str]:
    """Whether the vulnerability service answers, judged by the canary; and why not."""
    with tempfile.TemporaryDirectory() as tmp:
        canary = Path(tmp) / "canary.txt"
        canary.write_text(CANARY + "\n")
        result = _audit_requirements(canary, "--format", "json")
    try:
        dependencies = json.loads(result.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError, TypeError):
        lines = result.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"pip-audit exited with {result.returncode}"
    if any(dep.get("vulns") for dep in dependencies):
        return True, ""
    reasons = [dep.get("skip_reason") for dep in dependencies if dep.get("skip_reason")]
    return False, reasons[0] if reasons else f"no advisories reported for {CANARY}"


def run_audits() -> int:
    """The strict audits; returns the worst exit status, their reports on stdout/stderr."""
    status = 0
    commands = {
        "this environment": [*PIP_AUDIT, "--strict", "--skip-editable"],
        f"{SERVE_CONSTRAINTS.relative_to(REPO)}": [
            *PIP_AUDIT, "--strict", "--no-deps", "--disable-pip",
            "--requirement", str(SERVE_CONSTRAINTS),
        ],
    }  # fmt: skip
    for label, command in commands.items():
        sys.stdout.write(f"pip-audit: {label}\n")
        sys.stdout.flush()
        status = max(status, subprocess.run(command, check=False).returncode)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--require", action="store_true", help="fail when the vulnerability service is unreachable"
    )
    args = parser.parse_args(argv)
    reachable, reason = service_reachable()
    if reachable:
        return run_audits()
    sys.stderr.write(
        f"warning: pip-audit did not run: its vulnerability service is not reachable from here "
        f"(canary {CANARY}: {reason})\n"
    )
    return 1 if args.require else 0


if __name__ == "__main__":
    raise SystemExit(main())
