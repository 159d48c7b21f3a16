"""Model packages are verified on load: checksums, paths confined to the package, no links.

Issue 12: export wrote sha256 checksums that nothing checked, descriptor paths could be
absolute or contain ``..``, and a gallery thumbnail symlinked to ``/etc/passwd`` was served.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from flowerclf.core.errors import PackageError, PackageIntegrityError
from flowerclf.core.package_format import DESCRIPTOR_FILE, load_package

GALLERY_FILES = ("100.jpg", "101.jpg")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _descriptor(root: Path) -> dict:
    return json.loads((root / DESCRIPTOR_FILE).read_text())


def _write_descriptor(root: Path, descriptor: dict) -> None:
    (root / DESCRIPTOR_FILE).write_text(json.dumps(descriptor, indent=2))


def _package(root: Path, *, checksums: bool = True, tree: bool = False) -> Path:
    """A minimal package as ``flowerclf export`` lays it out (file contents are stand-ins)."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"onnx model bytes " * 100)
    (root / "weights.safetensors").write_bytes(b"weights " * 50)
    (root / "gallery").mkdir()
    for name in GALLERY_FILES:
        (root / "gallery" / name).write_bytes(f"thumbnail {name}".encode())
    files = {"onnx": "model.onnx", "weights": "weights.safetensors", "gallery": "gallery"}
    descriptor: dict = {
        "format": "flowerclf-model",
        "format_version": 1,
        "name": "tiny",
        "version": "1",
        "classes": ["a", "b"],
        "preprocess": {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3,
                       "interpolation": "bilinear", "crop_pct": 1.0},
        "files": files,
    }  # fmt: skip
    if checksums:
        descriptor["sha256"] = {k: _digest(root / v) for k, v in files.items() if k != "gallery"}
    if tree:
        descriptor["sha256_tree"] = {
            f"gallery/{name}": _digest(root / "gallery" / name) for name in GALLERY_FILES
        }
    _write_descriptor(root, descriptor)
    return root


def _point(root: Path, key: str, relative: str) -> None:
    descriptor = _descriptor(root)
    descriptor["files"][key] = relative
    _write_descriptor(root, descriptor)


def test_intact_package_verifies_and_names_the_files_without_checksums(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _package(tmp_path / "pkg")
    with caplog.at_level(logging.INFO, logger="flowerclf.core.package_format"):
        package = load_package(root)
    assert set(package.verification.verified) == {"model.onnx", "weights.safetensors"}
    assert package.verification.unverified == ("gallery/100.jpg", "gallery/101.jpg")
    assert not package.verification.skipped
    assert "gallery/ (2 files)" in caplog.text
    assert caplog.records[-1].levelno == logging.INFO  # only directory members: a note


def test_overwritten_model_onnx_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    (root / "model.onnx").write_bytes(b"something else entirely")
    with pytest.raises(PackageIntegrityError, match=r"model\.onnx does not match its recorded"):
        load_package(root)


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    data = (root / "weights.safetensors").read_bytes()
    (root / "weights.safetensors").write_bytes(data[:-1])
    with pytest.raises(PackageIntegrityError, match=r"weights\.safetensors"):
        load_package(root)


def test_missing_checksummed_file_is_refused(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    (root / "weights.safetensors").unlink()
    with pytest.raises(PackageIntegrityError, match=r"weights\.safetensors has a recorded sha256"):
        load_package(root)


def test_verify_false_loads_a_modified_package_for_development(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _package(tmp_path / "pkg")
    (root / "model.onnx").write_bytes(b"edited by hand")
    with caplog.at_level(logging.WARNING, logger="flowerclf.core.package_format"):
        package = load_package(root, verify=False)
    assert package.verification.skipped
    assert "without checksum verification" in caplog.text


def test_tampered_gallery_thumbnail_is_refused_when_the_tree_has_checksums(
    tmp_path: Path,
) -> None:
    root = _package(tmp_path / "pkg", tree=True)
    assert load_package(root).verification.unverified == ()
    (root / "gallery" / "101.jpg").write_bytes(b"replaced")
    with pytest.raises(PackageIntegrityError, match=r"gallery/101\.jpg does not match"):
        load_package(root)


def test_package_exported_without_checksums_still_loads_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _package(tmp_path / "pkg", checksums=False)
    with caplog.at_level(logging.WARNING, logger="flowerclf.core.package_format"):
        package = load_package(root)
    assert package.verification.verified == ()
    assert len(package.verification.unverified) == 4
    assert "model.onnx" in caplog.text and "not verified" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING  # the model itself is unchecked


def test_stale_checksum_of_a_file_the_package_no_longer_names_is_ignored(tmp_path: Path) -> None:
    # The MLflow model's slim copy keeps the full sha256 map but names two files only.
    root = _package(tmp_path / "pkg")
    descriptor = _descriptor(root)
    del descriptor["files"]["weights"]
    _write_descriptor(root, descriptor)
    (root / "weights.safetensors").unlink()
    assert load_package(root).verification.verified == ("model.onnx",)


@pytest.mark.parametrize(
    "relative",
    ["/etc/passwd", "../outside.onnx", "gallery/../../outside.onnx", "C:\\model.onnx",
     "gallery\\..\\..\\outside.onnx", ""],
)  # fmt: skip
def test_descriptor_paths_outside_the_package_are_refused(tmp_path: Path, relative: str) -> None:
    root = _package(tmp_path / "pkg")
    (tmp_path / "outside.onnx").write_bytes(b"not part of the package")
    _point(root, "onnx", relative)
    for verify in (True, False):  # confinement is not something a flag turns off
        with pytest.raises(PackageIntegrityError, match="files.onnx"):
            load_package(root, verify=verify)


def test_checksum_paths_outside_the_package_are_refused(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    descriptor = _descriptor(root)
    descriptor["sha256_tree"] = {"../outside.bin": "0" * 64}
    _write_descriptor(root, descriptor)
    with pytest.raises(PackageIntegrityError, match="leaves the package"):
        load_package(root)


def test_symlinked_model_file_is_refused(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg", checksums=False)
    outside = tmp_path / "elsewhere.onnx"
    (root / "model.onnx").rename(outside)
    (root / "model.onnx").symlink_to(outside)
    with pytest.raises(PackageIntegrityError, match=r"model\.onnx is a symbolic link"):
        load_package(root, verify=False)


def test_gallery_image_symlinked_to_etc_passwd_is_refused(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    (root / "gallery" / "102.jpg").symlink_to("/etc/passwd")
    for verify in (True, False):
        with pytest.raises(PackageIntegrityError, match=r"gallery/102\.jpg .*symbolic link"):
            load_package(root, verify=verify)


def test_symlinked_gallery_directory_is_refused(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    (root / "gallery").rename(tmp_path / "real-gallery")
    (root / "gallery").symlink_to(tmp_path / "real-gallery")
    with pytest.raises(PackageIntegrityError, match="gallery is a symbolic link"):
        load_package(root)


def test_symlinked_descriptor_is_refused(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    (root / DESCRIPTOR_FILE).rename(tmp_path / "descriptor.json")
    (root / DESCRIPTOR_FILE).symlink_to(tmp_path / "descriptor.json")
    with pytest.raises(PackageIntegrityError, match="symbolic link"):
        load_package(root)


def test_package_directory_reached_through_a_link_loads(tmp_path: Path) -> None:
    # models/latest -> models/v3 is a normal deployment layout; only members are checked.
    root = _package(tmp_path / "v3")
    (tmp_path / "latest").symlink_to(root)
    assert load_package(tmp_path / "latest").root == root.resolve()


def test_member_lookup_refuses_links_planted_after_load(tmp_path: Path) -> None:
    package = load_package(_package(tmp_path / "pkg"))
    assert package.member("gallery/100.jpg") == package.root / "gallery" / "100.jpg"
    assert package.member("gallery/999.jpg") is None
    (package.root / "gallery" / "103.jpg").symlink_to("/etc/passwd")
    with pytest.raises(PackageIntegrityError):
        package.member("gallery/103.jpg")
    with pytest.raises(PackageIntegrityError):
        package.member("../../etc/passwd")


@pytest.mark.parametrize(
    ("key", "value"),
    [("sha256", {"onnx": "not-a-digest"}), ("sha256", ["a"]), ("files", {"onnx": 3})],
)
def test_malformed_checksum_maps_are_package_errors(
    tmp_path: Path, key: str, value: object
) -> None:
    root = _package(tmp_path / "pkg")
    descriptor = _descriptor(root)
    descriptor[key] = value
    _write_descriptor(root, descriptor)
    with pytest.raises(PackageError, match=key):
        load_package(root)
