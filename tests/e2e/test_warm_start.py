"""``warm_start=<experiment>``: the named experiment trains the same model first (the CPU
fast path), then this run fine-tunes from its weights, in one command (issue 14)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from flowerclf.cli.main import main
from flowerclf.config import compose_config
from flowerclf.core.errors import ConfigError
from flowerclf.training.train import train, warm_start_config
from tests.helpers.images import build_folder_dataset

pytestmark = pytest.mark.slow


def _overrides(root: Path) -> list[str]:
    images = build_folder_dataset(root / "source", per_class=12)
    data = ["data=folder", f"data.source={images}", f"data.root={root / 'data'}"]
    assert main(["-q", "data", "prepare", *data]) == 0
    return [
        *data, "data.batch_size=8", "data.num_workers=0", "model=simple_cnn",
        "model.preprocess.input_size=32", "model.embedding_dim=16", "trainer=smoke",
        f"paths.output_dir={root / 'outputs'}", f"paths.run_dir={root / 'run'}",
        f"logger.tracking_uri=sqlite:///{root / 'mlflow.db'}",
    ]  # fmt: skip


def test_warm_start_config_takes_how_from_the_experiment_and_what_from_the_run() -> None:
    cfg = compose_config(["data=folder", "data.source=x", "model=simple_cnn", "seed=7",
                          "paths.run_dir=runs/x", "warm_start=tf_flowers_fast"])  # fmt: skip
    first = warm_start_config(cfg)
    assert first.trainer.mode == "cached" and first.warm_start is None
    assert first.model == cfg.model and first.data == cfg.data and first.seed == 7
    assert first.paths.run_dir is None  # the fixed run directory is the second run's


def test_one_command_trains_the_warm_start_then_fine_tunes_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = _overrides(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-q", "train", *overrides, "warm_start=tf_flowers_fast", "--json"])
    assert code == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    warm = result["metrics"]["warm_start_time_s"]
    assert 0 < warm < result["train_time_s"]  # the total counts both runs
    saved = torch.load(result["checkpoint"], map_location="cpu", weights_only=True)
    config = saved["hyper_parameters"]["config"]
    first_checkpoint = Path(config["init_from"])
    assert first_checkpoint.is_file() and first_checkpoint.parent.parent != tmp_path / "run"
    assert config["warm_start"] == "tf_flowers_fast" and config["trainer"]["mode"] == "finetune"


def test_warm_start_refuses_several_processes(tmp_path: Path) -> None:
    cfg = compose_config(["data=folder", "data.source=x", f"data.root={tmp_path}",
                          "warm_start=tf_flowers_fast", "trainer.devices=2",
                          "trainer.strategy=ddp"])  # fmt: skip
    with pytest.raises(ConfigError, match="one process"):
        train(cfg)
