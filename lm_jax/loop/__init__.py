"""The training loop: set-up, the on-device steps, and the periodic actions
(log, evaluate with a sample and a checkpoint, stop on a signal)."""
