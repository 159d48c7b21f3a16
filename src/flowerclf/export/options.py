"""What ``flowerclf export`` puts in a package: :class:`ExportOptions`."""

from __future__ import annotations

from dataclasses import dataclass

from flowerclf.core.errors import UsageError

INT8_CHOICES = ("static", "dynamic", "none")
TENSORRT_CHOICES = ("auto", "fp32", "fp16", "off")


@dataclass
class ExportOptions:
    """What to put in the package; defaults give the full package.

    Attributes:
        int8: ``static`` (calibrated QDQ), ``dynamic`` or ``none`` (no int8 model).
        tensorrt: ``auto`` builds an engine where a GPU and TensorRT exist; ``fp32`` and
            ``fp16`` insist on one; ``off`` never builds one.
        triton: write the Triton model repository.
        mlflow: save the pyfunc model in the package and log it to the training run.
        register_name: MLflow registered model name (default ``flowerclf-<package name>``).
        gallery: save thumbnails of the training images for similarity search results.
        parity_images: evaluation images the ONNX model is checked against PyTorch on.
        calibration_images: training images that calibrate static int8.
        force: replace a non-empty output directory.
        data_root: where the run's prepared dataset is now, if it moved.
        seed: seeds the choice of calibration images.
    """

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

    def __post_init__(self) -> None:
        if self.int8 not in INT8_CHOICES:
            raise UsageError(f"int8 must be one of {list(INT8_CHOICES)}, got {self.int8!r}")
        if self.tensorrt not in TENSORRT_CHOICES:
            raise UsageError(
                f"tensorrt must be one of {list(TENSORRT_CHOICES)}, got {self.tensorrt!r}"
            )
        if self.parity_images < 1 or self.calibration_images < 1:
            raise UsageError("parity_images and calibration_images must be >= 1")
