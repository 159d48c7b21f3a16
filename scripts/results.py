"""Re-make the README results table.

    python scripts/results.py run [ROW ...]   # train each ROWS row, save results/<row>.json
    python scripts/results.py table           # print the Markdown table
    python scripts/results.py readme          # put that table into README.md

Two kinds of rows, rendered only from files that commands wrote:
- the DVC pipeline's recipes (DVC_ROWS): test metrics from `reports/<recipe>/metrics.json`
  (the evaluate stage), wall-clock time and hardware from `runs/<recipe>/metrics.json` (the
  train stage), i.e. what `dvc metrics show` prints; re-made by `dvc repro`;
- other comparisons (ROWS): one `flowerclf train ... --json` command each, its JSON output
  stored verbatim in results/<row>.json by `run` (set FLOWERCLF_DATA_DIR, and
  FLOWERCLF_SOURCES when offline).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results"
COMMON = ["logger.experiment_name=flowerclf-results", "logger.log_model=false"]

ROWS: dict[str, list[str]] = {
    "tf_flowers-majority": ["data=tf_flowers", "model=majority"],
    "tf_flowers-lite0-ce_cosine": ["experiment=tf_flowers_fast", "loss=ce_cosine"],
    "tf_flowers-lite0-ce_supcon": ["experiment=tf_flowers_fast", "loss=ce_supcon"],
    "tf_flowers-lite0-ce_siglip": ["experiment=tf_flowers_fast", "loss=ce_siglip"],
    "tf_flowers-lite0-ce-heads_only": [
        "experiment=tf_flowers_fast", "loss=ce", "trainer.tail_blocks=0", "trainer.max_epochs=30",
        "trainer.early_stopping.patience=10",
    ],
    "tf_flowers-lite0-ce-strong_aug_tail2": [
        "experiment=tf_flowers_fast", "augment=strong", "trainer.tail_blocks=2",
        "trainer.cache_views=3",
    ],
    # Loss comparison repeated with training seeds 1 and 2 (same seed-42 split): how much of
    # the spread between losses is seed noise.
    **{
        f"tf_flowers-lite0-{loss}-seed{seed}": [
            "experiment=tf_flowers_fast", f"loss={loss}", f"seed={seed}"
        ]
        for seed in (1, 2)
        for loss in ("ce", "ce_cosine", "ce_supcon", "ce_siglip")
    },
    # EfficientNet-Lite2 (260 px) on the same fast path: the strongest weights reachable here.
    "tf_flowers-lite2-ce": ["experiment=tf_flowers_fast", "model=tf_efficientnet_lite2"],
    # Full fine-tuning on CPU (every layer trains, images decoded and augmented every epoch):
    # what the fast path is measured against.
    "tf_flowers-lite0-ce-full_finetune": [
        "data=tf_flowers", "model=tf_efficientnet_lite0", "trainer.accelerator=cpu",
        "trainer.max_epochs=5", "trainer.warmup_epochs=0.5", "augment.scale=[0.25,1.0]",
    ],
    "tf_flowers-simple_cnn-ce": [
        "data=tf_flowers", "model=simple_cnn", "model.preprocess.input_size=96",
        "trainer.accelerator=cpu", "trainer.max_epochs=6", "trainer.lr=0.003",
        "trainer.backbone_lr_mult=1.0",
    ],
    "tf_flowers4-majority": ["data=tf_flowers4", "model=majority"],
    "tf_flowers4-lite0-ce-strong_aug_tail2": [
        "experiment=tf_flowers4_fast", "augment=strong", "trainer.tail_blocks=2",
        "trainer.cache_views=3",
    ],
    "tf_flowers4-lite2-ce": ["experiment=tf_flowers4_fast", "model=tf_efficientnet_lite2"],
    "oxford102-majority": ["data=oxford102", "model=majority", "trainer.train_splits=[train,val]"],
    "oxford102-lite0-ce-strong_aug_tail2": [
        "experiment=oxford102_fast", "augment=strong", "trainer.tail_blocks=2",
        "trainer.cache_views=3",
    ],
    "oxford102-lite2-ce": ["experiment=oxford102_fast", "model=tf_efficientnet_lite2"],
}  # fmt: skip


# Table row -> DVC pipeline recipe (dvc.yaml, params.yaml) whose metrics files it shows.
DVC_ROWS = {
    "tf_flowers-lite0-ce": "tf_flowers",
    "tf_flowers4-lite0-ce": "tf_flowers4",
    "oxford102-lite0-ce": "oxford102",
}
ORDER = [
    "tf_flowers-majority", "tf_flowers-lite0-ce", "tf_flowers-lite0-ce_cosine",
    "tf_flowers-lite0-ce_supcon", "tf_flowers-lite0-ce_siglip",
    *(f"tf_flowers-lite0-{loss}-seed{seed}" for seed in (1, 2)
      for loss in ("ce", "ce_cosine", "ce_supcon", "ce_siglip")),
    "tf_flowers-lite0-ce-heads_only",
    "tf_flowers-lite0-ce-strong_aug_tail2", "tf_flowers-lite0-ce-full_finetune",
    "tf_flowers-lite2-ce", "tf_flowers-simple_cnn-ce",
    "tf_flowers4-majority",
    "tf_flowers4-lite0-ce", "tf_flowers4-lite0-ce-strong_aug_tail2", "tf_flowers4-lite2-ce",
    "oxford102-majority", "oxford102-lite0-ce", "oxford102-lite0-ce-strong_aug_tail2",
    "oxford102-lite2-ce",
]  # fmt: skip


def command(row: str) -> list[str]:
    return ["flowerclf", "-q", "train", *ROWS[row], *COMMON, "--json"]


def run(rows: list[str]) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    for row in rows or list(ROWS):
        if row not in ROWS:
            raise SystemExit(f"unknown row {row!r}; valid: {', '.join(ROWS)}")
        print(f"== {row}: {' '.join(command(row))}", file=sys.stderr, flush=True)
        # The installed CLI of this interpreter, whether or not its venv is on PATH.
        argv = [sys.executable, "-m", *command(row)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"{row} failed with exit code {done.returncode}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["command"] = " ".join(command(row)[:3] + ROWS[row])
        (RESULTS_DIR / f"{row}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"   test accuracy {result['metrics'].get('test/accuracy', float('nan')):.4f}, "
              f"{result['train_time_s']:.0f} s", file=sys.stderr)  # fmt: skip


def dvc_result(recipe: str) -> dict | None:
    """A DVC recipe's metrics in the shape of a results/<row>.json (None before `dvc repro`)."""
    evaluated = REPO / "reports" / recipe / "metrics.json"
    trained = REPO / "runs" / recipe / "metrics.json"
    if not evaluated.is_file() or not trained.is_file():
        return None
    test = json.loads(evaluated.read_text())
    train = json.loads(trained.read_text())
    return {
        "metrics": {f"test/{key}": value for key, value in test.items()},
        "train_time_s": train["train_time_s"],
        "hardware": train["hardware"],
        "command": f"dvc repro evaluate@{recipe}",
    }


def table() -> str:
    header = "dataset | model | loss | test acc | macro-F1 | CE | ECE | kNN acc | train time"
    lines = [f"| {header} | hardware | command |", "|---|---|---|" + "---:|" * 6 + "---|---|"]
    for row in ORDER:
        if row in DVC_ROWS:
            result = dvc_result(DVC_ROWS[row])
        else:
            path = RESULTS_DIR / f"{row}.json"
            result = json.loads(path.read_text()) if path.is_file() else None
        if result is None:
            continue
        m = result["metrics"]
        dataset, model, *loss = row.split("-")
        knn = m.get("test/knn_accuracy")
        lines.append(
            f"| {dataset} | {model} | {'-'.join(loss) or '-'} | {m['test/accuracy']:.4f} | "
            f"{m['test/macro_f1']:.4f} | {m['test/cross_entropy']:.3f} | {m['test/ece']:.3f} | "
            f"{'-' if knn is None else f'{knn:.4f}'} | {result['train_time_s']:.0f} s | "
            f"{result['hardware']} | `{result['command']}` |"
        )
    return "\n".join(lines)


def write_readme() -> None:
    readme = RESULTS_DIR.parent / "README.md"
    text = readme.read_text()
    start, end = "<!-- results-table:start -->", "<!-- results-table:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table()}\n{end}{tail}")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "table", "readme"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "run":
        run(sys.argv[2:])
    elif sys.argv[1] == "table":
        print(table())
    else:
        write_readme()
