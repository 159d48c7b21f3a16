"""Scoring predictions: classification metrics, kNN on embeddings, reports and plots.

Plain NumPy and Matplotlib on arrays of probabilities, labels and embeddings; used at the end
of training (:mod:`flowerclf.training.run`) and by ``flowerclf evaluate``.
"""
