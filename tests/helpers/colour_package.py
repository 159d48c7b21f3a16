"""A hand-made model package whose answers are known: it classifies by colour layout.

The network looks at the mean of each RGB channel in the top and bottom halves of its
input; ``logit(c) = 8 * (2 * excess_c(top) + excess_c(bottom))`` where ``excess_c`` is how
much channel ``c`` exceeds the mean of the other two. So a red image is ``red``, and an
image that is red above and green below is ``red`` upright but ``green`` upside down:
orientation, colour conversion and alpha handling all change the answer when they go wrong.

The package has the same layout as ``flowerclf export`` writes (descriptor, ONNX model with
``images`` -> ``probabilities``/``logits``/``embeddings``, embeddings index, gallery).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from flowerclf.models.runners import export_onnx

CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (220, 30, 40), "green": (30, 200, 50), "blue": (30, 40, 220)}
INPUT_SIZE = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ColourLayoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        excess = torch.full((3, 3), -0.5) + torch.eye(3) * 1.5  # c - mean(others)
        self.register_buffer("excess", excess)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pixels = images * self.std + self.mean  # back to [0, 1]
        half = pixels.shape[2] // 2
        top = pixels[:, :, :half].mean(dim=(2, 3))
        bottom = pixels[:, :, half:].mean(dim=(2, 3))
        logits = 8.0 * (2.0 * top @ self.excess.T + bottom @ self.excess.T)
        features = torch.cat([top, bottom], dim=1) - 0.5
        embeddings = nn.functional.normalize(features, dim=1)
        return logits.softmax(dim=1), logits, embeddings


def solid(colour: str, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, COLOURS[colour])


def split(top: str, bottom: str, size: tuple[int, int] = (40, 40)) -> Image.Image:
    image = Image.new("RGB", size, COLOURS[bottom])
    image.paste(Image.new("RGB", (size[0], size[1] // 2), COLOURS[top]), (0, 0))
    return image


def build_colour_package(root: Path, gallery_per_class: int = 4) -> Path:
    """Write the package into ``root`` (created) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    net = ColourLayoutNet().eval()
    names = ["probabilities", "logits", "embeddings"]
    export_onnx(net, root / "model.onnx", INPUT_SIZE, names)  # the project's one ONNX export

    gallery = root / "gallery"
    gallery.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    ids, labels, paths, batch = [], [], [], []
    for label, colour in enumerate(CLASSES):
        for i in range(gallery_per_class):
            image_id = 100 * (label + 1) + i
            base = np.array(COLOURS[colour], dtype=np.int16)
            pixels = base + rng.integers(-25, 25, size=(32, 32, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(gallery / f"{image_id}.jpg", quality=90)
            array = (np.asarray(image, np.float32) / 255.0 - MEAN) / STD
            batch.append(array.transpose(2, 0, 1))
            ids.append(image_id)
            labels.append(label)
            paths.append(f"{colour}/{image_id}.jpg")
    with torch.no_grad():
        _, _, embeddings = net(torch.from_numpy(np.stack(batch).astype(np.float32)))
    np.savez(
        root / "embeddings.npz", embeddings=embeddings.numpy(), ids=np.array(ids),
        labels=np.array(labels), paths=np.array(paths), classes=np.array(CLASSES),
    )  # fmt: skip

    descriptor = {
        "format": "flowerclf-model",
        "format_version": 1,
        "name": "colour-layout",
        "version": "1",
        "classes": CLASSES,
        "preprocess": {
            "input_size": INPUT_SIZE,
            "mean": list(MEAN),
            "std": list(STD),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        },
        "metrics": {"test/accuracy": 1.0},
        "files": {"onnx": "model.onnx", "embeddings": "embeddings.npz", "gallery": "gallery"},
    }
    (root / "flowerclf-model.json").write_text(json.dumps(descriptor, indent=2))
    return root
