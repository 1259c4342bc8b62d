"""Candidate generation beyond plain sampling: per-round temperatures, temperature splits, extra
low-temperature candidates and the paper's negative difficulty ladder (docs/design.md, "Sampling plan").

``sampling``: the HF ``generate`` primitives; ``plan``: what a round samples (built from ``cfg.sampling``
once, checked at start-up); ``negatives``: the ladder's extra candidates; ``candidates``: a round's batches
and their journal; ``vllm_backend`` / ``vllm_server``: the same on vLLM, in child processes. The stage
itself is larpo/stages/generate.py; seeds come from larpo/seeds.py.
"""
