"""How good can a linear head on a recipe's cached features be? A convex reference.

    python scripts/head_probe.py experiment=tf_flowers_ensemble [seed=43] [--c 0.5 1 2 4]

Loads the recipe's feature cache exactly as training does (the same keys: nothing is
recomputed when the recipe has trained once), then fits a multinomial logistic regression
(L2-regularised, full batch, L-BFGS: the optimum, not a training run) on the cached train
views for each regularisation strength ``C`` (sklearn's convention: the penalty is
``||W||^2 / (2 C)`` against the summed loss), and prints validation and test accuracy for
each, and for the ``C`` the validation split picks, as one JSON object.

It answers one question: is the recipe's head training (SGD/AdamW, early stopping on val)
what limits accuracy, or are the frozen features? With ``trainer.tail_blocks > 0`` the
cached tensors are trunk outputs and the probe runs them through the frozen ImageNet tail
first (so it measures the frozen network, not the recipe's trained tail).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from flowerclf.config import compose_config
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.data.prepare import resolve_root
from flowerclf.models.preprocessing import spec_from_model_config
from flowerclf.training.module import FlowerClassifier
from flowerclf.training.seeding import seed_everything

# The training code's own cache loader: same keys, same parts.
from flowerclf.training.train import feature_caches


def pooled(module: FlowerClassifier, inputs: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Cached trunk outputs -> the features the heads see (through the frozen tail)."""
    tail = module.net.tail.eval()
    with torch.inference_mode():
        return torch.cat(
            [tail(inputs[i : i + batch].float()) for i in range(0, len(inputs), batch)]
        )


def fit_logistic(
    features: torch.Tensor, labels: torch.Tensor, classes: int, c: float
) -> torch.nn.Linear:
    """argmin mean CE + ||W||^2 / (2 C N): sklearn's LogisticRegression(C) objective."""
    torch.manual_seed(0)
    head = torch.nn.Linear(features.shape[1], classes, dtype=torch.float64)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    x, y = features.double(), labels.long()
    penalty = 1.0 / (2.0 * c * len(y))
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=500, tolerance_grad=1e-7,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x), y) + penalty * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def accuracy(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((head(features.double()).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=...")
    parser.add_argument("--c", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--out", type=Path, help="also write the JSON here (results/...)")
    args = parser.parse_args()
    cfg = compose_config(args.overrides)
    cfg = cfg.updated(data=cfg.data.updated(root=str(resolve_root(cfg.data.root))))
    if cfg.trainer.mode != "cached":
        raise SystemExit(
            "the probe reads a fast-path feature cache: use a trainer.mode=cached recipe"
        )
    seed_everything(cfg.seed)
    spec = spec_from_model_config(cfg.model)
    datamodule = FlowerDataModule.from_config(cfg, spec)
    datamodule.setup()
    module = FlowerClassifier(cfg, datamodule.classes, spec.to_dict(), input_mode="trunk")
    context = SimpleNamespace(config=cfg, datamodule=datamodule)
    caches, cache_s = feature_caches(context, module, spec)  # type: ignore[arg-type]
    features = {name: pooled(module, caches[name].inputs) for name in ("train", "val", "test")}
    labels = {name: caches[name].labels for name in ("train", "val", "test")}
    classes = len(datamodule.classes)
    rows = {}
    for c in args.c:
        started = time.perf_counter()
        head = fit_logistic(features["train"], labels["train"], classes, c)
        rows[str(c)] = {
            "val_accuracy": round(accuracy(head, features["val"], labels["val"]), 4),
            "test_accuracy": round(accuracy(head, features["test"], labels["test"]), 4),
            "fit_s": round(time.perf_counter() - started, 1),
        }
    # Ties on val go to the stronger regularisation (the earlier, smaller C).
    chosen = max(args.c, key=lambda c: (rows[str(c)]["val_accuracy"], -c))
    report = {
        "overrides": args.overrides, "train_rows": len(labels["train"]),
        "feature_dim": int(features["train"].shape[1]), "cache_s": round(cache_s, 1),
        "by_c": rows, "chosen_c": chosen, "chosen": rows[str(chosen)],
    }  # fmt: skip
    print(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
