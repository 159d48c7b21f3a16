"""Every packaged config composes and validates; bad overrides teach; the CLI answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flowerclf.cli.main import main
from flowerclf.config import ConfigError, compose_config, group_options

GROUPS_WITH_CONFIGS = ("data", "model", "augment")


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS_WITH_CONFIGS for o in group_options(g)],
)
def test_every_config_composes(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if option == "folder":
        overrides.append("data.source=/somewhere")
    cfg = compose_config(overrides)
    assert getattr(cfg, group)
    assert isinstance(cfg.seed, int)


def test_expected_options_exist() -> None:
    assert set(group_options("data")) >= {
        "tf_flowers", "tf_flowers4", "oxford102", "oxford102_swapped", "folder",
    }  # fmt: skip
    assert set(group_options("model")) >= {
        "rexnet_150", "tf_efficientnet_lite0", "tf_efficientnet_lite2", "resnet50",
        "vit_small_patch16_224", "inception_v3", "simple_cnn",
    }  # fmt: skip
    assert "_base_" not in group_options("data")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data=oxfrd", r"Did you mean 'oxford102'\?.*Valid data configs: folder, oxford102"),
        ("data.rooot=/x", r"unknown config key 'data.rooot'. Did you mean 'root'\?"),
        ("sed=3", r"unknown config key 'sed'. Did you mean 'seed'\?"),
        ("data.split=foo", r"data.split: Input should be 'random' or 'official'"),
        ("seed=-1", r"seed must be an integer"),
        ("seed=abc", r"seed must be an integer"),
        ("data.fractions.train=0.5", r"must sum to 1"),
        ("data.batch_size=0", r"data.batch_size: Input should be greater than or equal to 1"),
        ("+data.extra=1", r"data.extra: unknown key"),
        ("augment.rand_augment=bogus", r"timm RandAugment spec"),
        ("data=[broken", r"cannot parse overrides"),
    ],
)
def test_bad_overrides_fail_fast_with_guidance(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        compose_config([override])


def test_official_split_only_for_oxford() -> None:
    with pytest.raises(ConfigError, match="split=official needs"):
        compose_config(["data=tf_flowers", "data.split=official"])


def test_folder_needs_source() -> None:
    with pytest.raises(ConfigError, match=r"data=folder needs data\.source"):
        compose_config(["data=folder"])


def test_overrides_reach_the_config() -> None:
    cfg = compose_config(["data=oxford102", "data.root=/somewhere", "seed=7"])
    assert (cfg.data.name, cfg.data.root, cfg.seed, cfg.data.split) == (
        "oxford102", "/somewhere", 7, "official",
    )  # fmt: skip


def test_cli_exit_code_and_message_for_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "data=nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data=nope is not a known data config")


def test_data_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list", "--json"]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"tf_flowers", "tf_flowers4", "oxford102", "folder"} <= names


@pytest.mark.parametrize(
    "args",
    [[], ["data"], ["data", "prepare"], ["data", "report"], ["data", "list"], ["config", "show"]],
)
def test_help_for_every_command(args: list[str]) -> None:
    """The installed console script answers --help (a real subprocess, as users run it)."""
    result = subprocess.run(
        [sys.executable, "-m", "flowerclf", *args, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: flowerclf" in result.stdout


def test_import_has_no_heavy_side_effects() -> None:
    code = "import sys, flowerclf; print('torch' in sys.modules, 'hydra' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False False"
