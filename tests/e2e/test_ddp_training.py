"""Multi-process training (Lightning DDP, gloo on CPU) through the real command line.

``flowerclf train ... trainer=ddp trainer.devices=2 trainer.accelerator=cpu`` starts a second
process itself (Lightning re-runs the command with ``LOCAL_RANK=1``). What must hold: it
trains on both, the run is one MLflow run (rank 0's), the checkpoints are written once, the
other process prints nothing, and evaluating the run's checkpoint afterwards gives what rank
0 reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowerclf.cli.main import main
from tests.helpers.images import build_folder_dataset

pytestmark = pytest.mark.slow

TIMEOUT_S = 420  # two cold interpreters importing torch + Lightning on a busy 2-core machine


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    source = build_folder_dataset(root / "source", per_class=16)
    prepare = ["data", "prepare", "data=folder", f"data.source={source}", f"data.root={root}/data"]
    assert main(["-q", *prepare]) == 0
    return root


def _train_ddp(workspace: Path) -> tuple[dict, list[str]]:
    overrides = [
        "data=folder", "data.source=unused", f"data.root={workspace / 'data'}",
        "data.batch_size=8", "data.num_workers=0", "model=simple_cnn",
        "model.preprocess.input_size=32", "model.embedding_dim=16", "seed=5",
        "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=2",
        "trainer.warmup_epochs=0", "trainer.log_every_n_steps=1", "logger.log_model=false",
        f"paths.output_dir={workspace / 'outputs'}",
        f"logger.tracking_uri=sqlite:///{workspace / 'mlflow.db'}",
    ]  # fmt: skip
    command = [sys.executable, "-m", "flowerclf", "-q", "train", *overrides, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines


def test_ddp_on_two_cpu_processes_is_one_run_whose_checkpoint_evaluates_as_reported(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    result, stdout_lines = _train_ddp(workspace)
    assert result["global_rank"] == 0
    assert result["metrics"]["world_size"] == 2  # fit really ran on two processes
    # The second process printed nothing: one result line in all.
    assert sum(line.startswith("{") for line in stdout_lines) == 1

    # One training, one MLflow run: rank 0's, finished, with the epoch metrics synced.
    client = MlflowClient(result["tracking_uri"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert [run.info.run_id for run in runs] == [result["run_id"]]
    assert runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(result["run_id"], "val/acc")) == 2
    assert runs[0].data.params["trainer.strategy"] == "ddp_find_unused_parameters_true"

    # Checkpoints written once, in the run's directory; no directory for another process.
    run_dir = Path(result["run_dir"])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert [p.name for p in (workspace / "outputs" / "runs").iterdir()] == [result["run_id"]]

    # `flowerclf evaluate <run>` of that checkpoint gives what rank 0 reported, per split.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", result["tracking_uri"])
    for split in ("val", "test"):
        capsys.readouterr()
        assert main(["-q", "evaluate", result["run_id"], f"split={split}", "--json"]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["checkpoint"] == result["checkpoint"]
        metrics = result["metrics"]
        assert report["accuracy"] == pytest.approx(metrics[f"{split}/accuracy"])
        assert report["macro_f1"] == pytest.approx(metrics[f"{split}/macro_f1"])
        assert report["cross_entropy_uncalibrated"] == pytest.approx(
            metrics[f"{split}/cross_entropy"], rel=1e-5
        )
