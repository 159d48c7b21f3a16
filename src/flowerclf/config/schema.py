"""Typed schemas for the composed config; pydantic turns bad values into precise messages.

Only sections with a schema here are checked strictly (unknown keys rejected with a close
match). Sections added by later features get their schema alongside their code.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowerclf.config.compose import ConfigError
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


SCHEMAS: dict[str, type[BaseModel]] = {"data": DataConfig, "augment": AugmentConfig}


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
