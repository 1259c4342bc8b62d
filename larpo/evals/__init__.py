"""The evaluation library: AlpacaEval 2 (``larpo.evals.alpacaeval``), MixEval / MixEval-Hard
(``larpo.evals.mixeval``) and the judges both use (``larpo.evals.judges``).

Submodules are imported on demand: alpaca_eval, transformers, datasets and huggingface_hub are
optional (the ``eval`` extra) and load only inside the functions that need them.
"""
