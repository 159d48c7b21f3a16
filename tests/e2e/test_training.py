"""Training runs on a tiny generated dataset: tracking, losses, resume, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowerclf.cli.main import main
from tests.helpers.images import build_folder_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("training")
    source = build_folder_dataset(root / "source", per_class=16)
    code = main(
        [
            "-q",
            "data",
            "prepare",
            "data=folder",
            f"data.source={source}",
            f"data.root={root / 'data'}",
        ]
    )
    assert code == 0
    return root


def _overrides(workspace: Path, *extra: str) -> list[str]:
    return [
        "data=folder", "data.source=unused", f"data.root={workspace / 'data'}",
        "data.batch_size=8", "data.num_workers=0", "model=simple_cnn",
        "model.preprocess.input_size=32", "model.embedding_dim=16", "trainer=smoke",
        f"paths.output_dir={workspace / 'outputs'}",
        f"logger.tracking_uri=sqlite:///{workspace / 'mlflow.db'}", *extra,
    ]  # fmt: skip


def _train(capsys: pytest.CaptureFixture[str], workspace: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["-q", "train", *_overrides(workspace, *extra), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_tracks_params_metrics_artifacts_and_model(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    result = _train(capsys, workspace, "logger.log_model=true")
    for key in ("run_id", "tracking_uri", "checkpoint", "metrics"):
        assert key in result
    assert Path(result["checkpoint"]).is_file()
    assert {"val/accuracy", "test/accuracy", "test/macro_f1", "test/cross_entropy", "test/ece",
            "test/knn_accuracy"} <= set(result["metrics"])  # fmt: skip

    client = MlflowClient(result["tracking_uri"])
    run = client.get_run(result["run_id"])
    assert run.data.params["model.arch"] == "simple_cnn"
    assert run.data.params["loss.embedding"] == "none"
    assert len(run.data.tags["flowerclf.manifest_sha256"]) == 64
    assert "mlflow.source.git.commit" in run.data.tags
    assert {"val/acc", "train/loss", "test/accuracy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"eval", "embeddings.npz", "config.yaml", "checkpoints"} <= artifacts
    plots = {a.path for a in client.list_artifacts(result["run_id"], "eval/test")}
    for name in (
        "confusion_matrix.png",
        "reliability.png",
        "curves.png",
        "misclassified.png",
        "report.md",
    ):
        assert f"eval/test/{name}" in plots

    mlflow.set_tracking_uri(result["tracking_uri"])
    model = mlflow.pytorch.load_model(f"runs:/{result['run_id']}/model")
    probabilities = model(torch.randn(2, 3, 32, 32))
    assert probabilities.shape == (2, 3)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))

    embeddings = np.load(Path(result["run_dir"]) / "embeddings.npz")
    assert embeddings["embeddings"].shape == (48, 16)
    assert set(embeddings["splits"]) == {"train", "val", "test"}


def test_evaluate_contract(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _train(capsys, workspace, "logger=none")
    assert main(["-q", "evaluate", result["checkpoint"], "split=test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "cross_entropy",
        "ece",
        "num_samples",
        "per_class",
    ):
        assert key in report
    assert set(report["per_class"]) == {"a", "b", "c"}
    assert set(report["per_class"]["a"]) == {"precision", "recall", "f1", "support"}
    assert report["accuracy"] == pytest.approx(result["metrics"]["test/accuracy"])
    for path in report["plots"].values():
        assert Path(path).is_file() and path.endswith(".png")
    assert main(["-q", "evaluate", result["checkpoint"], "splt=val"]) == 1
    assert "Did you mean 'split'" in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["ce_cosine", "ce_supcon", "ce_siglip"])
def test_every_loss_trains(workspace: Path, capsys: pytest.CaptureFixture[str], loss: str) -> None:
    result = _train(capsys, workspace, f"loss={loss}", "logger=none")
    assert np.isfinite(result["metrics"]["test/cross_entropy"])


def test_same_seed_same_metrics(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _train(capsys, workspace, "logger=none", "seed=3")
    second = _train(capsys, workspace, "logger=none", "seed=3")
    strip = lambda m: {k: v for k, v in m.items() if k != "train_time_s"}  # noqa: E731
    assert strip(first["metrics"]) == strip(second["metrics"])


def test_resume_continues_the_same_run(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    first = _train(capsys, workspace, "trainer.max_epochs=1", "logger.log_model=false")
    last_path = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    epochs_before = torch.load(last_path, weights_only=True)["epoch"]
    resumed = _train(
        capsys, workspace, f"resume={first['run_id']}", "trainer.max_epochs=2",
        "logger.log_model=false",
    )  # fmt: skip
    assert resumed["run_id"] == first["run_id"]
    assert torch.load(last_path, weights_only=True)["epoch"] > epochs_before
    history = MlflowClient(first["tracking_uri"]).get_metric_history(first["run_id"], "val/acc")
    assert len(history) == 2


def test_cached_fast_path(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _train(
        capsys, workspace, "logger=none", "trainer.mode=cached", "trainer.tail_blocks=1",
        "trainer.cache_views=2", "trainer.feature_runtime=onnx", "trainer.max_epochs=2",
        "trainer.limit_train_batches=null",
    )  # fmt: skip
    assert 0.0 <= result["metrics"]["test/accuracy"] <= 1.0
    # The cached evaluation and a real evaluation on images agree.
    assert main(["-q", "evaluate", result["checkpoint"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["accuracy"] == pytest.approx(result["metrics"]["test/accuracy"])
    assert report["cross_entropy"] == pytest.approx(
        result["metrics"]["test/cross_entropy"], abs=1e-3
    )


def test_cached_path_same_metrics_whether_cache_is_built_or_loaded(
    workspace: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = lambda seed=11: _train(  # noqa: E731
        capsys, workspace, "logger=none", "trainer.mode=cached", "trainer.tail_blocks=1",
        "trainer.cache_views=3", "trainer.max_epochs=2", f"seed={seed}", "model.drop_rate=0.5",
        f"paths.cache_dir={tmp_path}",
    )  # fmt: skip
    built, loaded = run(), run()
    assert built["metrics"]["feature_cache_s"] > loaded["metrics"]["feature_cache_s"]
    strip = lambda m: {k: v for k, v in m.items() if not k.endswith("_s")}  # noqa: E731
    assert strip(built["metrics"]) == strip(loaded["metrics"])
    # One file per part: clean train/val/test passes and two augmented views. Another seed
    # reuses the clean passes and computes only its own two augmented views.
    assert len(list(tmp_path.glob("*.pt"))) == 5
    run(seed=12)
    assert len(list(tmp_path.glob("*.pt"))) == 7


def test_majority_baseline(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _train(capsys, workspace, "model=majority")
    assert 0.2 < result["metrics"]["test/accuracy"] < 0.5  # three balanced classes
    assert result["metrics"]["test/cross_entropy"] == pytest.approx(np.log(3), abs=0.05)
    # The baseline ends its run through the same code as every model: the same files.
    run_dir = Path(result["run_dir"])
    for name in ("metrics.json", "history.csv", "config.yaml", "eval/test/report.md"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "metrics.json").read_text())["test/accuracy"] == pytest.approx(
        result["metrics"]["test/accuracy"]
    )


def test_partial_fine_tuning_keeps_the_trunk_frozen(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowerclf.training.module import FlowerClassifier
    from flowerclf.training.seeding import seed_everything

    result = _train(capsys, workspace, "logger=none", "trainer.tail_blocks=1", "seed=5")
    trained = FlowerClassifier.load_from_checkpoint(
        result["checkpoint"], pretrained=False, weights_only=True
    )
    # Rebuild the initial weights: same seed, nothing drawn before construction in train().
    seed_everything(5)
    initial = FlowerClassifier(trained.config, trained.classes, trained.spec.to_dict())
    first_trunk = next(iter(trained.net.trunk.parameters()))
    torch.testing.assert_close(first_trunk, next(iter(initial.net.trunk.parameters())))
    last_tail = next(iter(trained.net.tail.parameters()))
    assert not torch.equal(last_tail, next(iter(initial.net.tail.parameters())))


def test_init_from_starts_a_new_run_from_earlier_weights(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowerclf.training.module import FlowerClassifier

    first = _train(capsys, workspace, "logger=none", "seed=5")
    # A new run (other seed, frozen trunk) whose trunk must be the first run's trained trunk.
    second = _train(
        capsys, workspace, "logger=none", "seed=6", "trainer.tail_blocks=1",
        f"init_from={first['checkpoint']}",
    )  # fmt: skip
    assert second["checkpoint"] != first["checkpoint"]
    load = lambda path: FlowerClassifier.load_from_checkpoint(  # noqa: E731
        path, pretrained=False, weights_only=True
    )
    earlier, later = load(first["checkpoint"]), load(second["checkpoint"])
    before = dict(earlier.net.backbone.named_parameters())
    trunk = {id(p) for p in later.net.trunk.parameters()}
    after = dict(later.net.backbone.named_parameters())
    assert trunk and len(trunk) < len(after)
    for name, param in after.items():
        if id(param) in trunk:
            torch.testing.assert_close(param, before[name])
        else:  # the tail trained on
            assert not torch.equal(param, before[name]), name
    # A target that does not exist is a clear error, not a silent fresh start.
    assert main(["-q", "train", *_overrides(workspace, "logger=none", "init_from=nope.ckpt")]) != 0
    assert "nope.ckpt does not exist" in capsys.readouterr().err


def test_fixed_run_dir_and_compact_evaluate_metrics(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = workspace / "fixed-run"
    result = _train(capsys, workspace, "logger=none", f"paths.run_dir={run_dir}")
    assert result["run_dir"] == str(run_dir)
    assert Path(result["checkpoint"]) == run_dir / "checkpoints" / "best.ckpt"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test/accuracy"] == result["metrics"]["test/accuracy"]
    assert saved["hardware"] == result["hardware"]
    assert (run_dir / "history.csv").read_text().startswith("epoch,train/loss")
    # A second fresh run must not mix its checkpoints with the first one's.
    assert (
        main(["-q", "train", *_overrides(workspace, "logger=none", f"paths.run_dir={run_dir}")])
        == 1
    )
    assert "already holds checkpoints" in capsys.readouterr().err

    summary = workspace / "summary" / "metrics.json"
    out = workspace / "evaluated"
    args = [result["checkpoint"], f"out={out}", f"metrics={summary}", "--json"]
    assert main(["-q", "evaluate", *args]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scalars = json.loads(summary.read_text())
    assert scalars["accuracy"] == report["accuracy"]
    assert "per_class" not in scalars and "knn_accuracy" in scalars
    assert (out / "report.md").is_file()
