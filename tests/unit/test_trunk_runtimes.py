"""The trunk cache's runtimes give the same outputs; ``auto`` names the one that ran."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowerclf.core.errors import ConfigError
from flowerclf.models.runners import make_runner, resolve_runtime

pytest.importorskip("openvino")


def _trunk() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU6(), nn.Conv2d(8, 4, 1)).eval()


def test_openvino_and_onnx_trunk_outputs_agree() -> None:
    images = torch.randn(5, 3, 32, 32)
    trunk = _trunk()
    with torch.inference_mode():
        expected = trunk(images)
    for runtime in ("onnx", "openvino", "auto"):
        (features,) = make_runner(trunk, runtime, 32, ["features"])(images)
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_auto_resolves_to_openvino_where_installed() -> None:
    assert resolve_runtime("auto") == "openvino"
    assert resolve_runtime("onnx") == "onnx"
    with pytest.raises(ConfigError, match="valid: auto, onnx, openvino, torch"):
        make_runner(_trunk(), "tensorflow", 32, ["features"])
