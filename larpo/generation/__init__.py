"""Candidate generation beyond plain sampling: per-round temperatures, temperature splits, extra
low-temperature candidates and the paper's negative difficulty ladder (docs/design.md, "Sampling plan").

``sampling``: the HF ``generate`` primitives and seeds; ``plan``: what a round samples (read from
``cfg.sampling``, checked at start-up); ``negatives``: the ladder's extra candidates. The stage
itself (batches, journal) is :mod:`larpo.generation.candidates`.
"""
