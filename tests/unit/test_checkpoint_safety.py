"""Checkpoints are unpickled with ``weights_only=True`` wherever flowerclf reads one.

Issue 12: export, evaluate, ``resume=`` and ``init_from=`` loaded checkpoints with
``weights_only=False``, so a checkpoint fetched from an MLflow artifact store could run code.
Each test hands a loader a checkpoint whose unpickling would create a marker file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from flowerclf.cli.main import main
from flowerclf.core.errors import UnsafeCheckpointError
from flowerclf.runs import load_trained
from flowerclf.tracking import load_checkpoint
from flowerclf.training.train import initialise_from


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture
def evil_checkpoint(tmp_path: Path, marker: Path) -> Path:
    """Shaped like a flowerclf checkpoint, plus one object that runs code when loaded."""
    path = tmp_path / "evil.ckpt"
    config = {"run": {"id": "abc"}, "model": {"arch": "simple_cnn"}}
    torch.save(
        {
            "epoch": 0,
            "state_dict": {"net.weight": torch.zeros(1)},
            "hyper_parameters": {"config": config, "classes": ["a", "b"], "spec": {}},
            "callbacks": {"payload": _RunsCodeWhenUnpickled(marker)},
        },
        path,
    )
    return path


def test_load_checkpoint_refuses_code_and_runs_none(evil_checkpoint: Path, marker: Path) -> None:
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt holds more than tensors.*exec"):
        load_checkpoint(evil_checkpoint)
    assert not marker.exists()


def test_load_checkpoint_reads_plain_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"classes": ["a"]}}, path)
    assert load_checkpoint(path)["hyper_parameters"] == {"classes": ["a"]}


LOADERS: dict[str, Callable[[Path], object]] = {
    "export_and_evaluate": lambda path: load_trained(str(path)),
    # The module is never reached: the checkpoint is refused first.
    "init_from": lambda path: initialise_from(None, str(path), "simple_cnn"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("loader", LOADERS, ids=list(LOADERS))
def test_checkpoint_loaders_refuse_code(loader: str, evil_checkpoint: Path, marker: Path) -> None:
    with pytest.raises(UnsafeCheckpointError):
        LOADERS[loader](evil_checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["resume", "evaluate"])
def test_cli_refuses_a_code_carrying_checkpoint_in_one_line(
    command: str,
    evil_checkpoint: Path,
    marker: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if command == "resume":
        argv = ["train", f"resume={evil_checkpoint}", f"paths.output_dir={tmp_path / 'out'}",
                f"data.root={tmp_path / 'data'}", "logger=none"]  # fmt: skip
    else:
        argv = ["evaluate", str(evil_checkpoint)]
    assert main(["-q", *argv]) == 1
    assert not marker.exists()
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"error: {evil_checkpoint} holds more than tensors")
    )
