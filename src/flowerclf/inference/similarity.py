"""Approximate nearest-neighbour search for large galleries, with FAISS.

Below :data:`ANN_THRESHOLD` embeddings, exact search (one matrix product) is fast and
exact, so it is what :meth:`flowerclf.Classifier.similar` and ``/v1/similar`` use. Above
it, the gallery is searched through a FAISS index: HNSW (a graph; no training, high recall,
the default) or IVF-flat (inverted lists; faster to build, for the largest collections).
Both search by inner product on L2-normalised vectors, i.e. by cosine similarity, and
return the same scores exact search would for the neighbours they find.

FAISS is optional (``pip install 'flowerclf[index]'``): without it a large gallery is
searched exactly, with a warning.

A similarity index directory, as ``flowerclf index build`` writes it::

    DIR/embeddings.npz   rows: embeddings, ids, labels, paths, classes (the package format)
    DIR/ann.faiss        the FAISS index over the same rows, in the same order
    DIR/index.json       what was built: kind, parameters, count, dimension, source
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from flowerclf.core.errors import MissingExtraError, PackageError, UsageError
from flowerclf.core.package_format import ModelPackage

log = logging.getLogger(__name__)

ANN_THRESHOLD = 50_000  # gallery rows from which the approximate index is used
KINDS = ("hnsw", "ivf")
ITEMS_FILE = "embeddings.npz"
ANN_FILE = "ann.faiss"
META_FILE = "index.json"
FORMAT_NAME = "flowerclf-similarity-index"
FORMAT_VERSION = 1
_IVF_TRAINING_PER_LIST = 64  # k-means training points per inverted list
_IVF_MIN_POINTS_PER_LIST = 39  # fewer and FAISS warns that its k-means is under-trained


@dataclass(frozen=True)
class AnnSettings:
    """How an approximate index is built and searched.

    Args:
        kind: ``hnsw`` or ``ivf``.
        hnsw_m: graph neighbours per node (memory and recall grow with it).
        ef_construction: candidate list while building the graph.
        ef_search: candidate list while searching (recall vs speed; at least ``k``).
        nlist: inverted lists for ``ivf`` (default: about ``4 * sqrt(rows)``, and at most
            one per 39 rows, the fewest training points FAISS's k-means accepts per list).
        nprobe: lists visited per query for ``ivf``.
    """

    kind: str = "hnsw"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int | None = None
    nprobe: int = 32

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown index kind {self.kind!r}; valid: {', '.join(KINDS)}")
        numbers = {
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "nlist": self.nlist or 1,
        }
        for name, value in numbers.items():  # fmt: skip
            if value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")


def require_faiss() -> Any:
    """The ``faiss`` module, or a one-line install hint."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise MissingExtraError(
            "approximate similarity search needs FAISS: pip install 'flowerclf[index]'"
        ) from None


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


class AnnIndex:
    """A FAISS inner-product index over L2-normalised rows (row numbers are the ids)."""

    def __init__(self, index: Any, settings: AnnSettings) -> None:
        self.index = index
        self.settings = settings

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, embeddings: np.ndarray, settings: AnnSettings | None = None) -> AnnIndex:
        """Index ``embeddings`` ``(N, D)`` (L2-normalised float32 rows, in row order)."""
        faiss = require_faiss()
        settings = settings or AnnSettings()
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise UsageError(f"need a non-empty (N, D) array of embeddings, got {vectors.shape}")
        started = perf_counter()
        dim = vectors.shape[1]
        if settings.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = settings.ef_construction
        else:
            nlist = min(settings.nlist or _default_nlist(len(vectors)), len(vectors))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(_training_sample(vectors, nlist))
        index.add(vectors)
        log.info("built a %s index of %d x %d in %.1f s", settings.kind, len(vectors), dim,
                 perf_counter() - started)  # fmt: skip
        return cls(index, settings)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``(Q, k)``, best first; a row of -1 (score -inf) where
        the index found fewer than ``k`` neighbours. Safe to call from several threads: the
        search parameters travel with each call instead of being set on the index."""
        k = max(1, min(k, self.count))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return self.index.search(queries, k, params=self._search_parameters(k))

    def _search_parameters(self, k: int) -> Any:
        faiss = require_faiss()
        if self.settings.kind == "hnsw":  # HNSW returns at most efSearch results
            return faiss.SearchParametersHNSW(efSearch=max(self.settings.ef_search, k))
        return faiss.SearchParametersIVF(nprobe=self.settings.nprobe)

    def save(self, path: Path) -> None:
        require_faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, settings: AnnSettings) -> AnnIndex:
        try:
            index = require_faiss().read_index(str(path))
        except RuntimeError as exc:  # FAISS reports a damaged file as a RuntimeError
            raise PackageError(f"{path} is not a readable FAISS index ({exc})") from None
        return cls(index, settings)


def _default_nlist(rows: int) -> int:
    return max(1, min(65_536, int(4 * math.sqrt(rows)), rows // _IVF_MIN_POINTS_PER_LIST))


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    wanted = nlist * _IVF_TRAINING_PER_LIST
    if len(vectors) <= wanted:
        return vectors
    chosen = np.random.default_rng(0).choice(len(vectors), size=wanted, replace=False)
    return vectors[np.sort(chosen)]


def exact_search(
    embeddings: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)`` of the ``k`` best rows by inner product, best first (ties by row)."""
    k = max(1, min(k, len(embeddings)))
    scores = queries @ embeddings.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.empty_like(top)
    best = np.empty(top.shape, dtype=scores.dtype)
    for i, (row, candidates) in enumerate(zip(scores, top, strict=True)):
        ordered = candidates[np.argsort(-row[candidates], kind="stable")]
        rows[i], best[i] = ordered, row[ordered]
    return best, rows


def index_meta(path: Path) -> dict[str, Any]:
    """The ``index.json`` of a similarity index directory."""
    meta_path = Path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(
            f"{path} is not a similarity index (no {META_FILE}; write one with "
            "`flowerclf index build`)"
        ) from None
    except ValueError as exc:
        raise PackageError(f"{meta_path} is damaged ({exc})") from None
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise PackageError(f"{meta_path} is not a {FORMAT_NAME} v{FORMAT_VERSION} description")
    return dict(meta)


def check_index_model(meta: dict[str, Any], package: ModelPackage) -> None:
    """Refuse an index whose embeddings another model (or model version) computed: its
    vectors live in another space, so every neighbour would be meaningless."""
    model = (meta.get("source") or {}).get("model") or {}
    version = model.get("version")
    if version is not None and (model.get("name"), version) != (package.name, package.version):
        raise PackageError(
            f"the similarity index was built from embeddings of {model.get('name')} version "
            f"{version}, not of this package ({package.name} version {package.version}); "
            "score the collection with this package and build the index again"
        )


def write_index_dir(
    out: Path,
    *,
    embeddings: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    paths: np.ndarray,
    classes: list[str],
    settings: AnnSettings,
    source: dict[str, Any],
) -> dict[str, Any]:
    """Build the FAISS index over ``embeddings`` and write the directory; its description."""
    out.mkdir(parents=True, exist_ok=True)
    started = perf_counter()
    ann = AnnIndex.build(embeddings, settings)
    build_s = perf_counter() - started
    np.savez(out / ITEMS_FILE, embeddings=embeddings.astype(np.float32), ids=ids,
             labels=labels, paths=paths, classes=np.array(classes))  # fmt: skip
    ann.save(out / ANN_FILE)
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "count": ann.count,
        "dim": ann.dim, "metric": "inner_product (cosine on L2-normalised rows)",
        "settings": asdict(settings), "build_s": round(build_s, 3),
        "threshold": ANN_THRESHOLD, "source": source,
    }  # fmt: skip
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def attach_ann(gallery: Any, directory: Path | None, threshold: int | None = None) -> None:
    """Give ``gallery`` (an :class:`~flowerclf.inference.classifier.EmbeddingIndex`) an
    approximate index when it has at least ``threshold`` rows (default
    :data:`ANN_THRESHOLD`): the one saved in ``directory`` if there is one, else one built
    now. Below the threshold, or without FAISS (a warning), the gallery keeps exact
    search."""
    rows = len(gallery.ids)
    if rows < (ANN_THRESHOLD if threshold is None else threshold):
        return
    if not faiss_available():
        log.warning("a gallery of %d images is searched exactly: FAISS is not installed "
                    "(pip install 'flowerclf[index]')", rows)  # fmt: skip
        return
    saved = directory / ANN_FILE if directory is not None else None
    if saved is not None and saved.is_file():
        settings = AnnSettings(**index_meta(directory)["settings"])
        ann = AnnIndex.load(saved, settings)
        if ann.count != rows:
            raise PackageError(f"{saved} indexes {ann.count} rows, the gallery has {rows}")
    else:
        ann = AnnIndex.build(gallery.embeddings)
    gallery.ann = ann
