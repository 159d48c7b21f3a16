"""``flowerclf export``: turn a trained run into a self-contained model package.

:mod:`~flowerclf.export.package_writer` runs the steps of :mod:`~flowerclf.export.steps`
(weights, ONNX, parity, embeddings index, int8, Triton, TensorRT, config, metrics,
MLflow) over an :class:`~flowerclf.export.context.ExportContext`, and
:mod:`~flowerclf.export.descriptor` writes the descriptor that
:mod:`flowerclf.core.package_format` reads.
"""
