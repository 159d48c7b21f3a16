"""``model.members=N``: N runs of one recipe with seeds seed + 100 k, combined into one run
whose network averages their probabilities (issue 14: oxford102_best)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowerclf.cli.main import main
from flowerclf.config import compose_config
from flowerclf.core.errors import ConfigError
from flowerclf.inference.classifier import Classifier
from flowerclf.runs import load_trained
from flowerclf.training.members import member_accuracies, member_config
from flowerclf.training.train import train
from tests.helpers.images import build_folder_dataset

pytestmark = pytest.mark.slow

LEAN = ("--tensorrt", "off", "--int8", "none", "--openvino", "off", "--no-triton",
        "--no-mlflow", "--no-gallery")  # fmt: skip


def _overrides(root: Path) -> list[str]:
    images = build_folder_dataset(root / "source", per_class=12)
    data = ["data=folder", f"data.source={images}", f"data.root={root / 'data'}"]
    assert main(["-q", "data", "prepare", *data]) == 0
    return [
        *data, "data.batch_size=8", "data.num_workers=0", "model=simple_cnn",
        "model.pretrained=false", "model.preprocess.input_size=32", "model.embedding_dim=16",
        "trainer=smoke", f"paths.output_dir={root / 'outputs'}",
        f"logger.tracking_uri=sqlite:///{root / 'mlflow.db'}",
    ]  # fmt: skip


def _train(overrides: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["-q", "train", *overrides, "--json"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def _test_images(trained_run: str) -> torch.Tensor:
    run = load_trained(trained_run)
    from flowerclf.runs import run_datamodule

    datamodule = run_datamodule(run.settings, run.module.spec)
    return next(iter(datamodule.loader("test")))[0]


def test_member_k_trains_with_its_own_seed_and_run_directory() -> None:
    cfg = compose_config(["data=folder", "data.source=x", "model=simple_cnn", "seed=7",
                          "model.members=3", "paths.run_dir=runs/x"])  # fmt: skip
    member = member_config(cfg, 2)
    assert member.seed == 207 and member.model.members == 1
    assert member.paths.run_dir is None  # the fixed run directory is the ensemble's
    assert member.logger.run_name and member.logger.run_name.endswith("-member2")


def test_the_members_scores_alone_summarise_what_averaging_gained(tmp_path: Path) -> None:
    checkpoints = []
    for k, (val, test) in enumerate([(0.9, 0.8), (0.7, 0.6), (0.8, 0.7)]):
        run_dir = tmp_path / f"member{k}"
        (run_dir / "checkpoints").mkdir(parents=True)
        metrics = {"val/accuracy": val, "test/accuracy": test, "hardware": "CPU"}
        if k == 2:
            del metrics["val/accuracy"]  # a split some member has no figure for is left out
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        checkpoints.append(run_dir / "checkpoints" / "best.ckpt")
    summary = member_accuracies(checkpoints)
    assert summary == pytest.approx(
        {"members/test/accuracy_mean": 0.7, "members/test/accuracy_min": 0.6,
         "members/test/accuracy_max": 0.8}
    )  # fmt: skip
    assert member_accuracies([tmp_path / "missing" / "checkpoints" / "best.ckpt"]) == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.members=3", "member_runs=[a,b]"], "names 2 runs but model.members is 3"),
        (["model.members=2", "resume=abc"], "resume the interrupted member"),
        (["member_runs=[a,b]"], "set model.members too"),
    ],
)
def test_what_an_ensemble_cannot_do_is_refused_before_training(
    overrides: list[str], message: str
) -> None:
    cfg = compose_config(["data=folder", "data.source=x", "model=simple_cnn", *overrides])
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_members_on_one_frozen_trunk_share_it_and_the_package_averages_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = _overrides(tmp_path)
    start = _train(overrides)  # every member's frozen trunk starts from these weights
    cached = ["trainer.mode=cached", "trainer.tail_blocks=1", f"init_from={start['checkpoint']}"]
    # No MLflow model: logging one would end the run, hiding whether the ensemble ends it.
    ensemble = _train([*overrides, *cached, "model.members=2", "seed=5", "logger.log_model=false"])

    run = load_trained(ensemble["run_id"])
    assert run.settings.model.members == 2 and run.settings.model.member_tail_blocks == 1
    members_time = ensemble["metrics"]["members_train_time_s"]
    assert 0 < members_time < ensemble["train_time_s"]  # the total counts the members'
    assert "test/accuracy" in ensemble["metrics"]

    # The members are ordinary runs, seeds 5 and 105, nested under the ensemble's run.
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    members = client.get_run(ensemble["run_id"]).data.tags["flowerclf.members"].split(",")
    member_runs = [load_trained(member) for member in members]
    assert [m.settings.seed for m in member_runs] == [5, 105]
    for member in members:
        assert client.get_run(member).data.tags["mlflow.parentRunId"] == ensemble["run_id"]
    # ...and the ensemble's run, ended like any other, says what they scored alone.
    assert client.get_run(ensemble["run_id"]).info.status == "FINISHED"
    alone = [client.get_run(member).data.metrics["test/accuracy"] for member in members]
    assert ensemble["metrics"]["members/test/accuracy_mean"] == pytest.approx(np.mean(alone))
    assert ensemble["metrics"]["members/test/accuracy_max"] == pytest.approx(max(alone))

    # The ensemble's probabilities are the mean of its members' (one trunk run for both).
    images = _test_images(ensemble["run_id"])
    with torch.inference_mode():
        nets = [m.module.net.eval() for m in member_runs]
        expected = torch.stack([net(images)[0].softmax(1) for net in nets]).mean(0)
        logits, embeddings = run.module.net.eval()(images)
    np.testing.assert_allclose(logits.softmax(1).numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(embeddings.norm(dim=1).numpy(), 1.0, atol=1e-5)

    # Exported as one ONNX graph (the export's parity check passes) that answers the same.
    package = tmp_path / "package"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["-q", "export", ensemble["run_id"], "--out", str(package),
                     "--calibration-images", "24", *LEAN]) == 0  # fmt: skip
    for backend in ("onnx", "torch"):  # the torch backend rebuilds it from the descriptor
        with Classifier.load(package, backend=backend) as classifier:
            assert classifier.info["model"]["members"] == 2
            package_logits, _ = classifier.run_logits(images.numpy())
        np.testing.assert_allclose(
            torch.from_numpy(package_logits).softmax(1).numpy(), expected.numpy(), atol=1e-4
        )

    # Members trained apart combine into the same ensemble.
    combine_option = f"member_runs=[{','.join(members)}]"
    combined = _train([*overrides, *cached, "model.members=2", combine_option])
    assert combined["metrics"]["members_train_time_s"] == pytest.approx(members_time, abs=0.05)
    assert combined["train_time_s"] > members_time  # members trained apart count too
    again = load_trained(combined["run_id"]).module.net.eval()
    with torch.inference_mode():
        np.testing.assert_allclose(again(images)[0].numpy(), logits.numpy(), atol=1e-6)


def test_members_whose_trunks_differ_each_run_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """simple_cnn starts from random weights drawn from each member's seed: no shared trunk."""
    monkeypatch.chdir(tmp_path)
    overrides = _overrides(tmp_path)
    ensemble = _train([*overrides, "trainer.mode=cached", "trainer.tail_blocks=1",
                       "model.members=2"])  # fmt: skip
    run = load_trained(ensemble["run_id"])
    assert run.settings.model.member_tail_blocks is None
    evaluated = io.StringIO()
    with contextlib.redirect_stdout(evaluated):
        assert main(["-q", "evaluate", ensemble["checkpoint"], "split=test", "--json"]) == 0
    report = json.loads(evaluated.getvalue().strip().splitlines()[-1])
    assert report["accuracy"] == pytest.approx(ensemble["metrics"]["test/accuracy"])
