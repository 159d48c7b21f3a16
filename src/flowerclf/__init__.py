"""flowerclf: end-to-end flower image classification.

Importing the package is cheap and has no side effects; heavy modules load on first use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flowerclf")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
