"""``export_package``: a trained run or checkpoint -> one self-contained model directory.

The writer of the package format that :mod:`flowerclf.core.package_format` reads. The
directory holds the weights (safetensors), the ONNX model (checked against PyTorch on
real images), its int8 copy, a Triton repository, an MLflow pyfunc model, an optional
TensorRT engine, the class names and preprocessing spec (in ``flowerclf-model.json``), the
training config and metrics, and the embeddings of the training images (plus thumbnails)
for similarity search. Each part is one step of :mod:`flowerclf.export.steps`. The
package is written to a staging directory and renamed into place at the end, so a failed
export never leaves a half-written package behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flowerclf.core.errors import ExportError, UsageError
from flowerclf.core.fs import staged_directory
from flowerclf.core.package_format import ModelPackage, load_package
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.export.context import ExportContext, StepResult
from flowerclf.export.descriptor import write_descriptor
from flowerclf.export.options import ExportOptions
from flowerclf.export.steps import planned_steps
from flowerclf.runs import TrainedRun, load_trained, run_datamodule

__all__ = ["ExportOptions", "export_package"]

log = logging.getLogger(__name__)


def export_package(
    target: str,
    out: str | Path,
    options: ExportOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelPackage:
    """Export run id / checkpoint ``target`` into directory ``out``; returns the package.

    Raises:
        ExportError: the ONNX model disagrees with PyTorch beyond tolerance, or the
            dataset was re-split since training.
        FileExistsError: ``out`` is not empty and ``options.force`` is false.
        FileNotFoundError: no such run/checkpoint, or its dataset is missing.
    """
    options = options or ExportOptions()
    say = progress or log.info
    out = Path(out).expanduser().resolve()
    run = load_trained(target)
    run_tags = _run_tags(run)
    datamodule = run_datamodule(run.config, run.module.spec, options.data_root, num_workers=0)
    _check_same_dataset(run, run_tags, datamodule)
    if out.exists() and any(out.iterdir()) and not options.force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
    with staged_directory(out) as staging:
        context = ExportContext(run, run_tags, datamodule, staging, options, say)
        run_steps(context)
    say(f"package written to {out}")
    return load_package(out)


def run_steps(context: ExportContext) -> list[StepResult]:
    """Run the steps ``context.options`` asks for, then write the descriptor of it all."""
    results: list[StepResult] = []
    for step in planned_steps(context.options):
        if step.reads_package:
            write_descriptor(context, results)
        log.debug("export step %s", step.name)
        results.append(step.run(context))
    write_descriptor(context, results)
    return results


def _run_tags(run: TrainedRun) -> dict[str, str] | None:
    """The run's MLflow tags, or None when there is no run or the store does not have it
    (e.g. a checkpoint pulled with `dvc pull` into a clone whose mlflow.db never saw it)."""
    tracking_uri = run.settings.run.tracking_uri
    if not run.run_id or not tracking_uri:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return dict(MlflowClient(tracking_uri=tracking_uri).get_run(run.run_id).data.tags)
    except MlflowException:
        log.warning("run %s not found in %s", run.run_id, tracking_uri)
        return None


def _check_same_dataset(
    run: TrainedRun, run_tags: dict[str, str] | None, datamodule: FlowerDataModule
) -> None:
    """Refuse another dataset, or one re-split since training: its "test" images would be
    training images, and the parity, int8 and index checks would use the wrong split."""
    if datamodule.classes != list(run.module.classes):
        raise UsageError(
            f"the dataset at {datamodule.prepared_dir} does not have the model's classes"
        )
    trained_on = (run_tags or {}).get("flowerclf.manifest_sha256")
    manifest_sha256 = datamodule.manifest_sha256
    if trained_on and trained_on != manifest_sha256:
        raise ExportError(
            f"the prepared dataset changed since run {run.run_id} was trained (manifest "
            f"sha256 {manifest_sha256[:12]} != {trained_on[:12]}): re-prepare it with the run's "
            f"data settings and seed ({run.settings.data.name}, "
            f"seed={run.settings.seed}) so the parity, int8 and index use the right split"
        )
