"""The commands (`lm-jax-train`, `-sample`, `-plot`, `-inspect`,
`-export`, `-sweep`, `-serve`): flags, process set-up, then one importable
function each.

Each command module has `main(argv) -> int`: it parses `argv` (the
arguments after the command's name) into the module's own `FLAGS` (an absl
FlagValues, so that commands with flags of the same name share a process),
afresh on every call, runs, and returns the exit status: 0, 2 for a user
error (one line on stderr), 130 for Ctrl-C. Tests call it in-process;
`cli()` is the console script around it (`process.run_cli`).

Nothing here imports JAX at import time: `lm-jax-train` sets up the
process (CPU devices, the compilation cache) before JAX starts.
"""
