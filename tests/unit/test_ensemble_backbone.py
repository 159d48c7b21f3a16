"""The multi-backbone ensemble: one input, members at their own sizes, one ONNX graph."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from flowerclf.core.errors import ConfigError
from flowerclf.models.backbones import EnsembleBackbone, create_backbone, split_backbone
from flowerclf.models.preprocessing import resolve_spec
from flowerclf.models.runners import export_onnx

PAIR = "tf_efficientnet_lite0+tf_efficientnet_lite1"


@pytest.fixture(scope="module")
def ensemble() -> EnsembleBackbone:
    torch.manual_seed(0)
    backbone, origin = create_backbone(PAIR, pretrained=False, weights=None)
    assert isinstance(backbone, EnsembleBackbone)
    assert origin == "tf_efficientnet_lite0: random; tf_efficientnet_lite1: random"
    return backbone.eval()


def test_members_see_their_own_input_size(ensemble: EnsembleBackbone) -> None:
    assert ensemble.input_sizes == [224, 240]
    assert ensemble.num_features == 1280 + 1280
    seen: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
        for m in ensemble.members
    ]
    with torch.no_grad():
        features = ensemble(torch.randn(2, 3, 240, 240))
    for hook in hooks:
        hook.remove()
    assert seen == [(2, 3, 224, 224), (2, 3, 240, 240)]
    # Each member's block is L2-normalised to sqrt(width): neither dominates the head.
    norms = [part.norm(dim=1) for part in features.split([1280, 1280], dim=1)]
    for norm in norms:
        torch.testing.assert_close(norm, torch.full((2,), 1280**0.5))


def test_spec_is_the_largest_members() -> None:
    spec = resolve_spec(PAIR)
    assert spec.input_size == 240
    assert spec == resolve_spec("tf_efficientnet_lite1")


def test_ensemble_rules() -> None:
    with pytest.raises(ConfigError, match="several members"):
        create_backbone(PAIR, pretrained=True, weights="/some/file.safetensors")
    backbone, _ = create_backbone(PAIR, pretrained=False, weights=None)
    with pytest.raises(ConfigError, match="tail_blocks=99"):
        split_backbone(backbone, 99)
    with pytest.raises(ConfigError, match="normalise"):
        resolve_spec("tf_efficientnet_lite0+resnet18")


def test_one_onnx_graph_matches_torch(ensemble: EnsembleBackbone, tmp_path) -> None:
    path = tmp_path / "ensemble.onnx"
    export_onnx(ensemble, path, input_size=240, output_names=["features"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 240, 240)
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_out), ensemble(x), atol=1e-4, rtol=1e-4)


def test_trunk_then_tail_is_the_whole_ensemble(ensemble: EnsembleBackbone, tmp_path) -> None:
    """Cut at each member's last block: the trunk's one flat vector per image (what the
    fast path caches) through the tails gives the uncut ensemble's features, in torch and
    as one ONNX graph."""
    trunk, tail = split_backbone(ensemble, 1)
    x = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        flat = trunk(x)
        assert flat.dim() == 2 and flat.shape[0] == 2
        torch.testing.assert_close(tail(flat), ensemble(x), atol=1e-5, rtol=1e-5)
    # The tails hold only the members' last blocks and heads: that is what trains.
    tail_params = {id(p) for p in tail.parameters()}
    trunk_params = {id(p) for p in trunk.parameters()}
    assert tail_params and not tail_params & trunk_params
    assert tail_params | trunk_params == {id(p) for p in ensemble.parameters()}
    path = tmp_path / "cut.onnx"
    export_onnx(torch.nn.Sequential(trunk, tail), path, input_size=240, output_names=["f"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    # Features of norm ~36 per member from random weights: ONNX Runtime's fused kernels
    # round differently at the 1e-5 relative level.
    with torch.no_grad():
        expected = ensemble(x)
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, atol=1e-3, rtol=1e-3)
