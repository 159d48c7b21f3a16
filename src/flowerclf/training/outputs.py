"""What a trained network yields at the end of a run, for a single model and for an
ensemble of members alike: its predictions on every split the run reports, and the MLflow
PyTorch model logged to its run."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader

from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.metrics.report import Predictions
from flowerclf.models.runners import torch_runner
from flowerclf.training.features import CachedSplit, features_dataset
from flowerclf.training.module import FlowerClassifier
from flowerclf.training.predict import FromTrunk, image_runner, predict_loader

PREDICTED_SPLITS = ("train_eval", "val", "test")

__all__ = ["PREDICTED_SPLITS", "ProbabilityNet", "log_mlflow_model", "predict_splits"]


class ProbabilityNet(nn.Module):
    """Images -> class probabilities: the form the MLflow model serves."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits, _ = self.net(images)
        return logits.softmax(dim=1)


def predict_splits(
    module: FlowerClassifier,
    datamodule: FlowerDataModule,
    caches: Mapping[str, CachedSplit] | None,
) -> dict[str, Predictions]:
    if caches is not None:
        batch = module.config.trainer.cached_batch_size
        run = torch_runner(FromTrunk(module.net))
        return {
            name: predict_loader(
                run, DataLoader(features_dataset(caches[name]), batch_size=batch), name
            )
            for name in PREDICTED_SPLITS
        }
    run = image_runner(module.net, module.spec)
    predictions = {
        name: predict_loader(run, datamodule.loader(name), name) for name in PREDICTED_SPLITS
    }
    module.net.to("cpu")
    return predictions


def log_mlflow_model(
    module: FlowerClassifier, datamodule: FlowerDataModule, tracking_uri: str | None, run_id: str
) -> None:
    """Log the best network as an MLflow PyTorch model with signature and input example."""
    import mlflow
    import timm
    from mlflow.models import infer_signature

    spec: PreprocessSpec = module.spec
    model = ProbabilityNet(module.net).eval()
    examples = (
        datamodule.dataset("test") if datamodule.split_rows("test") else datamodule.dataset("all")
    )
    example = examples[0][0]
    example_np = example.unsqueeze(0).numpy()
    with torch.inference_mode():
        output = model(example.unsqueeze(0)).numpy()
    signature = infer_signature(example_np, output)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example_np,
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"timm=={timm.__version__}",
            ],
            metadata={"classes": list(module.classes), "preprocess": spec.to_dict()},
            # "pt2" (torch.export) would pin the batch size of the input example.
            serialization_format="pickle",
        )
