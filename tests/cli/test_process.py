"""lm_jax/cli/process.py: what every command sets up (the compilation cache)."""



def test_entry_points_keep_compiled_programs(monkeypatch, tmp_path):
  """The commands cache XLA's programs under the user's cache folder,
  unless JAX_COMPILATION_CACHE_DIR chooses (empty: no cache)."""
  import jax

  from lm_jax.cli import process
  before = jax.config.jax_compilation_cache_dir
  try:
    assert process.use_compilation_cache() is None  # the tests' own cache
    assert jax.config.jax_compilation_cache_dir == before
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert process.use_compilation_cache() == str(tmp_path / "lm_jax" / "xla")
    assert jax.config.jax_compilation_cache_dir == str(
        tmp_path / "lm_jax" / "xla")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
