"""flowerclf: end-to-end flower image classification.

Importing the package is cheap and has no side effects; heavy modules load on first use
(``from flowerclf import Classifier`` imports only the inference code).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("flowerclf")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from flowerclf.inference.classifier import Classifier, Neighbor, Prediction

__all__ = ["Classifier", "Neighbor", "Prediction", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Classifier", "Neighbor", "Prediction"):
        from flowerclf.inference import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'flowerclf' has no attribute {name!r}")
