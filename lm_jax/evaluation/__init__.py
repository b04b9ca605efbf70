"""Evaluation by the ecosystem's harness: lm-eval's model for a run
(lm_eval_model.py), registered as `lm_jax` when imported."""
