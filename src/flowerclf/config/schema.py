"""The typed, frozen configuration: what validation returns and what the code reads.

Every value of a composed config has a field here, and no field has a default: defaults
live in one place, the packaged Hydra configs (``flowerclf/conf``, shown by ``flowerclf
config show``). Validation turns the composed config into a :class:`FlowerclfConfig` whose
sections are typed and immutable; bad values and unknown keys become precise messages with
the valid choices and a close match.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowerclf.core.errors import ConfigError
from flowerclf.data.recipes import RECIPE_NAMES

EmbeddingLoss = Literal["none", "cosine", "supcon", "siglip"]
EMBEDDING_LOSSES: tuple[str, ...] = typing.get_args(EmbeddingLoss)
Split = Literal["train", "val", "test"]

_Model = TypeVar("_Model", bound="FrozenSection")


class FrozenSection(BaseModel):
    """A config section: unknown keys are errors, and nothing can be reassigned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def updated(self: _Model, **changes: Any) -> _Model:
        """A validated copy with ``changes`` applied (the original stays as it is)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible values (tuples become lists), in declaration order."""
        return self.model_dump(mode="json")


class SplitFractions(FrozenSection):
    train: float = Field(ge=0.0, le=1.0)
    val: float = Field(ge=0.0, le=1.0)
    test: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        if self.train <= 0:
            raise ValueError("the train fraction must be > 0")
        return self


class DataConfig(FrozenSection):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    recipe: Literal[RECIPE_NAMES]  # type: ignore[valid-type]
    description: str
    root: str | None
    source: str | None
    source_sha256: str | None = Field(pattern=r"^[0-9a-fA-F]{64}$")
    classes: tuple[str, ...] | None
    split: Literal["random", "official"]
    fractions: SplitFractions
    max_pixels: int = Field(gt=0)
    scan_workers: int = Field(ge=0, le=64)
    refresh: bool
    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)
    pin_memory: bool
    persistent_workers: bool

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


class AugmentConfig(FrozenSection):
    hflip: float = Field(ge=0.0, le=1.0)
    vflip: float = Field(ge=0.0, le=1.0)
    scale: tuple[float, float]
    ratio: tuple[float, float]
    color_jitter: float = Field(ge=0.0, le=1.0)
    rand_augment: str | None
    gaussian_noise_std: float = Field(ge=0.0, le=1.0)
    blur_prob: float = Field(ge=0.0, le=1.0)
    blur_radius: tuple[float, float]
    random_erasing: float = Field(ge=0.0, le=1.0)
    mixup_alpha: float = Field(ge=0.0)
    cutmix_alpha: float = Field(ge=0.0)
    mix_prob: float = Field(ge=0.0, le=1.0)
    mix_switch_prob: float = Field(ge=0.0, le=1.0)

    @field_validator("blur_radius")
    @classmethod
    def _radius_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0 <= lo <= hi:
            raise ValueError(f"expected 0 <= low <= high, got {list(value)}")
        return value

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


class PreprocessConfig(FrozenSection):
    """Preprocessing overrides; ``None`` = taken from the timm pretrained config."""

    input_size: int | None = Field(ge=8, le=2048)
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] | None
    crop_pct: float | None = Field(gt=0.0, le=1.0)


class ModelConfig(FrozenSection):
    name: str
    arch: str
    pretrained: bool
    weights: str | None
    embedding_dim: int = Field(ge=2, le=4096)
    drop_rate: float = Field(ge=0.0, lt=1.0)
    members: int = Field(ge=1, le=16)
    member_tail_blocks: int | None = Field(ge=0)
    preprocess: PreprocessConfig


class EarlyStoppingConfig(FrozenSection):
    monitor: Literal["val/acc", "val/loss", "val/ce", "val/macro_f1"]
    mode: Literal["max", "min"]
    patience: int = Field(ge=0)
    min_delta: float = Field(ge=0.0)


class TrainerConfig(FrozenSection):
    mode: Literal["finetune", "cached"]
    max_epochs: int = Field(ge=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"]
    devices: int = Field(ge=1)
    num_nodes: int = Field(ge=1)
    strategy: Literal["auto", "ddp", "ddp_find_unused_parameters_true"]
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed", "32", "16"]
    optimizer: Literal["adam", "adamw", "sgd"]
    lr: float = Field(gt=0.0, le=10.0)
    backbone_lr_mult: float = Field(ge=0.0, le=10.0)
    weight_decay: float = Field(ge=0.0)
    momentum: float = Field(ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "none"]
    warmup_epochs: float = Field(ge=0.0)
    min_lr_factor: float = Field(ge=0.0, le=1.0)
    freeze_backbone_epochs: int = Field(ge=0)
    unfreeze_every_epochs: int = Field(ge=0)
    unfreeze_blocks_per_step: int = Field(ge=1)
    gradient_clip_val: float | None = Field(gt=0.0)
    check_val_every_n_epoch: int = Field(ge=1)
    early_stopping: EarlyStoppingConfig
    train_splits: tuple[Split, ...] = Field(min_length=1)
    calibration_holdout: float = Field(ge=0.0, lt=1.0)
    tail_blocks: int = Field(ge=0)
    cache_views: int = Field(ge=1, le=64)
    cached_batch_size: int = Field(ge=1)
    feature_runtime: Literal["auto", "onnx", "openvino", "torch"]
    deterministic: bool
    limit_train_batches: int | float | None
    limit_val_batches: int | float | None
    log_every_n_steps: int = Field(ge=1)
    knn_k: int = Field(ge=1)


class LossConfig(FrozenSection):
    embedding: EmbeddingLoss
    embedding_weight: float = Field(ge=0.0)
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    cosine_margin: float = Field(ge=-1.0, le=1.0)
    temperature: float = Field(gt=0.0)

    @field_validator("embedding", mode="before")
    @classmethod
    def _known_embedding_loss(cls, value: Any) -> Any:
        if value not in EMBEDDING_LOSSES:
            raise ValueError(f"unknown embedding loss {value!r}; valid: {list(EMBEDDING_LOSSES)}")
        return value

    @property
    def name(self) -> str:
        """``ce``, or ``ce+<embedding loss>``: how runs and reports name the loss."""
        return "ce" if self.embedding == "none" else f"ce+{self.embedding}"


class LoggerConfig(FrozenSection):
    enabled: bool
    tracking_uri: str | None
    experiment_name: str = Field(min_length=1)
    run_name: str | None
    log_model: bool


class PathsConfig(FrozenSection):
    output_dir: str
    cache_dir: str | None
    run_dir: str | None


class FlowerclfConfig(FrozenSection):
    """A composed, validated config: the object ``train(cfg)`` and every step read.

    Fields are in the order ``flowerclf config show`` prints them.
    """

    data: DataConfig
    model: ModelConfig
    augment: AugmentConfig
    trainer: TrainerConfig
    loss: LossConfig
    logger: LoggerConfig
    seed: int
    paths: PathsConfig
    resume: str | None
    init_from: str | None
    warm_start: str | None
    member_runs: tuple[str, ...] | None = Field(min_length=2)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_in_range(cls, value: Any) -> Any:
        # Checked before pydantic's coercion: "7" or 7.0 are not seeds.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {value!r}")
        return value

    def to_yaml(self) -> str:
        """The YAML ``flowerclf config show`` prints (and ``params.yaml`` holds)."""
        return OmegaConf.to_yaml(OmegaConf.create(self.to_dict()))

    def for_run(self, record: RunRecord) -> RunConfig:
        """This config as the config of the run ``record`` describes."""
        return RunConfig.model_validate({**self.model_dump(), "run": record})


class RunRecord(FrozenSection):
    """Where a training run lives; ``None`` where it has no MLflow run or run directory."""

    id: str | None
    dir: str | None
    tracking_uri: str | None


# A model built outside a training run, or a checkpoint from before runs recorded this.
NO_RUN = RunRecord(id=None, dir=None, tracking_uri=None)


class RunConfig(FlowerclfConfig):
    """The config of a training run: what it was composed from, plus where the run lives.

    Its :meth:`to_dict` is what checkpoints (hyper-parameter ``config``), the run's
    ``config.yaml`` and model packages record.
    """

    run: RunRecord


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _nested_model(argument)
        if found is not None:
            return found
    return None


def _section_at(schema: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The section model that holds the key at ``path`` (for "valid keys" hints)."""
    model: type[BaseModel] | None = schema
    for part in path:
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _nested_model(field.annotation) if field is not None else None
    return model


def _format_errors(schema: type[BaseModel], exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for error in exc.errors():
        location = ".".join([prefix, *map(str, error["loc"])] if prefix else map(str, error["loc"]))
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            section = _section_at(schema, error["loc"][:-1])
            valid = sorted(section.model_fields) if section is not None else []
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"{location}: unknown key.{hint} Valid keys: {', '.join(valid)}")
        elif error["type"] == "value_error":
            # Our own validators' messages already say what was given and what is valid.
            lines.append(f"{location}: {error['ctx']['error']}")
        elif error["type"] == "missing":
            lines.append(f"{location}: missing (every key needs a value; see the packaged configs)")
        else:
            lines.append(f"{location}: {error['msg']} (got {error.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


# Section name -> its schema (data, model, augment, trainer, loss, logger, paths).
SECTIONS: dict[str, type[BaseModel]] = {
    name: model
    for name, field in FlowerclfConfig.model_fields.items()
    if (model := _nested_model(field.annotation)) is not None
}


def validate_as(schema: type[_Model], values: Any, prefix: str = "") -> _Model:
    """``values`` as a ``schema`` object; ``prefix`` locates them in messages (``model``).

    Raises:
        ConfigError: every invalid value and unknown key, one per line.
    """
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(schema, exc, prefix)) from None


def validate_section(section: str, values: Mapping[str, Any]) -> BaseModel:
    """Validate one section (``data``, ``loss``...); raise :class:`ConfigError` if invalid."""
    return validate_as(SECTIONS[section], values, prefix=section)


def validate_config(cfg: DictConfig | Mapping[str, Any]) -> FlowerclfConfig:
    """A composed config (resolved) as the typed, frozen :class:`FlowerclfConfig`.

    Raises:
        ConfigError: every invalid value and unknown key, one per line.
    """
    return validate_as(FlowerclfConfig, _plain(cfg))


def validate_run_config(values: DictConfig | Mapping[str, Any]) -> RunConfig:
    """A run's recorded config (see :class:`RunConfig`) as the typed object."""
    return validate_as(RunConfig, _plain(values))


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(container, dict):
            raise ConfigError(f"a config must be a mapping, got {type(container).__name__}")
        return {str(k): v for k, v in container.items()}
    return dict(cfg)
