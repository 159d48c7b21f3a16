"""SIGTERM and SIGINT always end a fit the same way, wherever in the loop they land.

Lightning's own SIGTERM handler (installed after ``on_fit_start``) ends a run with a bare
``SystemExit`` (exit status 0, no message) at the end of an epoch; a signal that arrives
during validation used to take that way out. The scenarios send the signal from inside the
loop, at a fixed point, so the outcome does not depend on timing.

They run in a child process (``tests/helpers/interrupt_scenarios.py``), all of them in one
so that torch and Lightning are imported once: a signal that reached no handler there
killed the pytest-xdist worker in CI when they ran in it ("node down"), and the run then
hung. A child that dies fails the scenarios it did not finish, naming the signal.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowerclf.training.interrupt import LAST_CHECKPOINT, interrupted_error
from tests.helpers import interrupt_scenarios
from tests.helpers.interrupt_scenarios import HANDLERS_GIVEN_BACK, RESUME_HINT, fit_scenario

SIGNALS = [signal.SIGTERM, signal.SIGINT]
HOOKS = ["on_validation_batch_end", "on_train_batch_start", "on_train_epoch_end"]
SCENARIOS = [fit_scenario(hook, signum) for hook in HOOKS for signum in SIGNALS]
SCENARIOS.append(HANDLERS_GIVEN_BACK)


@dataclass(frozen=True)
class _ScenarioRun:
    """What the child process recorded, and how it ended."""

    outcomes: dict[str, dict[str, Any]]
    returncode: int
    stderr: str

    def how_it_ended(self) -> str:
        if self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit status {self.returncode}"

    def outcome(self, name: str) -> dict[str, Any]:
        if name not in self.outcomes:
            pytest.fail(
                f"the scenario process ({self.how_it_ended()}) did not finish {name!r}; "
                f"stderr ends:\n{self.stderr[-3000:]}"
            )
        return self.outcomes[name]


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> _ScenarioRun:
    out_dir = tmp_path_factory.mktemp("interrupt_scenarios")
    done = subprocess.run(
        [sys.executable, interrupt_scenarios.__file__, str(out_dir), *SCENARIOS],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    results = out_dir / interrupt_scenarios.RESULTS_FILE
    lines = results.read_text(encoding="utf-8").splitlines() if results.is_file() else []
    outcomes = {record["scenario"]: record for record in map(json.loads, lines)}
    return _ScenarioRun(outcomes, done.returncode, done.stderr)


def test_the_scenario_process_ends_normally(scenario_run: _ScenarioRun) -> None:
    # A stray signal at its default action would kill it, as it would kill `flowerclf train`.
    assert scenario_run.returncode == 0, (scenario_run.how_it_ended(), scenario_run.stderr)


@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
@pytest.mark.parametrize("hook", HOOKS)
def test_a_signal_anywhere_in_an_epoch_saves_and_raises_the_resumable_error(
    scenario_run: _ScenarioRun, hook: str, signum: signal.Signals
) -> None:
    outcome = scenario_run.outcome(fit_scenario(hook, signum))
    assert outcome["error"] == "TrainingInterruptedError", outcome
    assert outcome["signum"] == signum
    assert f"stopped by {signum.name} in epoch" in outcome["message"]
    assert f"resume={RESUME_HINT}" in outcome["message"]
    assert outcome["last_checkpoint"]


def test_handlers_are_given_back_after_an_interrupted_fit(scenario_run: _ScenarioRun) -> None:
    outcome = scenario_run.outcome(HANDLERS_GIVEN_BACK)
    assert outcome["error"] == "TrainingInterruptedError", outcome
    assert outcome["handlers_are_the_originals"] == {"SIGINT": True, "SIGTERM": True}
    assert outcome["sigint_after_fit"] == "KeyboardInterrupt"


def test_lightnings_own_sigterm_exit_becomes_the_same_error(tmp_path: Path) -> None:
    assert interrupted_error(tmp_path, "run-1").signum == signal.SIGTERM
    assert "before its first checkpoint" in str(interrupted_error(tmp_path, "run-1"))
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"")
    message = str(interrupted_error(tmp_path, "run-1"))
    assert message.startswith("training stopped by SIGTERM; checkpoint saved to")
    assert message.endswith("resume=run-1")
