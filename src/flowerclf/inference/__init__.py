"""Inference on exported model packages: :class:`Classifier` and its backends.

Nothing here needs Hydra, Lightning, the training code or the dataset; the ONNX backends
need only NumPy, Pillow and ONNX Runtime.
"""
