"""Preprocessing comes from the model config; the DataModule serves seeded batches."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowerclf.cli.main import main
from flowerclf.config import compose_config
from flowerclf.core.errors import ConfigError
from flowerclf.core.preprocess import PreprocessSpec, preprocess_eval
from flowerclf.data.transforms import AddGaussianNoise, build_mixup, build_train_transform
from flowerclf.models.preprocessing import resolve_spec, spec_from_model_config
from flowerclf.training.seeding import seed_everything
from tests.helpers.datamodules import folder_datamodule
from tests.helpers.images import build_folder_dataset, make_photo


@pytest.mark.parametrize(
    ("arch", "size", "mean", "interpolation"),
    [
        ("rexnet_150", 224, (0.485, 0.456, 0.406), "bicubic"),
        ("tf_efficientnet_lite0", 224, (0.5, 0.5, 0.5), "bicubic"),
        ("inception_v3", 299, (0.5, 0.5, 0.5), "bicubic"),
    ],
)
def test_spec_comes_from_timm(arch: str, size: int, mean: tuple, interpolation: str) -> None:
    spec = resolve_spec(arch)
    assert spec.input_size == size
    assert spec.mean == pytest.approx(mean)
    assert spec.interpolation == interpolation


def test_model_config_overrides_and_simple_cnn() -> None:
    cfg = compose_config(["model=rexnet_150", "model.preprocess.input_size=160"])
    assert spec_from_model_config(cfg.model).input_size == 160
    cnn = spec_from_model_config(compose_config(["model=simple_cnn"]).model)
    assert cnn.input_size == 128
    with pytest.raises(ValueError, match="no timm pretrained config"):
        resolve_spec("simple_cnn")


@pytest.mark.parametrize("size", [(64, 48), (48, 64), (300, 76), (20, 20), (500, 333)])
@pytest.mark.parametrize(
    "spec",
    [
        PreprocessSpec(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875),
        PreprocessSpec(40, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 1.0),
    ],
)
def test_numpy_eval_transform_matches_timm(size: tuple[int, int], spec: PreprocessSpec) -> None:
    from timm.data import create_transform

    image = make_photo(size, seed=sum(size))
    expected = create_transform(**spec.timm_data_config(), is_training=False)(image).numpy()
    actual = preprocess_eval(image, spec)
    assert actual.shape == expected.shape == (3, spec.input_size, spec.input_size)
    np.testing.assert_allclose(actual, expected, atol=1e-6)


@pytest.mark.parametrize("size", [(300, 17), (17, 300), (2000, 30)])
def test_elongated_images_are_cut_first_and_stay_close_to_timm(size: tuple[int, int]) -> None:
    """Beyond 4:1 the long side is cut before resizing (bounded cost); the model input is
    the same centre region, so it differs from timm's only by resampling at the cut."""
    from timm.data import create_transform

    spec = PreprocessSpec(32, (0.5,) * 3, (0.5,) * 3, "bilinear", 0.875)
    image = make_photo(size, seed=1)
    expected = create_transform(**spec.timm_data_config(), is_training=False)(image).numpy()
    actual = preprocess_eval(image, spec)
    assert actual.shape == expected.shape
    assert float(np.abs(actual - expected).mean()) < 0.05


def test_train_transform_switches() -> None:
    spec = PreprocessSpec(32, (0.5,) * 3, (0.5,) * 3)
    defaults = compose_config().augment
    augment = defaults.updated(
        rand_augment="rand-m9-mstd0.5", gaussian_noise_std=0.1, color_jitter=0.2
    )
    transform = build_train_transform(spec, augment)
    assert "RandAugment" in repr(transform) and "AddGaussianNoise" in repr(transform)
    assert transform(make_photo((50, 40))).shape == (3, 32, 32)
    plain = build_train_transform(spec, defaults)
    assert "RandAugment" not in repr(plain) and "AddGaussianNoise" not in repr(plain)
    noisy = AddGaussianNoise(0.5)(torch.zeros(3, 8, 8))
    assert 0.3 < noisy.std().item() < 0.7


def test_mixup_gives_soft_targets() -> None:
    defaults = compose_config().augment
    assert build_mixup(defaults, 3, label_smoothing=0.0) is None
    mixing = defaults.updated(mixup_alpha=0.4, cutmix_alpha=1.0)
    mixup = build_mixup(mixing, num_classes=3, label_smoothing=0.0)
    assert mixup is not None
    _images, targets = mixup(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert targets.shape == (4, 3)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(4))


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    source = build_folder_dataset(tmp_path / "src", per_class=10)
    root = tmp_path / "data"
    code = main(
        ["-q", "data", "prepare", "data=folder", f"data.source={source}", f"data.root={root}"]
    )
    assert code == 0
    return root


def test_datamodule_serves_all_splits(prepared: Path) -> None:
    dm = folder_datamodule(prepared)
    dm.setup()
    assert dm.classes == ["a", "b", "c"]
    sizes = {s: len(dm.dataset(s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 30 and min(sizes.values()) > 0
    images, labels, ids = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and ids.shape == (4,)
    val_images, _, _ = next(iter(dm.val_dataloader()))
    again, _, _ = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(val_images, again)  # evaluation is deterministic


def test_training_order_follows_the_seed(prepared: Path) -> None:
    def first_epoch_ids(seed: int) -> list[int]:
        seed_everything(seed)
        dm = folder_datamodule(prepared, f"seed={seed}")
        return [int(i) for _, _, ids in dm.train_dataloader() for i in ids]

    assert first_epoch_ids(5) == first_epoch_ids(5)
    assert first_epoch_ids(5) != first_epoch_ids(6)


def test_seed_everything_seeds_all_generators() -> None:
    seed_everything(11)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    with pytest.raises(ValueError, match="seed must be"):
        seed_everything(-1)


def test_missing_prepared_dataset(tmp_path: Path) -> None:
    dm = folder_datamodule(tmp_path)
    with pytest.raises(FileNotFoundError, match="flowerclf data prepare"):
        dm.setup()


def test_blur_augmentation_softens_the_decoded_photo() -> None:
    from PIL import ImageStat

    from flowerclf.data.transforms import RandomGaussianBlur

    checker = Image.new("RGB", (64, 64), "white")
    for x in range(0, 64, 2):
        checker.paste(Image.new("RGB", (1, 64), "black"), (x, 0))
    detail = lambda image: ImageStat.Stat(image.convert("L")).stddev[0]  # noqa: E731
    torch.manual_seed(0)
    assert RandomGaussianBlur(0.0, (2.0, 3.0))(checker) is checker
    blurred = RandomGaussianBlur(1.0, (2.0, 3.0))(checker)
    assert detail(blurred) < 0.2 * detail(checker)
    cfg = compose_config(["augment.blur_prob=0.5", "model=simple_cnn"])
    transform = build_train_transform(PreprocessSpec.from_dict(
        {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}), cfg.augment)  # fmt: skip
    assert "RandomGaussianBlur(p=0.5, radius=(0.5, 3.0))" in repr(transform)
    with pytest.raises(ConfigError, match="blur_radius"):
        compose_config(["augment.blur_radius=[3.0,1.0]"])
