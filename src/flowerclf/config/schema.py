"""Typed schemas for the composed config; pydantic turns bad values into precise messages.

Only sections with a schema here are checked strictly (unknown keys rejected with a close
match). Sections added by later features get their schema alongside their code.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowerclf.core.errors import ConfigError
from flowerclf.data.recipes import RECIPE_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitFractions(_Strict):
    train: float = Field(0.8, ge=0.0, le=1.0)
    val: float = Field(0.1, ge=0.0, le=1.0)
    test: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        if self.train <= 0:
            raise ValueError("the train fraction must be > 0")
        return self


class DataConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    recipe: Literal[RECIPE_NAMES]  # type: ignore[valid-type]
    description: str = ""
    root: str | None = None
    source: str | None = None
    source_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    classes: list[str] | None = None
    split: Literal["random", "official"] = "random"
    fractions: SplitFractions = SplitFractions()
    max_pixels: int = Field(89_478_485, gt=0)
    scan_workers: int = Field(2, ge=0, le=64)
    refresh: bool = False
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0)
    pin_memory: bool = False
    persistent_workers: bool = True

    @model_validator(mode="after")
    def _split_matches_recipe(self) -> DataConfig:
        if self.split == "official" and not self.recipe.startswith("oxford102"):
            raise ValueError(
                f"split=official needs a dataset with an official split (oxford102, "
                f"oxford102_swapped); {self.recipe} supports split=random"
            )
        if self.recipe == "folder" and not self.source:
            raise ValueError(
                "data=folder needs data.source=<directory or archive of class folders>"
            )
        return self


class AugmentConfig(_Strict):
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.0, ge=0.0, le=1.0)
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    rand_augment: str | None = None
    gaussian_noise_std: float = Field(0.0, ge=0.0, le=1.0)
    random_erasing: float = Field(0.0, ge=0.0, le=1.0)
    mixup_alpha: float = Field(0.0, ge=0.0)
    cutmix_alpha: float = Field(0.0, ge=0.0)
    mix_prob: float = Field(1.0, ge=0.0, le=1.0)
    mix_switch_prob: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0 < lo <= hi:
            raise ValueError(f"expected 0 < low <= high, got {list(value)}")
        return value

    @field_validator("rand_augment")
    @classmethod
    def _rand_augment_spec(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("rand-"):
            raise ValueError(
                f"rand_augment must be a timm RandAugment spec such as 'rand-m9-mstd0.5', "
                f"got {value!r}"
            )
        return value


class PreprocessConfig(_Strict):
    input_size: int | None = Field(None, ge=8, le=2048)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] | None = None
    crop_pct: float | None = Field(None, gt=0.0, le=1.0)


class ModelConfig(_Strict):
    name: str
    arch: str
    pretrained: bool = True
    weights: str | None = None
    embedding_dim: int = Field(128, ge=2, le=4096)
    drop_rate: float = Field(0.2, ge=0.0, lt=1.0)
    preprocess: PreprocessConfig = PreprocessConfig()


class EarlyStoppingConfig(_Strict):
    monitor: Literal["val/acc", "val/loss", "val/ce", "val/macro_f1"] = "val/acc"
    mode: Literal["max", "min"] = "max"
    patience: int = Field(5, ge=0)
    min_delta: float = Field(0.0, ge=0.0)


class TrainerConfig(_Strict):
    mode: Literal["finetune", "cached"] = "finetune"
    max_epochs: int = Field(30, ge=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = Field(1, ge=1)
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed", "32", "16"] = "auto"
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    backbone_lr_mult: float = Field(0.1, ge=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0.0)
    min_lr_factor: float = Field(0.01, ge=0.0, le=1.0)
    freeze_backbone_epochs: int = Field(0, ge=0)
    unfreeze_every_epochs: int = Field(0, ge=0)
    unfreeze_blocks_per_step: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(1.0, gt=0.0)
    check_val_every_n_epoch: int = Field(1, ge=1)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    train_splits: list[Literal["train", "val", "test"]] = ["train"]
    tail_blocks: int = Field(0, ge=0)
    cache_views: int = Field(1, ge=1, le=64)
    cached_batch_size: int = Field(256, ge=1)
    feature_runtime: Literal["onnx", "torch"] = "onnx"
    deterministic: bool = False
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    log_every_n_steps: int = Field(10, ge=1)
    knn_k: int = Field(5, ge=1)


class LossConfig(_Strict):
    embedding: Literal["none", "cosine", "supcon", "siglip"] = "none"
    embedding_weight: float = Field(0.0, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    cosine_margin: float = Field(0.0, ge=-1.0, le=1.0)
    temperature: float = Field(0.1, gt=0.0)


class LoggerConfig(_Strict):
    enabled: bool = True
    tracking_uri: str | None = None
    experiment_name: str = Field("flowerclf", min_length=1)
    run_name: str | None = None
    log_model: bool = True


class PathsConfig(_Strict):
    output_dir: str = "outputs"
    cache_dir: str | None = None
    run_dir: str | None = None


SCHEMAS: dict[str, type[BaseModel]] = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "trainer": TrainerConfig,
    "loss": LossConfig,
    "logger": LoggerConfig,
    "paths": PathsConfig,
}


def _format_errors(section: str, schema: type[BaseModel], exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(p) for p in (section, *error["loc"]))
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            valid = sorted(schema.model_fields)
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"{location}: unknown key.{hint} Valid keys: {', '.join(valid)}")
        else:
            got = error.get("input")
            lines.append(f"{location}: {error['msg']} (got {got!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def validate_section(section: str, values: Any) -> BaseModel:
    """Validate one config section; raise :class:`ConfigError` with readable messages."""
    schema = SCHEMAS[section]
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(section, schema, exc)) from None


def validate_config(cfg: DictConfig) -> None:
    """Check the sections that have schemas plus the top-level seed."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    seed = container.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    for section in SCHEMAS:
        if section in container:
            validate_section(section, container[section])
