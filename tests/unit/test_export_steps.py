"""The export as named steps (which steps the options select, what a step returns), the
one torch -> ONNX exporter, and the int8 comparison; real exports: tests/e2e."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flowerclf.core.errors import ExportError
from flowerclf.core.package_format import OUTPUT_NAMES
from flowerclf.export import steps as export_steps
from flowerclf.export.onnx_model import (
    PackageGraph,
    check_onnx_model,
    cpu_session,
    run_in_batches,
)
from flowerclf.export.options import ExportOptions
from flowerclf.export.quantize import compare_int8, quantize_int8
from flowerclf.export.steps import EXPORT_STEPS, TENSORRT_OFF_REASON, planned_steps
from flowerclf.models.runners import export_onnx
from tests.helpers.paths import REPO_ROOT

# Every optional part off: the package is weights, ONNX, embeddings, config and metrics.
MINIMAL = {"int8": "none", "tensorrt": "off", "triton": False, "mlflow": False, "gallery": False}


# --- which steps run -------------------------------------------------------------------


def _names(options: ExportOptions) -> list[str]:
    return [step.name for step in planned_steps(options)]


def test_default_options_run_every_step_onnx_first_and_mlflow_last():
    names = _names(ExportOptions())
    assert names == [step.name for step in EXPORT_STEPS]
    onnx = names.index("onnx")
    for reader in ("onnx_parity", "embeddings", "int8", "openvino", "triton", "tensorrt"):
        assert names.index(reader) > onnx, reader
    assert names[-1] == "mlflow"
    # triton reads the temperature the open_world step fitted (calibrated probabilities).
    assert [s.name for s in EXPORT_STEPS if s.reads_package] == ["triton", "mlflow"]
    assert names.index("triton") > names.index("open_world")


@pytest.mark.parametrize(
    ("options", "skipped"),
    [
        ({"int8": "none"}, {"int8"}),
        ({"triton": False}, {"triton"}),
        ({"mlflow": False}, {"mlflow"}),
        ({"openvino": "off"}, {"openvino"}),
        (MINIMAL, {"int8", "triton", "mlflow"}),
    ],
)
def test_options_leave_out_exactly_their_steps(options: dict, skipped: set[str]):
    every = _names(ExportOptions())
    assert _names(ExportOptions(**options)) == [n for n in every if n not in skipped]


def test_openvino_step_records_why_when_openvino_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(export_steps, "openvino_int8_unavailable", lambda: "nncf is not installed")
    result = export_steps.write_openvino(_FakeContext(tmp_path, ExportOptions()))  # type: ignore[arg-type]
    assert result.files == {}
    assert result.checks["openvino_int8"] == {"built": False, "reason": "nncf is not installed"}
    assert result.checks["openvino_bf16"]["built"] is False
    with pytest.raises(ExportError, match="--openvino on: nncf"):
        export_steps.write_openvino(_FakeContext(tmp_path, ExportOptions(openvino="on")))  # type: ignore[arg-type]


def test_tensorrt_off_records_why_without_building(tmp_path: Path):
    # The tensorrt step always runs: its check says whether there is an engine and why not.
    context = _FakeContext(tmp_path, ExportOptions(tensorrt="off"))
    result = export_steps.write_tensorrt(context)  # type: ignore[arg-type]
    assert result.files == {}
    assert result.checks == {"tensorrt": {"built": False, "reason": TENSORRT_OFF_REASON}}
    assert list(tmp_path.iterdir()) == []


class _FakeContext:
    def __init__(self, staging: Path, options: ExportOptions) -> None:
        self.staging = staging
        self.options = options


# --- the one exporter ------------------------------------------------------------------


class _TwoHeads(nn.Module):
    """logits and L2-normalised embeddings: the exporter leaves the latter's width symbolic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.head = nn.Linear(6, 4)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conv(images).mean(dim=(2, 3))
        return self.head(features), nn.functional.normalize(features, dim=1)


def test_export_onnx_gives_named_outputs_with_real_widths_and_dynamic_batch(tmp_path: Path):
    import onnx

    torch.manual_seed(0)
    net = _TwoHeads().eval()
    path = export_onnx(net, tmp_path / "m.onnx", 16, ["logits", "embeddings"])
    check_onnx_model(path)
    graph = onnx.load(str(path)).graph
    shapes = {
        o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
        for o in graph.output
    }
    assert shapes == {"logits": ["batch", 4], "embeddings": ["batch", 6]}
    images = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    logits, embeddings = run_in_batches(cpu_session(path), images, ["logits", "embeddings"], 2)
    with torch.inference_mode():
        want_logits, want_embeddings = net(torch.from_numpy(images))
    np.testing.assert_allclose(logits, want_logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(embeddings, want_embeddings.numpy(), atol=1e-5)


def test_only_the_exporter_calls_torch_onnx_export():
    call = re.compile(r"torch\.onnx\.export\s*\(")
    callers = sorted(
        str(path.relative_to(REPO_ROOT))
        for folder in ("src", "scripts", "tests")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if call.search(path.read_text())
    )
    assert callers == ["src/flowerclf/models/runners.py"]


def test_int8_comparison_does_not_depend_on_how_the_images_are_chunked(tmp_path: Path):
    torch.manual_seed(0)
    fp32 = export_onnx(PackageGraph(_TwoHeads()), tmp_path / "m.onnx", 16, OUTPUT_NAMES)
    images = np.random.default_rng(1).standard_normal((40, 3, 16, 16)).astype(np.float32)
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", images[:16], "static")
    check_onnx_model(int8)
    labels = np.arange(40) % 4
    whole = compare_int8(fp32, int8, [images], labels, "static", 16)
    chunked = compare_int8(fp32, int8, np.array_split(images, 3), labels, "static", 16)
    (probabilities,) = run_in_batches(cpu_session(fp32), images, ["probabilities"])
    assert whole.fp32_accuracy == pytest.approx(float((probabilities.argmax(1) == labels).mean()))
    for field in ("num_images", "fp32_accuracy", "int8_accuracy", "top1_agreement"):
        assert getattr(chunked, field) == getattr(whole, field), field
    assert whole.num_images == 40 and whole.fp32_ips > 0 and whole.int8_ips > 0
    with pytest.raises(ValueError, match="40 images but 39 labels"):
        compare_int8(fp32, int8, [images], labels[:39], "static", 16)
