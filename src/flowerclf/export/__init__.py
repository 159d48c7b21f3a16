"""``flowerclf export``: turn a trained run into a self-contained model package."""
