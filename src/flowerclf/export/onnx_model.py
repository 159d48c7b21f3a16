"""The package's ONNX model: its graph signature and the checks it must pass.

The export itself is :func:`flowerclf.models.runners.export_onnx` (the project's only
``torch.onnx.export`` call); here are the module it exports (:class:`PackageGraph`), the
``onnx.checker`` pass, the parity check against eager PyTorch on real images, and the
batched ONNX Runtime calls the checks, the int8 comparison and the embeddings index use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from flowerclf.core.package_format import INPUT_NAME
from flowerclf.inference.backends import onnx_session_options

# What the issue promises users: the exported graph is a faithful copy of the trained one.
PARITY_ATOL = 1e-4
RUN_BATCH = 32


class PackageGraph(nn.Module):
    """images -> (probabilities, logits, embeddings): the package's one graph signature.

    Wraps a network that returns ``(logits, embeddings)``; the output order is
    :data:`flowerclf.core.package_format.OUTPUT_NAMES`.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, embeddings = self.net(images)
        return logits.softmax(dim=1), logits, embeddings


def check_onnx_model(path: Path) -> None:
    """``onnx.checker`` with ``full_check`` (shape inference included).

    Raises:
        onnx.checker.ValidationError: the graph is not valid ONNX.
    """
    onnx.checker.check_model(str(path), full_check=True)


def cpu_session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with the runtime's own session options."""
    return ort.InferenceSession(
        str(path), onnx_session_options(), providers=["CPUExecutionProvider"]
    )


def run_in_batches(
    session: ort.InferenceSession,
    images: np.ndarray,
    outputs: Sequence[str],
    batch: int = RUN_BATCH,
) -> list[np.ndarray]:
    """Run ``images`` through ``session`` ``batch`` at a time; the named outputs, concatenated."""
    chunks = [
        session.run(list(outputs), {INPUT_NAME: np.ascontiguousarray(images[i : i + batch],
                                                                      np.float32)})
        for i in range(0, len(images), batch)
    ]  # fmt: skip
    return [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(outputs))]


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime vs PyTorch on the same preprocessed real images."""

    num_images: int
    top1_agreement: float
    max_abs_prob_diff: float
    max_abs_embedding_diff: float
    atol: float
    passed: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def check_parity(
    net: nn.Module, onnx_path: Path, batch: np.ndarray, atol: float = PARITY_ATOL
) -> ParityReport:
    """Run ``batch`` through eager PyTorch and ONNX Runtime and compare."""
    net = net.eval()
    with torch.inference_mode():
        logits, torch_emb = net(torch.from_numpy(batch))
        torch_probs = logits.softmax(dim=1).numpy()
    session = cpu_session(onnx_path)
    onnx_probs, onnx_emb = run_in_batches(session, batch, ["probabilities", "embeddings"])
    agreement = float((torch_probs.argmax(1) == onnx_probs.argmax(1)).mean())
    prob_diff = float(np.abs(torch_probs - onnx_probs).max())
    emb_diff = float(np.abs(torch_emb.numpy() - onnx_emb).max())
    return ParityReport(
        num_images=len(batch),
        top1_agreement=agreement,
        max_abs_prob_diff=prob_diff,
        max_abs_embedding_diff=emb_diff,
        atol=atol,
        passed=agreement == 1.0 and prob_diff <= atol,
    )
