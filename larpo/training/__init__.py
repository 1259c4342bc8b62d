"""The train stage's library (larpo/stages/train.py) and the round-0 warm-start's (larpo/stages/sft.py).

- ``loop``: the optimizer, the step plan and :func:`~larpo.training.loop.train_on_lists`;
- ``sft``: the SFT warm-start of round 0;
- ``runners``: how a step executes, in this process or as one rank of ``accelerate launch``;
- ``round``: one round's training from its lists and the previous checkpoint (both launchers);
- ``launch``: ``train.launcher=accelerate``, the child process group (larpo/processes.py supervises it);
- ``worker``: the entry of each rank under ``accelerate launch -m larpo.training.worker``.
"""
