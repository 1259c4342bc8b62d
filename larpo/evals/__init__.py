"""The evaluation library of the evaluate stage (larpo/stages/evaluate.py): the task's held-out metrics
(``larpo.evals.held_out``), AlpacaEval 2 (``larpo.evals.alpacaeval``), MixEval / MixEval-Hard
(``larpo.evals.mixeval``), the benchmarks' common driver (``larpo.evals.bench``) and the judges
(``larpo.evals.judges``).

Submodules are imported on demand: alpaca_eval, transformers, datasets and huggingface_hub are
optional (the ``eval`` extra) and load only inside the functions that need them.
"""
