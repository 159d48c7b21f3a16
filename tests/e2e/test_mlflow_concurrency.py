"""Runs that start together on one SQLite MLflow store all finish and are all recorded.

Issue 12: MLflow creates a new SQLite store's tables and the experiment without locking,
so two training runs started together on one store raced and one died.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowerclf.cli.main import main
from tests.helpers.images import build_folder_dataset

pytestmark = pytest.mark.slow

PROCESSES = 3


def _open_log_and_close(tracking_uri: str, barrier: object, index: int) -> str:
    """Child process: open a run the way ``flowerclf train`` does, log, end it."""
    from flowerclf.config import compose_config
    from flowerclf.training.run import make_logger

    cfg = compose_config([
        f"logger.tracking_uri={tracking_uri}", f"logger.run_name=run-{index}",
        "logger.experiment_name=concurrent",
    ])  # fmt: skip
    barrier.wait()  # type: ignore[attr-defined]  # all open the store at the same moment
    logger, _ = make_logger(cfg, None)
    assert logger is not None
    for step in range(20):
        logger.log_metrics({"val/acc": step / 20}, step=step)
    logger.finalize("success")
    return str(logger.run_id)


def test_runs_opened_together_on_a_new_sqlite_store_all_succeed(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    context = mp.get_context("spawn")
    barrier = context.Manager().Barrier(PROCESSES)
    with context.Pool(PROCESSES) as pool:
        pending = [
            pool.apply_async(_open_log_and_close, (uri, barrier, i)) for i in range(PROCESSES)
        ]
        run_ids = [result.get(timeout=300) for result in pending]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("concurrent")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    for run_id in run_ids:
        assert len(client.get_metric_history(run_id, "val/acc")) == 20
        assert client.get_run(run_id).info.status == "FINISHED"


def test_two_training_runs_at_once_on_one_store_both_finish_and_are_recorded(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    source = build_folder_dataset(tmp_path / "source", per_class=16)
    data = ["data=folder", f"data.source={source}", f"data.root={tmp_path / 'data'}"]
    assert main(["-q", "data", "prepare", *data]) == 0
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    processes = []
    for seed in (1, 2):
        command = [
            sys.executable, "-m", "flowerclf", "-q", "train", *data, "data.batch_size=8",
            "data.num_workers=0", "model=simple_cnn", "model.preprocess.input_size=32",
            "model.embedding_dim=16", "trainer=smoke", f"seed={seed}",
            f"paths.output_dir={tmp_path / 'outputs'}", f"logger.tracking_uri={uri}", "--json",
        ]  # fmt: skip
        log = (tmp_path / f"train-{seed}.err").open("wb")
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=os.environ.copy())
        )
    results = []
    for seed, process in zip((1, 2), processes, strict=True):
        out, _ = process.communicate(timeout=600)
        err = (tmp_path / f"train-{seed}.err").read_text(errors="replace")[-2000:]
        assert process.returncode == 0, err
        results.append(json.loads(out.decode().strip().splitlines()[-1]))

    client = MlflowClient(uri)
    assert results[0]["run_id"] != results[1]["run_id"]
    for result in results:
        run = client.get_run(result["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test/accuracy"] == pytest.approx(
            result["metrics"]["test/accuracy"]
        )
