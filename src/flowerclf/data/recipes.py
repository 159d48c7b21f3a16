"""Built-in dataset recipes: where a dataset comes from and how its files map to labels.

A recipe knows three things: the official files to download, how to turn a local source
(directory or archive) into the immutable raw copy under ``<root>/raw/<raw_name>``, and how
to list the raw copy as (relative path, class, official split) items. Validation,
de-duplication and splitting are generic and live elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from flowerclf.core.errors import ConfigError, DatasetLayoutError
from flowerclf.data.archive import extract_archive, is_archive
from flowerclf.data.download import RemoteFile

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawItem:
    """One file of the raw dataset: path relative to the raw directory, its class, its
    official split (``None`` when the dataset has none) or the reason it cannot be used."""

    path: str
    class_name: str | None
    official_split: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class RawListing:
    """Everything a recipe reads from a raw directory."""

    classes: list[str]
    items: list[RawItem]
    ignored_classes: list[str] = field(default_factory=list)
    has_official_split: bool = False


def _link_or_copy_tree(source: Path, destination: Path) -> None:
    """Mirror ``source`` into ``destination`` using hard links where the filesystem allows.

    Hard links make preparing a local copy nearly free; a copy is the fallback across
    filesystems. The raw directory is treated as read-only afterwards either way.
    """

    def link_or_copy(src: str, dst: str) -> str:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(source, destination, copy_function=link_or_copy, symlinks=False)


def _unwrap_single_folder(directory: Path, marker: Callable[[Path], bool]) -> Path:
    """Descend through wrapper folders (``flower_photos/``) until ``marker`` matches."""
    current = directory
    for _ in range(3):
        if marker(current):
            return current
        children = [p for p in current.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in children if p.is_dir()]
        if len(dirs) != 1:
            break
        current = dirs[0]
    return current if marker(current) else directory


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


class Recipe:
    """Base class; subclasses fill in the dataset specifics."""

    name: str = ""
    description: str = ""
    raw_name: str = ""
    remote_files: tuple[RemoteFile, ...] = ()
    citation: str = ""
    licence: str = ""

    def materialize(self, source: Path, raw_dir: Path) -> None:
        """Populate the (not yet existing) ``raw_dir`` from a local directory or archive."""
        raise NotImplementedError

    def list_items(self, raw_dir: Path) -> RawListing:
        """List the raw directory as items with classes."""
        raise NotImplementedError


class FolderRecipe(Recipe):
    """Any ``root/<class>/<images>`` tree; images may sit in nested sub-folders."""

    name = "folder"
    description = "any folder of class sub-folders: root/<class>/<image files>"
    raw_name = "folder"

    def __init__(self, classes: Sequence[str] | None = None) -> None:
        # ``None`` means every sub-folder is a class.
        self.classes = list(classes) if classes else None

    def _looks_like_root(self, directory: Path) -> bool:
        subdirs = [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if self.classes:
            return all((directory / c).is_dir() for c in self.classes)
        # A wrapper folder (flower_photos/) holds only folders; a class folder holds files.
        return any(
            child.is_file() and not child.name.startswith(".")
            for subdir in subdirs
            for child in subdir.iterdir()
        )

    def materialize(self, source: Path, raw_dir: Path) -> None:
        if is_archive(source):
            extracted = raw_dir.with_name(raw_dir.name + ".extract")
            extract_archive(source, extracted)
            try:
                root = _unwrap_single_folder(extracted, self._looks_like_root)
                if root == extracted:
                    extracted.rename(raw_dir)
                else:
                    root.rename(raw_dir)
            finally:
                shutil.rmtree(extracted, ignore_errors=True)
        elif source.is_dir():
            root = _unwrap_single_folder(source, self._looks_like_root)
            _link_or_copy_tree(root, raw_dir)
        else:
            raise DatasetLayoutError(f"{source} is neither a directory nor a supported archive")
        if not self._looks_like_root(raw_dir):
            wanted = f"class folders {self.classes}" if self.classes else "class sub-folders"
            found = sorted(p.name for p in raw_dir.iterdir())[:20]
            shutil.rmtree(raw_dir, ignore_errors=True)
            raise DatasetLayoutError(
                f"{source} does not contain {wanted} (found {found}); expected "
                f"<root>/<class>/<image files>"
            )

    def list_items(self, raw_dir: Path) -> RawListing:
        present = sorted(
            p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if self.classes:
            missing = [c for c in self.classes if c not in present]
            if missing:
                raise DatasetLayoutError(
                    f"{raw_dir}: class folders {missing} are missing (found {present})"
                )
            classes = list(self.classes)
        else:
            classes = present
        if not classes:
            raise DatasetLayoutError(f"{raw_dir} has no class sub-folders")
        items: list[RawItem] = []
        for class_name in classes:
            class_dir = raw_dir / class_name
            for path in sorted(class_dir.rglob("*")):
                if path.is_dir():
                    continue
                relative = path.relative_to(raw_dir)
                problem = None
                if path.is_symlink():
                    problem = "symbolic link (not followed)"
                elif _is_hidden(relative.relative_to(class_name)):
                    problem = "hidden file"
                items.append(RawItem(relative.as_posix(), class_name, None, problem))
        ignored = [c for c in present if c not in classes]
        return RawListing(classes=classes, items=items, ignored_classes=ignored)


class TFFlowersRecipe(FolderRecipe):
    """TensorFlow ``flower_photos``: 5 classes, 3670 photos from Flickr (CC-BY 2.0)."""

    name = "tf_flowers"
    description = "TensorFlow flower_photos: 5 classes, 3670 images (CC-BY 2.0)"
    raw_name = "tf_flowers"
    remote_files = (
        RemoteFile(
            url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
            filename="flower_photos.tgz",
            digest="4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
            algorithm="sha256",
            size=228_813_984,
        ),
    )
    licence = "CC-BY 2.0; photographers are credited in LICENSE.txt, which travels with the images"
    all_classes = ("daisy", "dandelion", "roses", "sunflowers", "tulips")

    def __init__(self, classes: Sequence[str] | None = None) -> None:
        super().__init__(classes or self.all_classes)
        unknown = [c for c in self.classes or [] if c not in self.all_classes]
        if unknown:
            raise ConfigError(
                f"unknown tf_flowers classes {unknown}; valid: {list(self.all_classes)}"
            )

    def _looks_like_root(self, directory: Path) -> bool:
        # The raw copy always holds all five classes, whichever subset a recipe trains on.
        return all((directory / c).is_dir() for c in self.all_classes)


class TFFlowers4Recipe(TFFlowersRecipe):
    """The 4-class subset daisy, dandelion, roses, sunflowers (2871 images)."""

    name = "tf_flowers4"
    description = "tf_flowers without tulips: daisy, dandelion, roses, sunflowers (2871 images)"

    def __init__(self, classes: Sequence[str] | None = None) -> None:
        super().__init__(classes or ("daisy", "dandelion", "roses", "sunflowers"))


def _oxford_class_names() -> list[str]:
    text = resources.files("flowerclf.data.resources").joinpath("oxford102_classes.json")
    return list(json.loads(text.read_text(encoding="utf-8"))["names"])


class Oxford102Recipe(Recipe):
    """Oxford 102 Category Flower Dataset with the official ``setid.mat`` split."""

    name = "oxford102"
    description = "Oxford Flowers-102: 102 classes, 8189 images, official split 1020/1020/6149"
    raw_name = "oxford102"
    _base = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
    remote_files = (
        RemoteFile(
            f"{_base}/102flowers.tgz",
            "102flowers.tgz",
            "52808999861908f626f3c1f4e79d11fa",
            "md5",
            344_862_509,
        ),
        RemoteFile(
            f"{_base}/imagelabels.mat", "imagelabels.mat", "e0620be6f572b9609742df49c70aed4d", "md5"
        ),
        RemoteFile(f"{_base}/setid.mat", "setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c", "md5"),
    )
    citation = (
        "M-E. Nilsback and A. Zisserman, Automated flower classification over a large number "
        "of classes, ICVGIP 2008"
    )
    licence = "none stated on the official page; research use; cite the paper"
    label_files = ("imagelabels.mat", "setid.mat")

    def __init__(self, swap_train_test: bool = False) -> None:
        self.swap_train_test = swap_train_test

    def materialize(self, source: Path, raw_dir: Path) -> None:
        directory = source.parent if source.is_file() else source
        archive = source if source.is_file() else directory / "102flowers.tgz"
        missing = [f for f in self.label_files if not (directory / f).is_file()]
        if missing:
            raise DatasetLayoutError(
                f"{directory} lacks {missing}; an Oxford-102 source is a directory with jpg/ "
                f"(or 102flowers.tgz), imagelabels.mat and setid.mat"
            )
        staging = raw_dir.with_name(raw_dir.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            if (directory / "jpg").is_dir() and not source.is_file():
                _link_or_copy_tree(directory / "jpg", staging / "jpg")
            elif archive.is_file():
                extract_archive(archive, staging / "extract")
                inner = _unwrap_single_folder(staging / "extract", lambda d: (d / "jpg").is_dir())
                (inner / "jpg").rename(staging / "jpg")
                shutil.rmtree(staging / "extract")
            else:
                raise DatasetLayoutError(f"{directory} has neither jpg/ nor 102flowers.tgz")
            for name in self.label_files:
                shutil.copy2(directory / name, staging / name)
            staging.rename(raw_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def list_items(self, raw_dir: Path) -> RawListing:
        from scipy.io import loadmat  # heavy import, only needed here

        labels = loadmat(raw_dir / "imagelabels.mat")["labels"].ravel().astype(int)
        setid = loadmat(raw_dir / "setid.mat")
        names = _oxford_class_names()
        if labels.min() < 1 or labels.max() > len(names):
            raise DatasetLayoutError(f"imagelabels.mat has labels outside 1..{len(names)}")
        train_key, test_key = ("tstid", "trnid") if self.swap_train_test else ("trnid", "tstid")
        official: dict[int, str] = {}
        for split, key in (("train", train_key), ("val", "valid"), ("test", test_key)):
            for image_id in setid[key].ravel().astype(int):
                official[int(image_id)] = split
        items: list[RawItem] = []
        seen: set[str] = set()
        for index, label in enumerate(labels, start=1):
            relative = f"jpg/image_{index:05d}.jpg"
            seen.add(relative)
            split = official.get(index)
            problem = None if split else "not in any official split (setid.mat)"
            items.append(RawItem(relative, names[label - 1], split, problem))
        for path in sorted((raw_dir / "jpg").iterdir()):
            relative = f"jpg/{path.name}"
            if relative not in seen:
                items.append(RawItem(relative, None, None, "no label in imagelabels.mat"))
        return RawListing(classes=names, items=items, has_official_split=True)


RECIPE_FACTORIES: dict[str, Callable[[Sequence[str] | None], Recipe]] = {
    "tf_flowers": TFFlowersRecipe,
    "tf_flowers4": TFFlowers4Recipe,
    "oxford102": lambda _classes: Oxford102Recipe(swap_train_test=False),
    "oxford102_swapped": lambda _classes: Oxford102Recipe(swap_train_test=True),
    "folder": FolderRecipe,
}
RECIPE_NAMES = tuple(RECIPE_FACTORIES)


def make_recipe(name: str, classes: Sequence[str] | None = None) -> Recipe:
    """Instantiate the recipe called ``name`` (one of :data:`RECIPE_NAMES`)."""
    if name not in RECIPE_FACTORIES:
        raise ConfigError(f"unknown dataset recipe {name!r}; valid: {sorted(RECIPE_FACTORIES)}")
    return RECIPE_FACTORIES[name](classes)
