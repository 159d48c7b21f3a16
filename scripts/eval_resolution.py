"""Does a trained model gain from a larger input at test time? (issue 14, "Resolution")

    python scripts/eval_resolution.py <run id | checkpoint> [--data-root data] [--out FILE]

Random-resized-crop training shows the network objects larger than the evaluation's centre
crop does, so a model often scores better when evaluated at a somewhat larger input than it
was trained at ("FixRes", Touvron et al., 2019), at no training cost. EfficientNet pools
globally, so the same weights run at any input size. Here the model predicts val and test
at its trained input size and three larger ones (+32 px each), with the trained centre-crop
fraction and with no crop (the whole shorter side); the setting is chosen on val (ties: the
trained setting, then the smaller input), then test is scored once with it. Every
setting's test accuracy is printed too, to show the ceiling, but only the val-chosen one is
the lever's result: choosing on test would be fitting it.

Needs a run whose val split did not train; prints one JSON object on one line, and writes
it indented to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowerclf.core.hardware import cpu_description
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.runs import load_trained, run_datamodule
from flowerclf.training.predict import image_runner, predict_loader

SIZE_STEPS_PX = (0, 32, 64, 96)
SPLITS = ("val", "test")


def settings(trained: PreprocessSpec) -> list[PreprocessSpec]:
    """The trained preprocessing first, then each larger input, with the trained crop and
    with none."""
    crops = dict.fromkeys((trained.crop_pct, 1.0))  # ordered, no duplicate when it is 1.0
    return [
        dataclasses.replace(trained, input_size=trained.input_size + step, crop_pct=crop)
        for step in SIZE_STEPS_PX
        for crop in crops
    ]


def choose(val_accuracies: list[float]) -> int:
    """Index of the best val accuracy; ties go to the earliest setting (the trained one
    first, then smaller inputs)."""
    return max(range(len(val_accuracies)), key=lambda i: (val_accuracies[i], -i))


def _accuracy(module: Any, config: Any, spec: PreprocessSpec, data_root: str | None) -> dict:
    datamodule = run_datamodule(config, spec, data_root)
    if "val" in datamodule.train_splits:
        raise SystemExit("val trained this run: nothing is left to choose the setting on")
    runner = image_runner(module.net, spec)
    scores = {}
    with torch.inference_mode():
        for split in SPLITS:
            predictions = predict_loader(runner, datamodule.loader(split), split)
            hits = predictions.probabilities.argmax(axis=1) == predictions.labels
            scores[split] = (float(np.mean(hits)), len(hits))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run id or checkpoint")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    trained = load_trained(args.run)
    module, config = trained.module, trained.settings
    grid = []
    for spec in settings(module.spec):
        started = time.perf_counter()
        scores = _accuracy(module, config, spec, args.data_root)
        grid.append({
            "input_size": spec.input_size, "crop_pct": spec.crop_pct,
            "val_accuracy": scores["val"][0], "test_accuracy": scores["test"][0],
            "test_images": scores["test"][1], "seconds": round(time.perf_counter() - started, 1),
        })  # fmt: skip
        print(json.dumps(grid[-1]), flush=True)
    chosen = grid[choose([row["val_accuracy"] for row in grid])]
    baseline = grid[0]
    result = {
        "run": args.run,
        "seed": config.seed,
        "count": baseline["test_images"],
        "trained": {"input_size": baseline["input_size"], "crop_pct": baseline["crop_pct"]},
        "chosen": {key: chosen[key] for key in ("input_size", "crop_pct", "val_accuracy")},
        "test_accuracy_trained": baseline["test_accuracy"],
        "test_accuracy_chosen": chosen["test_accuracy"],
        "gain_points": 100 * (chosen["test_accuracy"] - baseline["test_accuracy"]),
        "test_accuracy_best_on_test": max(row["test_accuracy"] for row in grid),
        "grid": grid,
        "hardware": cpu_description(),
        "command": f"python scripts/eval_resolution.py {args.run}",
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))  # last line, one object, like `flowerclf ... --json`


if __name__ == "__main__":
    main()
