"""Training: the only package that imports torch, transformers, peft and trl.

Runs in a subprocess per job (see `openft.training.run`), so a crash, an out-of-memory
or a bad dataset never takes a worker down.
"""
