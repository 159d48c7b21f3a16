"""Datasets: acquisition, validation, de-duplication, splitting, manifests and loaders."""
