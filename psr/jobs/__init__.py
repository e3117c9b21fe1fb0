"""The project's jobs: one module per verb, each a typed config and a plain ``run`` function.

A job settles every policy of its step once (seeding, class order, the prior's re-indexing, file
layout of its outputs) and returns a result object. Jobs never touch MLflow, DVC or Prefect:
the ``psr`` subcommands and the pipeline's DVC stages are thin doors over them, and per-epoch
work such as tracking or pruning reaches a job through ``callbacks`` (``callback(epoch,
metrics)``, the engine's convention).

- :mod:`psr.jobs.prepare`      raw dataset -> prepared format
- :mod:`psr.jobs.priors`       prepared dataset -> PDLS label prior
- :mod:`psr.jobs.sr_pretrain`  prepared dataset -> pretrained x2 SR network
- :mod:`psr.jobs.train`        prepared dataset (+ prior, SR weights) -> best.pt / last.pt
- :mod:`psr.jobs.evaluate`     checkpoint + prepared split -> metrics, figures, report
"""
