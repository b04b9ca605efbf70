"""Small language models in JAX and Flax Linen.

The notebook API, imported on first use (so that `python -m lm_jax.train`
can set up the process before JAX loads):

    from lm_jax import encode_prompt, generate_text, load_run, SamplingOptions
    config, tokenizer, model, params, step = load_run("runs/char_tf")
    # or load_model("model.safetensors"), a file lm-jax-export wrote
    prompt, notice = encode_prompt(tokenizer, "ROMEO:")
    generate_text(params, model, tokenizer, prompt, jax.random.key(0),
                  SamplingOptions(max_new_tokens=100, temperature=0.8))
"""

import importlib

# name -> module that defines it
_API = {"load_run": "lm_jax.runs.rundir",
        "load_model": "lm_jax.runs.modelfile",
        "generate": "lm_jax.generation.sampling",
        "generate_text": "lm_jax.generation.sampling",
        "stream": "lm_jax.generation.sampling",
        "encode_prompt": "lm_jax.data.tokenizers",
        "SamplingOptions": "lm_jax.generation.sampling"}


def __getattr__(name: str):
  if name not in _API:
    raise AttributeError(f"module 'lm_jax' has no attribute {name!r}")
  return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
  return sorted(list(globals()) + list(_API))
