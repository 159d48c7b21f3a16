"""Validation returns one typed, frozen config; defaults live only in the packaged YAML;
configs saved by older versions (checkpoints, package descriptors) still read back."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ValidationError

from flowerclf.config import FlowerclfConfig, RunConfig, compose_config
from flowerclf.config import compose as compose_module
from flowerclf.config.saved import fill_missing, load_model_section, load_run_config
from flowerclf.config.schema import (
    NO_RUN,
    SECTIONS,
    LossConfig,
    TrainerConfig,
    validate_config,
)
from flowerclf.core.errors import ConfigError
from flowerclf.training.losses import supcon_loss
from flowerclf.training.module import FlowerClassifier

SPEC = {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
TINY_MODEL = ["model=simple_cnn", "model.preprocess.input_size=32", "model.embedding_dim=8"]


def _all_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found += _all_models(candidate)
    return found


def test_validation_returns_the_typed_config() -> None:
    cfg = compose_config(["loss=ce_supcon", "trainer.lr=0.002", "seed=7"])
    assert isinstance(cfg, FlowerclfConfig)
    assert isinstance(cfg.trainer, TrainerConfig) and isinstance(cfg.loss, LossConfig)
    assert (cfg.trainer.lr, cfg.loss.embedding, cfg.seed) == (0.002, "supcon", 7)
    assert cfg.trainer.train_splits == ("train",)
    # The same values, validated from plain data, give an equal object.
    assert validate_config(cfg.to_dict()) == cfg


def test_the_config_is_frozen() -> None:
    cfg = compose_config()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.loss.temperature = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.trainer.early_stopping.patience = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.trainer.train_splits.append("val")  # type: ignore[attr-defined]
    # A changed copy is validated like any config, and leaves the original alone.
    changed = cfg.updated(trainer=cfg.trainer.updated(lr=0.5))
    assert (changed.trainer.lr, cfg.trainer.lr) == (0.5, compose_config().trainer.lr)
    with pytest.raises(ValidationError, match="greater than 0"):
        cfg.trainer.updated(lr=-1.0)


@pytest.mark.parametrize("model", sorted(set(_all_models(RunConfig)), key=lambda m: m.__name__))
def test_the_schema_sets_no_defaults(model: type[BaseModel]) -> None:
    """Defaults live in the packaged Hydra configs only: a field with a default here would
    be a second copy that silently disagrees the day one of them changes."""
    with_defaults = [name for name, field in model.model_fields.items() if not field.is_required()]
    assert not with_defaults, f"{model.__name__} restates defaults for {with_defaults}"


def test_every_section_has_a_schema() -> None:
    assert set(SECTIONS) == {"data", "model", "augment", "trainer", "loss", "logger", "paths"}


@pytest.fixture
def edited_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the packaged configs, importable as ``edited_conf``, used by compose_config."""
    copy = tmp_path / "edited_conf"
    shutil.copytree(Path(str(resources.files("flowerclf.conf"))), copy)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(compose_module, "CONFIG_MODULE", "edited_conf")
    yield copy
    sys.modules.pop("edited_conf", None)


def _replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


def test_a_default_changed_in_the_yaml_reaches_the_code(edited_conf: Path) -> None:
    _replace_line(edited_conf / "loss" / "ce.yaml", "temperature: 0.1 ", "temperature: 0.37 ")
    _replace_line(edited_conf / "trainer" / "default.yaml", "knn_k: 5 ", "knn_k: 9 ")

    cfg = compose_config([*TINY_MODEL, "loss=ce_supcon", "loss.embedding_weight=1.0"])
    assert (cfg.loss.temperature, cfg.trainer.knn_k) == (0.37, 9)
    module = FlowerClassifier(cfg, ["a", "b"], SPEC, pretrained=False)
    assert module.criterion.config.temperature == 0.37
    # The loss the module trains with is the supervised contrastive loss at 0.37.
    embeddings = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    out = module.criterion(torch.zeros(6, 2), embeddings, labels)
    torch.testing.assert_close(out.embedding, supcon_loss(embeddings, labels, 0.37))
    assert not torch.allclose(out.embedding, supcon_loss(embeddings, labels, 0.1))
    # A saved config that lacks the key gets the default from the same (edited) YAML.
    saved = cfg.for_run(NO_RUN).to_dict()
    del saved["loss"]["temperature"]
    assert load_run_config(saved).loss.temperature == 0.37


def _old_checkpoint_config() -> dict[str, Any]:
    """A run config as an older flowerclf saved it: keys added since are missing."""
    cfg = compose_config([*TINY_MODEL, "loss=ce_cosine", "trainer.lr=0.123", "seed=9"])
    saved = cfg.to_dict()
    for section, key in [
        ("loss", "temperature"), ("trainer", "knn_k"), ("trainer", "unfreeze_every_epochs"),
        ("trainer", "unfreeze_blocks_per_step"), ("paths", "run_dir"), ("data", "source_sha256"),
        ("model", "drop_rate"),
    ]:  # fmt: skip
        del saved[section][key]
    return saved  # and no "run" section


def test_an_old_saved_config_is_filled_from_the_packaged_defaults() -> None:
    defaults = compose_config()
    loaded = load_run_config(_old_checkpoint_config())
    assert isinstance(loaded, RunConfig) and loaded.run == NO_RUN
    assert loaded.loss.temperature == defaults.loss.temperature
    assert loaded.trainer.knn_k == defaults.trainer.knn_k
    assert loaded.model.drop_rate == defaults.model.drop_rate
    assert loaded.paths.run_dir is None and loaded.data.source_sha256 is None
    # What the run recorded wins over every default.
    assert (loaded.trainer.lr, loaded.seed, loaded.loss.embedding) == (0.123, 9, "cosine")
    assert (loaded.model.arch, loaded.model.embedding_dim) == ("simple_cnn", 8)
    # The module a checkpoint rebuilds takes the same path.
    module = FlowerClassifier(_old_checkpoint_config(), ["a", "b"], SPEC, pretrained=False)
    assert module.config == loaded
    assert module.hparams["config"] == loaded.to_dict()


def test_saved_config_oddities(caplog: pytest.LogCaptureFixture) -> None:
    saved = {**_old_checkpoint_config(), "note": "added with +note=... by an older version"}
    with caplog.at_level(logging.WARNING):
        assert load_run_config(saved).seed == 9
    assert "note" in caplog.text
    saved["trainer"]["lr"] = -1
    with pytest.raises(ConfigError, match="trainer.lr"):
        load_run_config(saved)


def test_fill_missing_fills_only_what_is_missing() -> None:
    defaults = {"a": 1, "s": {"x": 1, "y": 2}, "t": {"z": 3}}
    assert fill_missing({"a": 5, "s": {"x": 7}}, defaults) == {
        "a": 5, "s": {"x": 7, "y": 2}, "t": {"z": 3},
    }  # fmt: skip
    assert fill_missing({"s": None}, defaults) == {"s": None, "a": 1, "t": {"z": 3}}


def test_a_package_descriptor_model_section_reads_back() -> None:
    old = {"name": "tiny", "arch": "simple_cnn", "embedding_dim": 16}
    model = load_model_section(old)
    assert (model.arch, model.embedding_dim) == ("simple_cnn", 16)
    assert model.drop_rate == compose_config().model.drop_rate
    current = {**old, "drop_rate": 0.3, "pretrained": False, "weights": None}
    assert load_model_section(current).drop_rate == 0.3
    with pytest.raises(ConfigError, match="model.embedding_dim"):
        load_model_section({**old, "embedding_dim": 0})


def test_an_experiment_can_set_warm_start() -> None:
    # config.yaml's own keys come before the experiment in its defaults list: otherwise its
    # `warm_start: null` would silently override the experiment's.
    best = compose_config(["experiment=tf_flowers_best"])
    assert best.warm_start == "tf_flowers_fast" and best.trainer.mode == "finetune"
    assert compose_config(["experiment=tf_flowers_best", "warm_start=null"]).warm_start is None
