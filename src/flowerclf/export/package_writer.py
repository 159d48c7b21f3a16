"""``export_package``: a trained run or checkpoint -> one self-contained model directory.

The directory holds the weights (safetensors), the ONNX model (checked against PyTorch on
real images), its int8 copy, a Triton repository, an MLflow pyfunc model, an optional
TensorRT engine, the class names and preprocessing spec (in ``flowerclf-model.json``), the
training config and metrics, and the embeddings of the training images (plus thumbnails)
for similarity search. It is written to a staging directory and renamed into place at the
end, so a failed export never leaves a half-written package behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from flowerclf import __version__
from flowerclf.core.errors import ExportError, UsageError
from flowerclf.core.fs import staged_directory
from flowerclf.core.imaging import load_rgb
from flowerclf.core.package_format import (
    CONFIG_FILE,
    DESCRIPTOR_FILE,
    EMBEDDINGS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    GALLERY_DIR,
    INPUT_NAME,
    METRICS_FILE,
    MLFLOW_DIR,
    ONNX_FILE,
    ONNX_INT8_FILE,
    TENSORRT_FILE,
    TRITON_DIR,
    WEIGHTS_FILE,
    ModelPackage,
    load_package,
)
from flowerclf.core.preprocess import PreprocessSpec, preprocess_eval
from flowerclf.data.datamodule import prepared_raw_dir
from flowerclf.data.manifest import ManifestRow
from flowerclf.export.mlflow_model import log_pyfunc, save_pyfunc
from flowerclf.export.onnx_export import check_parity, export_checked_onnx, run_onnx
from flowerclf.export.open_world import OpenWorldOptions, SplitOutputs, fit_open_world
from flowerclf.export.quantize import calibration_indices, compare_int8, quantize_int8
from flowerclf.export.tensorrt import TensorRTUnavailableError, build_engine
from flowerclf.export.triton import write_triton_repository
from flowerclf.runs import load_trained, run_datamodule

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128
INT8_CHOICES = ("static", "dynamic", "none")
TENSORRT_CHOICES = ("auto", "fp32", "fp16", "off")


@dataclass
class ExportOptions:
    """What to put in the package; defaults give the full package."""

    int8: str = "static"
    tensorrt: str = "auto"
    triton: bool = True
    mlflow: bool = True
    register_name: str | None = None
    gallery: bool = True
    parity_images: int = 50
    calibration_images: int = 256
    force: bool = False
    data_root: str | None = None
    seed: int = 0
    open_world: OpenWorldOptions = field(default_factory=OpenWorldOptions)  # issue 13

    def __post_init__(self) -> None:
        if self.int8 not in INT8_CHOICES:
            raise UsageError(f"int8 must be one of {list(INT8_CHOICES)}, got {self.int8!r}")
        if self.tensorrt not in TENSORRT_CHOICES:
            raise UsageError(
                f"tensorrt must be one of {list(TENSORRT_CHOICES)}, got {self.tensorrt!r}"
            )
        if self.parity_images < 1 or self.calibration_images < 1:
            raise UsageError("parity_images and calibration_images must be >= 1")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_rows(
    rows: Sequence[ManifestRow],
    raw_dir: Path,
    spec: PreprocessSpec,
    desc: str,
    thumbnails: Path | None = None,
) -> np.ndarray:
    """Preprocess manifest images (two decode threads); optionally write thumbnails."""

    def one(row: ManifestRow) -> np.ndarray:
        image = load_rgb(raw_dir / row.path)
        if thumbnails is not None:
            thumb = image.copy()
            thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BICUBIC)
            thumb.save(thumbnails / f"{row.id}.jpg", quality=85)
        return preprocess_eval(image, spec)

    with ThreadPoolExecutor(max_workers=2) as pool:
        arrays = list(tqdm(pool.map(one, rows), total=len(rows), desc=desc, unit="img"))
    return np.stack(arrays) if arrays else np.zeros((0, 3, spec.input_size, spec.input_size))


@dataclass
class _TrainedModel:
    net: Any
    config: dict[str, Any]
    classes: list[str]
    spec: PreprocessSpec
    checkpoint: Path
    run_id: str | None
    tracking_uri: str | None
    run_tags: dict[str, str] | None  # None: no run, or the run is not in the store


def _load_trained(target: str) -> _TrainedModel:
    trained = load_trained(target)
    module, run_id = trained.module, trained.run_id
    tracking_uri = trained.config.get("run", {}).get("tracking_uri")
    return _TrainedModel(
        net=module.net.eval(),
        config=trained.config,
        classes=list(module.classes),
        spec=module.spec,
        checkpoint=trained.checkpoint,
        run_id=run_id,
        tracking_uri=tracking_uri,
        run_tags=_run_tags(run_id, tracking_uri) if run_id and tracking_uri else None,
    )


def _run_tags(run_id: str, tracking_uri: str) -> dict[str, str] | None:
    """The run's tags, or None when the store does not have it (e.g. a checkpoint pulled
    with `dvc pull` into a clone whose mlflow.db never saw the run)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return dict(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags)
    except MlflowException:
        log.warning("run %s not found in %s", run_id, tracking_uri)
        return None


def _check_same_dataset(trained: _TrainedModel, manifest_sha256: str) -> None:
    """Refuse a dataset re-split since training: its "test" images would be training images."""
    trained_on = (trained.run_tags or {}).get("flowerclf.manifest_sha256")
    if trained_on and trained_on != manifest_sha256:
        raise ExportError(
            f"the prepared dataset changed since run {trained.run_id} was trained (manifest "
            f"sha256 {manifest_sha256[:12]} != {trained_on[:12]}): re-prepare it with the run's "
            f"data settings and seed ({trained.config['data']['name']}, "
            f"seed={trained.config['seed']}) so the parity, int8 and index use the right split"
        )


def export_package(
    target: str,
    out: str | Path,
    options: ExportOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelPackage:
    """Export run id / checkpoint ``target`` into directory ``out``; returns the package.

    Raises:
        ExportError: the ONNX model disagrees with PyTorch beyond tolerance.
        FileExistsError: ``out`` is not empty and ``options.force`` is false.
        FileNotFoundError: no such run/checkpoint, or its dataset is missing.
    """
    options = options or ExportOptions()
    say = progress or log.info
    out = Path(out).expanduser().resolve()
    trained = _load_trained(target)
    datamodule = run_datamodule(trained.config, trained.spec, options.data_root, num_workers=0)
    if datamodule.classes != trained.classes:
        raise UsageError(
            f"the dataset at {datamodule.prepared_dir} does not have the model's classes"
        )
    _check_same_dataset(trained, datamodule.manifest_sha256)
    if out.exists() and any(out.iterdir()) and not options.force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
    with staged_directory(out) as staging:
        descriptor = _write_package(staging, trained, datamodule, options, say)
        (staging / DESCRIPTOR_FILE).write_text(json.dumps(descriptor, indent=2) + "\n")
        if options.mlflow:
            _export_mlflow(staging, trained, datamodule, options, descriptor, say)
    say(f"package written to {out}")
    return load_package(out)


def _write_package(
    staging: Path,
    trained: _TrainedModel,
    datamodule: Any,
    options: ExportOptions,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from safetensors.torch import save_file

    started = time.perf_counter()
    spec, classes, config = trained.spec, trained.classes, trained.config
    raw_dir = prepared_raw_dir(datamodule.prepared_dir)
    files: dict[str, str] = {}
    checks: dict[str, Any] = {}

    state = {k: v.detach().contiguous() for k, v in trained.net.state_dict().items()}
    save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
    files["weights"] = WEIGHTS_FILE

    say("exporting ONNX (with onnx.checker full check)")
    onnx_path = export_checked_onnx(trained.net, staging / ONNX_FILE, spec.input_size)
    files["onnx"] = ONNX_FILE

    eval_split = "test" if datamodule.split_rows("test") else "val"
    eval_rows = datamodule.split_rows(eval_split)
    eval_images = decode_rows(eval_rows, raw_dir, spec, f"decode {eval_split}")
    eval_labels = np.asarray([r.label for r in eval_rows])
    parity = check_parity(trained.net, onnx_path, eval_images[: options.parity_images])
    checks["onnx_parity"] = parity.to_dict() | {"split": eval_split}
    say(
        f"ONNX vs PyTorch on {parity.num_images} {eval_split} images: top-1 agreement "
        f"{parity.top1_agreement:.3f}, max |dp| {parity.max_abs_prob_diff:.2e}"
    )
    if not parity.passed:
        raise ExportError(
            f"ONNX model disagrees with PyTorch: top-1 agreement {parity.top1_agreement:.3f}, "
            f"max probability difference {parity.max_abs_prob_diff:.2e} > {parity.atol}"
        )

    train_rows = [r for r in datamodule.rows if r.split in datamodule.train_splits]
    gallery = staging / GALLERY_DIR if options.gallery else None
    if gallery is not None:
        gallery.mkdir()
        files["gallery"] = GALLERY_DIR
    train_images = decode_rows(train_rows, raw_dir, spec, "decode training images", gallery)
    (train_embeddings,), _ = run_onnx(onnx_path, train_images, ["embeddings"])
    np.savez_compressed(
        staging / EMBEDDINGS_FILE,
        embeddings=train_embeddings.astype(np.float32),
        ids=np.asarray([r.id for r in train_rows], dtype=np.int64),
        labels=np.asarray([r.label for r in train_rows], dtype=np.int64),
        splits=np.asarray([r.split for r in train_rows]),
        paths=np.asarray([r.path for r in train_rows]),
        classes=np.asarray(classes),
    )
    files["embeddings"] = EMBEDDINGS_FILE

    # --- open world (issue 13): temperature + unknown-image rejection, fitted on val ---
    open_world_files, open_world = _fit_open_world(
        staging, onnx_path, datamodule, raw_dir, spec, train_embeddings, train_rows, options
    )
    files |= open_world_files
    # --- end open world ---

    if options.int8 != "none":
        chosen = calibration_indices(len(train_images), options.calibration_images, options.seed)
        calibration, count = train_images[chosen], len(chosen)
        say(f"int8 ({options.int8}) quantisation, calibrated on {count} training images")
        quantize_int8(onnx_path, staging / ONNX_INT8_FILE, calibration, options.int8)
        files["onnx_int8"] = ONNX_INT8_FILE
        report = compare_int8(
            onnx_path, staging / ONNX_INT8_FILE, eval_images, eval_labels, options.int8, count
        )
        checks["int8"] = report.to_dict() | {"split": eval_split}
        say(
            f"int8 on {report.num_images} {eval_split} images: accuracy {report.int8_accuracy:.4f}"
            f" vs fp32 {report.fp32_accuracy:.4f}, {report.speedup:.2f}x fp32 throughput"
        )

    embedding_dim = int(train_embeddings.shape[1])
    if options.triton:
        write_triton_repository(staging / TRITON_DIR, onnx_path, classes, spec, embedding_dim)
        files["triton"] = TRITON_DIR

    checks["tensorrt"] = _export_tensorrt(staging, onnx_path, spec, options, files, say)

    import yaml

    (staging / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    files["config"] = CONFIG_FILE
    metrics = _run_metrics(config, trained.checkpoint)
    (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    files["metrics"] = METRICS_FILE

    model_cfg = config["model"]
    run_id = trained.run_id
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": f"{config['data']['name']}-{model_cfg['name']}",
        "version": run_id or sha256_file(staging / WEIGHTS_FILE)[:12],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "flowerclf_version": __version__,
        "classes": classes,
        "preprocess": spec.to_dict(),
        "model": {
            "name": model_cfg["name"],
            "arch": model_cfg["arch"],
            "embedding_dim": embedding_dim,
            "drop_rate": float(model_cfg.get("drop_rate", 0.0)),
            "pretrained": False,
            "weights": None,
        },
        "inputs": {INPUT_NAME: {"dtype": "float32", "shape": [-1, 3, spec.input_size,
                                                               spec.input_size]}},
        "outputs": {
            "probabilities": {"dtype": "float32", "shape": [-1, len(classes)]},
            "logits": {"dtype": "float32", "shape": [-1, len(classes)]},
            "embeddings": {"dtype": "float32", "shape": [-1, embedding_dim]},
        },
        "files": files,
        "open_world": open_world,
        "sha256": {key: sha256_file(staging / name) for key, name in files.items()
                   if (staging / name).is_file()},
        "metrics": metrics,
        "checks": checks,
        "source": {
            "run_id": run_id,
            "tracking_uri": trained.tracking_uri,
            "checkpoint": str(trained.checkpoint),
            "dataset": config["data"]["name"],
            "manifest_sha256": datamodule.manifest_sha256,
            "train_splits": list(datamodule.train_splits),
            "image_root": str(raw_dir),
        },
        "export_time_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def _fit_open_world(
    staging: Path,
    onnx_path: Path,
    datamodule: Any,
    raw_dir: Path,
    spec: PreprocessSpec,
    train_embeddings: np.ndarray,
    train_rows: Sequence[ManifestRow],
    options: ExportOptions,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Issue 13: the ONNX model's validation logits/embeddings -> :func:`fit_open_world`."""
    val_rows = datamodule.split_rows("val")
    val_images = decode_rows(val_rows, raw_dir, spec, "decode val (calibration, rejection)")
    (logits, embeddings), _ = run_onnx(onnx_path, val_images, ["logits", "embeddings"])
    validation = SplitOutputs(logits, embeddings, np.asarray([r.label for r in val_rows]))
    return fit_open_world(
        staging, validation, train_embeddings, np.asarray([r.label for r in train_rows]),
        datamodule.classes, options.open_world,
        fitted_on_training_images="val" in datamodule.train_splits,
    )  # fmt: skip


def _run_metrics(config: dict[str, Any], checkpoint: Path) -> dict[str, float]:
    run_dir = config.get("run", {}).get("dir")
    for candidate in (Path(run_dir) if run_dir else None, checkpoint.parent.parent):
        if candidate is not None and (candidate / METRICS_FILE).is_file():
            return dict(json.loads((candidate / METRICS_FILE).read_text()))
    return {}


def _export_tensorrt(
    staging: Path,
    onnx_path: Path,
    spec: PreprocessSpec,
    options: ExportOptions,
    files: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    if options.tensorrt == "off":
        return {"built": False, "reason": "disabled (--tensorrt off)"}

    try:
        build_engine(
            onnx_path, staging / TENSORRT_FILE, spec.input_size, fp16=options.tensorrt == "fp16"
        )
    except TensorRTUnavailableError as exc:
        if options.tensorrt != "auto":  # explicitly asked for: fail loudly
            raise
        say(f"{exc}; skipping the TensorRT engine")
        return {"built": False, "reason": str(exc)}
    files["tensorrt"] = TENSORRT_FILE
    return {"built": True, "fp16": options.tensorrt == "fp16"}


def _export_mlflow(
    staging: Path,
    trained: _TrainedModel,
    datamodule: Any,
    options: ExportOptions,
    descriptor: dict[str, Any],
    say: Callable[[str], None],
) -> None:

    package = load_package(staging)
    example_rows = datamodule.split_rows("test") or datamodule.rows
    example = (prepared_raw_dir(datamodule.prepared_dir) / example_rows[0].path).read_bytes()
    save_pyfunc(package, staging / MLFLOW_DIR, example)
    descriptor["files"]["mlflow"] = MLFLOW_DIR
    info: dict[str, Any] = {"local": MLFLOW_DIR}
    tracking_uri = trained.tracking_uri
    if trained.run_id and tracking_uri and trained.run_tags is None:
        say(f"run {trained.run_id} is not in {tracking_uri}: pyfunc saved in the package only")
        info["logged"] = f"run {trained.run_id} not found in {tracking_uri}; saved locally only"
    elif trained.run_id and tracking_uri:
        name = options.register_name or f"flowerclf-{descriptor['name']}"
        say(f"logging the pyfunc model to run {trained.run_id} and registering it as {name}")
        info |= log_pyfunc(package, trained.run_id, tracking_uri, name, example)
    else:
        info["logged"] = "no MLflow run known for this checkpoint; saved locally only"
    descriptor["mlflow"] = info
    (staging / DESCRIPTOR_FILE).write_text(json.dumps(descriptor, indent=2) + "\n")
