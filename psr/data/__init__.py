"""Datasets: the canonical label vocabulary, readers of the public formats, the synthetic
generator, the prepared on-disk format and the torch datasets built on it."""
