"""The DVC pipeline's params.yaml: generated from Hydra, in sync with dvc.yaml, loadable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flowerclf.cli.main import main
from flowerclf.config import ConfigError, compose_config
from flowerclf.config.dvc_params import DATA_ROOT, PARAMS_FILE, RECIPES, RUNS_DIR, recipe_overrides
from flowerclf.data.recipes import make_recipe
from tests.helpers.paths import REPO_ROOT

# Data settings that only tune loading speed: the prepare stage need not re-run for them.
LOADER_ONLY_KEYS = {
    "description", "root", "source", "source_sha256", "refresh", "scan_workers", "batch_size",
    "num_workers", "pin_memory", "persistent_workers",
}  # fmt: skip


def _dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())


def _params() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / PARAMS_FILE).read_text())


def test_committed_params_match_the_hydra_configs() -> None:
    # The drift guard: params.yaml is exactly what `flowerclf config params` writes now.
    assert main(["config", "params", "--out", str(REPO_ROOT / PARAMS_FILE), "--check"]) == 0


def test_check_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "params.yaml"
    assert main(["config", "params", "--out", str(stale)]) == 0
    stale.write_text(stale.read_text().replace("max_epochs: 6", "max_epochs: 7", 1))
    assert main(["config", "params", "--out", str(stale), "--check"]) == 1
    assert "make params" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_params_section_is_the_composed_config(recipe: str) -> None:
    from_file = compose_config([], f"{REPO_ROOT / PARAMS_FILE}:{recipe}")
    composed = compose_config(recipe_overrides(recipe))
    assert from_file.to_dict() == composed.to_dict()
    # A recipe trains on the split of its dataset: <dataset>, <dataset>_best, <dataset>_robust.
    assert from_file.data.name == recipe.removesuffix("_best").removesuffix("_robust")
    assert from_file.data.root == DATA_ROOT
    assert from_file.paths.run_dir == f"{RUNS_DIR}/{recipe}"


def test_dvc_yaml_matches_the_recipes_and_declares_existing_params() -> None:
    pipeline = _dvc_yaml()
    params = _params()
    datasets, recipes = pipeline["vars"][0]["datasets"], pipeline["vars"][1]["recipes"]
    assert set(recipes) == set(RECIPES)
    for recipe, spec in recipes.items():
        # A recipe trains on the split prepared under its data.name, cut from its raw copy.
        data = params[recipe]["data"]
        assert spec["data"] == data["name"] and spec["data"] in datasets, recipe
        assert spec["raw"] == make_recipe(data["recipe"]).raw_name == datasets[spec["data"]]["raw"]
    for dataset, spec in datasets.items():
        # prepare@<dataset> runs with a recipe whose split it is.
        assert params[spec["recipe"]]["data"]["name"] == dataset
    for name, stage in pipeline["stages"].items():
        keys = stage["foreach"]
        if isinstance(keys, list):
            items = {k: {} for k in keys}
        elif isinstance(keys, dict):  # an inline mapping (e.g. the robustness stage)
            items = keys
        else:
            items = _foreach(pipeline, keys)
        for key, item in items.items():
            for declared in stage["do"].get("params", []):
                node: Any = params
                resolved = declared.replace("${item}", key).replace("${key}", key)
                resolved = resolved.replace("${item.recipe}", item.get("recipe", key))
                for part in resolved.split("."):
                    assert isinstance(node, dict) and part in node, f"{name}: {declared}"
                    node = node[part]


def _foreach(pipeline: dict[str, Any], reference: str) -> dict[str, dict[str, str]]:
    """The mapping a ``foreach: ${name}`` stage iterates over (one of the pipeline vars)."""
    name = reference.removeprefix("${").removesuffix("}")
    return next(var[name] for var in pipeline["vars"] if name in var)


def test_prepare_declares_every_data_setting_that_changes_the_split() -> None:
    declared = {
        p.removeprefix("${item.recipe}.data.")
        for p in _dvc_yaml()["stages"]["prepare"]["do"]["params"]
        if p.startswith("${item.recipe}.data.")
    }
    for recipe in RECIPES:
        data_keys = set(_params()[recipe]["data"])
        # A new data setting must be classified: declared for prepare, or loader-only.
        assert data_keys == declared | LOADER_ONLY_KEYS, sorted(
            data_keys ^ (declared | LOADER_ONLY_KEYS)
        )


def test_config_file_overrides_and_errors(tmp_path: Path) -> None:
    spec = f"{REPO_ROOT / PARAMS_FILE}:tf_flowers"
    cfg = compose_config(["trainer.max_epochs=2", "data.root=/elsewhere"], spec)
    assert cfg.trainer.max_epochs == 2
    assert cfg.data.root == "/elsewhere"
    with pytest.raises(ConfigError, match="max_epoch"):
        compose_config(["trainer.max_epoch=2"], spec)
    with pytest.raises(ConfigError, match="group choice"):
        compose_config(["model=resnet50"], spec)
    with pytest.raises(ConfigError, match="no config section 'tf_flower'"):
        compose_config([], f"{REPO_ROOT / PARAMS_FILE}:tf_flower")
    with pytest.raises(ConfigError, match="does not exist"):
        compose_config([], str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="trainer.lr"):
        compose_config(["trainer.lr=-1"], spec)


def test_config_show_from_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"{REPO_ROOT / PARAMS_FILE}:oxford102"
    assert main(["config", "show", "--config", spec, "seed=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["seed"] == 7
    assert shown["trainer"]["train_splits"] == ["train", "val"]
