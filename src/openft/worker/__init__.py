"""Workers: claim jobs over the worker protocol, run the trainer, report what it says."""
