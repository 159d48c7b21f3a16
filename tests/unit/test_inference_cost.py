"""The model's FLOPs are counted from the graph; the machine's matmul rate is measured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from flowerclf.inference.cost import count_gflop, matmul_gflops
from flowerclf.models.runners import export_onnx


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=0)  # 32x32 -> 8 x 30 x 30
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)  # 8 x 30 x 30, 2 in/group
        self.head = nn.Linear(8, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.grouped(self.conv(images)).mean(dim=(2, 3)))


def test_flops_are_counted_per_output_element_and_weight(tmp_path: Path) -> None:
    path = export_onnx(_ConvNet(), tmp_path / "model.onnx", 32, ["logits"])
    conv = 2 * (8 * 30 * 30) * (3 * 3 * 3)
    grouped = 2 * (8 * 30 * 30) * (2 * 3 * 3)
    head = 2 * 5 * 8
    assert count_gflop(path, 32) == pytest.approx((conv + grouped + head) / 1e9, abs=1e-6)


def test_matmul_rate_is_measured_per_engine() -> None:
    rates = matmul_gflops(size=128, seconds=0.05)
    assert rates["numpy"] is not None and rates["numpy"] > 0
    assert set(rates) == {"numpy", "openvino"}  # openvino: None where it is not installed
