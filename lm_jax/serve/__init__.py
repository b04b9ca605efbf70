"""lm-jax-serve: an OpenAI-compatible API and a playground page for a
trained run (app.py), decoding requests together (engine.py)."""
