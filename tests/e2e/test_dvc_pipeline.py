"""The real dvc.yaml on a tiny generated tf_flowers: repro, no-op repro, push / pull into a
fresh clone, and a parameter change that re-runs only the stages reading it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowerclf.config.dvc_params import PARAMS_FILE, render_params
from tests.helpers.images import build_folder_dataset
from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.slow
pytest.importorskip("dvc")

CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
# Seconds instead of minutes; everything else is the recipe as committed.
FAST = [
    "model.preprocess.input_size=64", "trainer.max_epochs=1", "trainer.cache_views=1",
    "logger.log_model=false", "data.batch_size=8", "data.num_workers=0", "data.scan_workers=0",
]  # fmt: skip
TARGET = "export@tf_flowers"
EXPORT_FLAGS = (
    "--tensorrt off",
    "--tensorrt off --int8 none --openvino off --no-triton --no-mlflow --no-gallery",
)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return output


def _dvc(cwd: Path, env: dict[str, str], *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd, env)


def _git(cwd: Path, env: dict[str, str], *args: str) -> str:
    return _run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd, env)


def _make_repo(repo: Path, env: dict[str, str]) -> None:
    """A git repository holding the pipeline files and the sources its stages depend on."""
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    # The package's optional parts (int8 models, OpenVINO checks, Triton, MLflow, gallery)
    # are the export tests' business and cost most of this test's time: the stage runs
    # without them here, otherwise as committed.
    pipeline = (repo / "dvc.yaml").read_text()
    assert EXPORT_FLAGS[0] in pipeline
    (repo / "dvc.yaml").write_text(pipeline.replace(EXPORT_FLAGS[0], EXPORT_FLAGS[1]))
    (repo / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO_ROOT / ".dvc" / name, repo / ".dvc" / name)
    shutil.copytree(
        REPO_ROOT / "src" / "flowerclf",
        repo / "src" / "flowerclf",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (repo / PARAMS_FILE).write_text(render_params(FAST))
    _git(repo, env, "init", "-q")
    _git(repo, env, "add", "-A")
    _git(repo, env, "commit", "-qm", "pipeline")


def test_repro_noop_param_change_push_pull(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    build_folder_dataset(sources / "tf_flowers", per_class=8, classes=CLASSES)
    env = {
        **os.environ,
        # The stages call `flowerclf`: the one installed next to this interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLOWERCLF_SOURCES": str(sources),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    remote = tmp_path / "remote"
    repo = tmp_path / "repo"
    _make_repo(repo, env)
    _dvc(repo, env, "remote", "modify", "--local", "local", "url", str(remote))

    first = _dvc(repo, env, "repro", TARGET)
    stages = ("fetch", "prepare", "train", "evaluate", "export")
    for stage in (f"{name}@tf_flowers" for name in stages):
        assert f"Running stage '{stage}'" in first
    metrics = json.loads((repo / "reports" / "tf_flowers" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["num_samples"] > 0
    train_metrics = json.loads((repo / "runs" / "tf_flowers" / "metrics.json").read_text())
    assert train_metrics["train_time_s"] > 0 and train_metrics["hardware"]
    # (Recipes not run yet have no metrics files: dvc warns about them on stderr.)
    shown = _dvc(repo, env, "metrics", "show", "--json")
    reported = next(json.loads(line) for line in shown.splitlines() if line.startswith("{"))
    files = reported[""]["data"]
    assert files["reports/tf_flowers/metrics.json"]["data"]["accuracy"] == metrics["accuracy"]

    second = _dvc(repo, env, "repro", TARGET)
    assert "Running stage" not in second

    _git(repo, env, "add", "-A")
    _git(repo, env, "commit", "-qm", "results")
    _dvc(repo, env, "push", "--with-deps", TARGET)
    _check_pull_into_a_clone(tmp_path, repo, remote, env)
    _check_a_param_change_reruns_only_what_reads_it(repo, env)


def _check_pull_into_a_clone(tmp_path: Path, repo: Path, remote: Path, env: dict[str, str]) -> None:
    clone = tmp_path / "clone"
    _git(tmp_path, env, "clone", "-q", str(repo), str(clone))
    _dvc(clone, env, "remote", "modify", "--local", "local", "url", str(remote))
    # Only this recipe ran, so pull its chain (a plain `dvc pull` also wants the others).
    _dvc(clone, env, "pull", "--with-deps", TARGET)
    for path in (
        "data/raw/tf_flowers/daisy/img_000.jpg",
        "data/tf_flowers/manifest.csv",
        "runs/tf_flowers/checkpoints/best.ckpt",
        "reports/tf_flowers/test/report.md",
        "models/tf_flowers/flowerclf-model.json",
        "models/tf_flowers/model.onnx",
    ):
        assert (clone / path).is_file(), path
    assert (clone / "runs/tf_flowers/checkpoints/best.ckpt").read_bytes() == (
        repo / "runs/tf_flowers/checkpoints/best.ckpt"
    ).read_bytes()
    assert "Running stage" not in _dvc(clone, env, "repro", TARGET)


def _check_a_param_change_reruns_only_what_reads_it(repo: Path, env: dict[str, str]) -> None:
    """Re-runs train for real; that evaluate and export would follow is dvc's own verdict
    (`dvc status`, what `dvc repro` acts on): running them again would only re-test the
    first repro, at a third of this test's time."""
    before = (repo / "runs/tf_flowers/checkpoints/best.ckpt").read_bytes()
    params = yaml.safe_load((repo / PARAMS_FILE).read_text())
    params["tf_flowers"]["trainer"]["max_epochs"] = 2
    (repo / PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    stale = _stale_stages(repo, env)
    assert stale == {"train@tf_flowers"}, stale  # not fetch, not prepare: they do not read it

    rerun = _dvc(repo, env, "repro", "train@tf_flowers")
    assert "Running stage 'train@tf_flowers'" in rerun
    assert "Running stage 'prepare@tf_flowers'" not in rerun
    assert (repo / "runs/tf_flowers/checkpoints/best.ckpt").read_bytes() != before
    assert _stale_stages(repo, env) == {"evaluate@tf_flowers", "export@tf_flowers"}


def _stale_stages(repo: Path, env: dict[str, str]) -> set[str]:
    args = [sys.executable, "-m", "dvc", "status", "--json", "--with-deps", TARGET]
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return set(json.loads(done.stdout))
