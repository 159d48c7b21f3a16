"""The model package format: one directory, one JSON descriptor, every file it names.

``flowerclf-model.json`` is the single source of truth for class names and preprocessing;
every runtime (Python API, CLI, REST service, Triton, MLflow) reads them from it.

Loading a package checks that it holds only its own files: every path the descriptor names
is relative, stays inside the package and contains no symbolic link (nor does any
directory it names, e.g. ``gallery/``). With ``verify`` (the default) every file that has a
recorded sha256 is hashed and compared, so a file overwritten or damaged since export is
refused with an error naming it. The descriptor records checksums in two optional maps:
``sha256`` (file key in ``files`` -> digest, written by every export) and ``sha256_tree``
(path relative to the package -> digest, for the files inside the exported directories).
Checksums detect accidents and tampering with individual files; whoever can rewrite the
descriptor can rewrite its checksums too, so they are no signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from flowerclf.core.errors import PackageError, PackageIntegrityError
from flowerclf.core.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

DESCRIPTOR_FILE = "flowerclf-model.json"
FORMAT_NAME = "flowerclf-model"
FORMAT_VERSION = 1

WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
# OpenVINO int8 (NNCF): the graph and its weights, two files that must stay side by side.
OPENVINO_INT8_FILE = "model.openvino_int8.xml"
OPENVINO_INT8_WEIGHTS_FILE = "model.openvino_int8.bin"
EMBEDDINGS_FILE = "embeddings.npz"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
GALLERY_DIR = "gallery"
TRITON_DIR = "triton"
TENSORRT_FILE = "model.plan"
MLFLOW_DIR = "mlflow_model"

INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "logits", "embeddings")

SHA256_KEY = "sha256"  # file key -> hex digest
SHA256_TREE_KEY = "sha256_tree"  # relative path -> hex digest (files inside directories)
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Verification:
    """What :func:`load_package` checked, by path relative to the package root."""

    verified: tuple[str, ...] = ()  # hashed, and equal to the recorded sha256
    unverified: tuple[str, ...] = ()  # present, but the descriptor records no sha256
    skipped: bool = False  # ``verify=False``: nothing was hashed

    def summary(self) -> str:
        """``gallery/ (48 files), model.plan``: the unverified files, directories counted."""
        groups: dict[str, int] = {}
        for relative in self.unverified:
            head, _, rest = relative.partition("/")
            key = f"{head}/" if rest else head
            groups[key] = groups.get(key, 0) + 1
        return ", ".join(
            f"{name} ({count} files)" if name.endswith("/") else name
            for name, count in sorted(groups.items())
        )


@dataclass(frozen=True)
class ModelPackage:
    """A loaded descriptor plus the directory it lives in."""

    root: Path
    descriptor: dict[str, Any]
    verification: Verification = field(default=Verification(skipped=True), compare=False)

    @property
    def classes(self) -> list[str]:
        return list(self.descriptor["classes"])

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.descriptor["preprocess"])

    @property
    def name(self) -> str:
        return str(self.descriptor["name"])

    @property
    def version(self) -> str:
        return str(self.descriptor["version"])

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.descriptor.get("metrics", {}))

    def file(self, key: str) -> Path | None:
        """Absolute path of a named file (``onnx``, ``weights``...), or None if not exported."""
        relative = self.descriptor.get("files", {}).get(key)
        return self.root / relative if relative else None

    def require(self, key: str) -> Path:
        path = self.file(key)
        if path is None:
            raise PackageError(f"the model package {self.root} has no {key} export")
        if not path.exists():
            raise PackageError(f"{path} is named in {DESCRIPTOR_FILE} but missing")
        return path

    def member(self, relative: str) -> Path | None:
        """The regular file ``relative`` inside the package, or None if there is none.

        For files looked up after loading (a gallery thumbnail by id): a name that leaves
        the package or passes through a symbolic link raises :class:`PackageIntegrityError`.
        """
        path = confined_path(self.root, relative, "requested file")
        return path if path.is_file() else None

    def public_info(self) -> dict[str, Any]:
        """What a service may show about the model (no local paths)."""
        keep = ("name", "version", "created", "flowerclf_version", "classes", "preprocess",
                "model", "metrics", "checks", "inputs", "outputs")  # fmt: skip
        return {k: self.descriptor[k] for k in keep if k in self.descriptor}


def load_package(path: str | Path, verify: bool = True) -> ModelPackage:
    """Read and check ``path/flowerclf-model.json`` and the files it names.

    Args:
        path: the package directory (it may itself be reached through a symbolic link).
        verify: hash every file with a recorded sha256 and compare (off: development only;
            paths and links are checked either way).

    Raises:
        PackageIntegrityError: a named path is absolute, contains ``..`` or a symbolic link,
            or a file is missing or differs from its recorded sha256 (the message names it).
        PackageError: the directory is not a package this flowerclf can read.
    """
    root = Path(path).expanduser()
    descriptor_path = root / DESCRIPTOR_FILE
    if not root.is_dir():
        raise PackageError(f"model package {root} does not exist or is not a directory")
    if descriptor_path.is_symlink():
        raise PackageIntegrityError(f"{descriptor_path} is a symbolic link; refusing to follow it")
    if not descriptor_path.is_file():
        raise PackageError(
            f"{root} is not a flowerclf model package: {DESCRIPTOR_FILE} not found "
            f"(create one with `flowerclf export <run id | checkpoint> --out {root}`)"
        )
    try:
        descriptor = json.loads(descriptor_path.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{descriptor_path} is not valid JSON: {exc}") from None
    check_descriptor(descriptor, descriptor_path)
    root = root.resolve()
    members = package_members(root, descriptor)
    verification = (
        verify_checksums(root, descriptor, members) if verify else Verification(skipped=True)
    )
    _report(root, descriptor, verification)
    return ModelPackage(root, descriptor, verification)


def _report(root: Path, descriptor: Mapping[str, Any], verification: Verification) -> None:
    """Say what was not verified: a warning for a file the descriptor names directly (the
    model itself, in a package exported without checksums), a note for files inside its
    directories (packages exported before ``sha256_tree`` existed)."""
    if verification.skipped:
        log.warning("model package %s loaded without checksum verification", root)
        return
    if not verification.unverified:
        return
    named = {PurePosixPath(relative).as_posix() for relative in descriptor["files"].values()}
    level = logging.WARNING if named & set(verification.unverified) else logging.INFO
    log.log(
        level,
        "model package %s: no sha256 recorded for %s; those files were not verified",
        root,
        verification.summary(),
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (bounded memory for any size)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def confined_path(root: Path, relative: str, where: str) -> Path:
    """``root / relative`` after checking it cannot leave ``root`` (a resolved directory).

    Refused: absolute paths (POSIX or Windows), ``..`` components, backslashes, and any
    component that is a symbolic link (the file itself or a directory on the way).
    """
    if not isinstance(relative, str) or not relative.strip():
        raise PackageIntegrityError(f"{where}: {relative!r} is not a relative file name")
    pure = PurePosixPath(relative)
    windows = PureWindowsPath(relative)
    if pure.is_absolute() or windows.is_absolute() or windows.drive or "\\" in relative:
        raise PackageIntegrityError(
            f"{where}: {relative!r} is not a path relative to the package (absolute paths "
            f"and backslashes are refused)"
        )
    if ".." in pure.parts or not pure.parts:
        raise PackageIntegrityError(f"{where}: {relative!r} leaves the package ('..')")
    path = root
    for part in pure.parts:
        path = path / part
        if path.is_symlink():
            raise PackageIntegrityError(
                f"{where}: {relative} is a symbolic link ({path} -> {path.readlink()}); a "
                f"package must hold its own files"
            )
    if not path.resolve().is_relative_to(root):  # belt and braces: nothing above slips out
        raise PackageIntegrityError(f"{where}: {relative!r} resolves outside {root}")
    return path


def _walk_files(root: Path, directory: Path) -> Iterator[str]:
    """Every regular file under ``directory`` (relative to ``root``); links are refused."""
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = Path(entry.path)
            relative = path.relative_to(root).as_posix()
            if entry.is_symlink():
                raise PackageIntegrityError(
                    f"{relative} in {root} is a symbolic link (-> {path.readlink()}); a "
                    f"package must hold its own files"
                )
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_files(root, path)
            elif entry.is_file(follow_symlinks=False):
                yield relative
            else:
                raise PackageIntegrityError(f"{relative} in {root} is not a regular file")


def package_members(root: Path, descriptor: Mapping[str, Any]) -> list[str]:
    """The files the descriptor names (directories expanded), relative to ``root``.

    Every path is checked with :func:`confined_path`; a named file that does not exist is
    left out here (:meth:`ModelPackage.require` or the checksum check report it).
    """
    members: list[str] = []
    for key, relative in descriptor["files"].items():
        path = confined_path(root, relative, f"{DESCRIPTOR_FILE} files.{key}")
        if path.is_dir():
            members.extend(_walk_files(root, path))
        elif path.is_file():
            members.append(path.relative_to(root).as_posix())
        elif path.exists():
            raise PackageIntegrityError(f"files.{key}: {relative} is not a regular file")
    return members


def expected_checksums(descriptor: Mapping[str, Any]) -> dict[str, str]:
    """Relative path -> recorded sha256, from both checksum maps.

    A ``sha256`` entry whose key is not in ``files`` is ignored: nothing loads it (the
    MLflow model's slim copy of a package keeps the full map but only two files).
    """
    files = descriptor["files"]
    expected = {
        PurePosixPath(files[key]).as_posix(): digest
        for key, digest in descriptor.get(SHA256_KEY, {}).items()
        if key in files
    }
    for relative, digest in descriptor.get(SHA256_TREE_KEY, {}).items():
        expected[PurePosixPath(relative).as_posix()] = digest
    return expected


def verify_checksums(root: Path, descriptor: Mapping[str, Any], members: list[str]) -> Verification:
    """Hash every file with a recorded sha256; raise on the first that is missing or differs."""
    expected = expected_checksums(descriptor)
    for relative, digest in expected.items():
        path = confined_path(root, relative, f"{DESCRIPTOR_FILE} checksums")
        if not path.is_file():
            raise PackageIntegrityError(
                f"{relative} has a recorded sha256 in {root / DESCRIPTOR_FILE} but is missing "
                f"from the package"
            )
        actual = sha256_file(path)
        if actual != digest.lower():
            raise PackageIntegrityError(
                f"{root / relative} does not match its recorded sha256 (expected "
                f"{digest[:12]}..., found {actual[:12]}...): the file changed since export; "
                f"re-export the package (or load with verify=False / --no-verify while "
                f"developing)"
            )
    unverified = tuple(m for m in members if m not in expected)
    return Verification(verified=tuple(expected), unverified=unverified)


def check_descriptor(descriptor: Mapping[str, Any], where: Path | str = DESCRIPTOR_FILE) -> None:
    if descriptor.get("format") != FORMAT_NAME:
        raise PackageError(f"{where}: format must be {FORMAT_NAME!r}")
    version = descriptor.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PackageError(
            f"{where}: format_version {version!r} is not supported by this flowerclf "
            f"(reads up to {FORMAT_VERSION}); upgrade flowerclf"
        )
    missing = [
        k for k in ("name", "version", "classes", "preprocess", "files") if k not in descriptor
    ]
    if missing:
        raise PackageError(f"{where}: missing keys {missing}")
    _check_string_map(descriptor["files"], "files", where)
    for key in (SHA256_KEY, SHA256_TREE_KEY):
        checksums = descriptor.get(key, {})
        _check_string_map(checksums, key, where)
        bad = [name for name, digest in checksums.items() if not _HEX_DIGEST.match(digest.lower())]
        if bad:
            raise PackageError(f"{where}: {key} entries {bad} are not sha256 hex digests")
    classes = descriptor["classes"]
    if not isinstance(classes, list) or not classes or len(set(classes)) != len(classes):
        raise PackageError(f"{where}: classes must be a non-empty list of unique names")
    try:
        PreprocessSpec.from_dict(descriptor["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"{where}: invalid preprocess spec: {exc}") from None


def _check_string_map(value: Any, key: str, where: Path | str) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PackageError(f"{where}: {key} must map names to strings")
