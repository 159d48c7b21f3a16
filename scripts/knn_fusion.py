"""Does fusing the classifier with kNN over its own embeddings gain accuracy? (issue 14)

    python scripts/knn_fusion.py <run id | checkpoint> [--data-root data] [--out FILE]

The lever issue 14 lists as "a kNN-on-embeddings / classifier fusion": every run already
saves the L2-normalised embeddings of its images (``embeddings.npz``) and reports the kNN
accuracy over them. Here the model predicts val and test; a cosine kNN over the embeddings
of the rows it trained on gives each image a class-vote distribution (similarity-weighted,
as :func:`flowerclf.metrics.embeddings.knn_predict` votes); the fused prediction is
``(1 - w) * p_classifier + w * p_knn``. The weight ``w`` and the neighbour count ``k`` are
chosen on val (ties: the smaller ``w``, then the run's own ``k``), then test is scored
once with them. The test accuracy of every (k, w) is printed too, to show the ceiling, but
only the val-chosen pair is the lever's result: choosing on test would be fitting it.

Needs a run whose val split did not train (val picks w); prints one JSON object on one
line, and writes it indented to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from flowerclf.core.hardware import cpu_description
from flowerclf.metrics.embeddings import EMBEDDINGS_FILE
from flowerclf.runs import load_trained, run_datamodule
from flowerclf.training.predict import image_runner, predict_loader

WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))
NEIGHBOURS = (5, 10, 20, 50)


def knn_votes(
    query: np.ndarray, reference: np.ndarray, reference_labels: np.ndarray, k: int, classes: int
) -> np.ndarray:
    """Per query, the similarity-weighted votes of its ``k`` nearest references, summing
    to 1 (the distribution whose argmax ``knn_predict`` returns)."""
    k = min(k, len(reference))
    sims = query @ reference.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    votes = np.zeros((len(query), classes))
    weights = np.maximum(np.take_along_axis(sims, top, axis=1), 0) + 1e-6
    np.add.at(votes, (np.arange(len(query))[:, None], reference_labels[top]), weights)
    return votes / votes.sum(axis=1, keepdims=True)


def accuracy_grid(
    probabilities: np.ndarray, votes: dict[int, np.ndarray], labels: np.ndarray
) -> dict[int, list[float]]:
    """k -> accuracy of the fused prediction for each weight in :data:`WEIGHTS`."""
    return {
        k: [
            float((((1 - w) * probabilities + w * v).argmax(axis=1) == labels).mean())
            for w in WEIGHTS
        ]
        for k, v in votes.items()
    }


def choose(grid: dict[int, list[float]], own_k: int) -> tuple[int, float]:
    """The (k, w) with the best val accuracy; ties go to the smaller w, then the run's k."""
    best = max(
        ((acc, -i, k == own_k, k) for k, row in grid.items() for i, acc in enumerate(row)),
    )
    return best[3], WEIGHTS[-best[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run id or checkpoint")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    trained = load_trained(args.run)
    module, config = trained.module, trained.settings
    datamodule = run_datamodule(config, module.spec, args.data_root)
    if "val" in datamodule.train_splits:
        raise SystemExit("val trained this run: nothing is left to choose the fusion weight on")
    run_dir = Path(config.run.dir or trained.checkpoint.parent.parent)
    if not (run_dir / EMBEDDINGS_FILE).is_file():
        run_dir = trained.checkpoint.parent.parent
    saved = np.load(run_dir / EMBEDDINGS_FILE)
    reference_mask = np.isin(saved["ids"], [r.id for r in datamodule.training_rows()])
    reference = saved["embeddings"][reference_mask]
    reference_labels = saved["labels"][reference_mask]
    runner = image_runner(module.net, module.spec)
    started = time.perf_counter()
    grids: dict[str, dict[int, list[float]]] = {}
    counts: dict[str, int] = {}
    with torch.inference_mode():
        for split in ("val", "test"):
            predictions = predict_loader(runner, datamodule.loader(split), split)
            counts[split] = len(predictions.labels)
            votes = {
                k: knn_votes(
                    predictions.embeddings, reference, reference_labels, k, len(module.classes)
                )
                for k in NEIGHBOURS
            }
            grids[split] = accuracy_grid(predictions.probabilities, votes, predictions.labels)
    own_k = config.trainer.knn_k
    k, w = choose(grids["val"], own_k)
    test = grids["test"]
    result = {
        "run": args.run,
        "seed": config.seed,
        "count": counts["test"],
        "reference_images": int(reference_mask.sum()),
        "chosen": {"k": k, "weight": w, "val_accuracy": grids["val"][k][WEIGHTS.index(w)]},
        "test_accuracy_classifier": test[own_k][0],
        "test_accuracy_knn": test[own_k][-1],
        "test_accuracy_fused": test[k][WEIGHTS.index(w)],
        "gain_points": 100 * (test[k][WEIGHTS.index(w)] - test[own_k][0]),
        "test_accuracy_best_on_test": max(max(row) for row in test.values()),
        "weights": list(WEIGHTS),
        "val_grid": grids["val"],
        "test_grid": test,
        "seconds": round(time.perf_counter() - started, 1),
        "hardware": cpu_description(),
        "command": f"python scripts/knn_fusion.py {args.run}",
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))  # one line, like `flowerclf ... --json`


if __name__ == "__main__":
    main()
