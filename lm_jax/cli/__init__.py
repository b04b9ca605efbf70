"""The commands (`lm-jax-train`, `-sample`, `-plot`, `-inspect`,
`-export`): flags, process set-up, then one importable function each.

Nothing here imports JAX at import time: `lm-jax-train` sets up the
process (CPU devices, the compilation cache) before JAX starts.
"""
