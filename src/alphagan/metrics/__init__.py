"""Sample-quality instruments: fixed embeddings, distances between image sets, and the
equal-count floors and degradation ladder that tell whether a distance means anything.

- :mod:`~alphagan.metrics.features`: the fixed random embedding (no downloaded weights).
- :mod:`~alphagan.metrics.distances`: Fréchet distance, KID, precision/recall, and the
  multi-scale sliced Wasserstein distance on Laplacian-pyramid patches.
- :mod:`~alphagan.metrics.baselines`: scoring at equal counts on random draws against a
  fixed reference, with the real-vs-real floor measured the same way; the ladder of
  degradations used to validate every metric.
- :mod:`~alphagan.metrics.classifier`: the classifier two-sample test (``c2st_accuracy``): how
  often a small CNN tells samples from real images, beside its real-vs-real floor.
- :mod:`~alphagan.metrics.memorisation`: nearest neighbours in a colour-blind structure space.
"""
