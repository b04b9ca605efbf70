"""Experiments on top of lm_jax: PyTorch twins and the throughput benchmark."""
