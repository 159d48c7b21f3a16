"""A training run survives being stopped: SIGKILL then ``resume=``, SIGINT and SIGTERM.

Each test runs ``flowerclf train`` as a real process on a tiny generated dataset and stops
it from outside, the way a crash, Ctrl+C or a job scheduler would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowerclf.cli.main import main
from tests.helpers.images import build_folder_dataset

pytestmark = pytest.mark.slow

EPOCHS = 4
START_TIMEOUT_S = 240  # a cold interpreter importing torch + Lightning on a busy machine


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    source = build_folder_dataset(root / "source", per_class=16)
    prepare = ["data", "prepare", "data=folder", f"data.source={source}", f"data.root={root}/data"]
    assert main(["-q", *prepare]) == 0
    return root


def _overrides(workspace: Path, outputs: str, *extra: str) -> list[str]:
    return [
        "data=folder", "data.source=unused", f"data.root={workspace / 'data'}",
        "data.batch_size=8", "data.num_workers=0", "model=simple_cnn",
        "model.preprocess.input_size=32", "model.embedding_dim=16", "trainer=smoke",
        "trainer.limit_train_batches=4", "trainer.early_stopping.patience=1000", "seed=11",
        "logger.log_model=false", f"paths.output_dir={workspace / outputs}",
        f"logger.tracking_uri=sqlite:///{workspace / 'mlflow.db'}", *extra,
    ]  # fmt: skip


def _start(workspace: Path, log_name: str, overrides: list[str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "flowerclf", "-q", "train", *overrides, "--json"]
    stdout = (workspace / f"{log_name}.out").open("wb")
    stderr = (workspace / f"{log_name}.err").open("wb")
    return subprocess.Popen(command, stdout=stdout, stderr=stderr, env=os.environ.copy())


def _run(workspace: Path, log_name: str, overrides: list[str]) -> dict:
    process = _start(workspace, log_name, overrides)
    assert process.wait(timeout=2 * START_TIMEOUT_S) == 0, _tail(workspace, log_name)
    lines = (workspace / f"{log_name}.out").read_text().strip().splitlines()
    return json.loads(lines[-1])


def _tail(workspace: Path, log_name: str) -> str:
    return (workspace / f"{log_name}.err").read_text(errors="replace")[-3000:]


def _wait_for_first_checkpoint(outputs: Path, process: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = list(outputs.glob("runs/*/checkpoints/last.ckpt"))
        if found:
            return found[0]
        assert process.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.005)
    process.kill()
    raise AssertionError("no checkpoint appeared in time")


def _status(workspace: Path, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    return str(client.get_run(run_id).info.status)


def _strip_timing(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.endswith("_time_s")}


def test_sigkill_after_first_epoch_then_resume_gives_the_uninterrupted_metrics_in_the_same_run(
    workspace: Path,
) -> None:
    epochs = f"trainer.max_epochs={EPOCHS}"
    uninterrupted = _run(workspace, "uninterrupted", _overrides(workspace, "straight", epochs))

    killed = _start(workspace, "killed", _overrides(workspace, "killed", epochs))
    last = _wait_for_first_checkpoint(workspace / "killed", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    run_id = last.parent.parent.name
    reached = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert reached < EPOCHS - 1, "the kill came too late to interrupt anything"
    assert _status(workspace, run_id) == "RUNNING"  # nobody closed it: it was killed

    resumed = _run(
        workspace, "resumed", _overrides(workspace, "killed", epochs, f"resume={run_id}")
    )
    assert resumed["run_id"] == run_id
    assert _strip_timing(resumed["metrics"]) == _strip_timing(uninterrupted["metrics"])
    assert _status(workspace, run_id) == "FINISHED"
    # The metrics come from the best epoch, which may precede the kill: the last epoch's
    # weights show that the epochs after it replayed exactly too.
    straight_last = Path(uninterrupted["run_dir"]) / "checkpoints" / "last.ckpt"
    expected = torch.load(straight_last, map_location="cpu", weights_only=True)
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == expected["global_step"] > 0
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigint_and_sigterm_save_a_checkpoint_and_say_how_to_resume(
    workspace: Path, signum: signal.Signals
) -> None:
    outputs = f"stopped-{signum.name}"
    overrides = _overrides(workspace, outputs, "trainer.max_epochs=500")
    process = _start(workspace, outputs, overrides)
    last = _wait_for_first_checkpoint(workspace / outputs, process)
    first_step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    time.sleep(1.0)  # into the next epochs: the interrupt lands mid-training
    process.send_signal(signum)
    code = process.wait(timeout=120)
    message = _tail(workspace, outputs).strip().splitlines()[-1]
    run_id = last.parent.parent.name

    assert code == 128 + signum, message
    assert message.startswith(f"error: training stopped by {signum.name}")
    assert f"checkpoint saved to {last}" in message and f"resume={run_id}" in message
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] >= first_step  # the interrupt's, or a later epoch's end
    assert _status(workspace, run_id) == "KILLED"

    if signum == signal.SIGTERM:  # and the message's advice works
        finish = f"trainer.max_epochs={saved['epoch'] + 2}"
        resumed = _run(workspace, "after-term", [*overrides, finish, f"resume={run_id}"])
        assert resumed["run_id"] == run_id
        assert _status(workspace, run_id) == "FINISHED"
