"""Sweeps: a grid of settings trained as populations (lm-jax-sweep)."""
