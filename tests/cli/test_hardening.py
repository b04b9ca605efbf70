"""Hardening, round three (issue 31): export targets, model files, impossible
sizes, output paths, clean exits, encoder-decoder gaps, and commands that
are safe to explore.

Each case goes through the command's flags where a user meets them (its
main(argv), in this process), and checks one line of error (exit 2, no
traceback) and that nothing was written; the cases where the command line
is not the point call the functions. The
trained runs are shared: conftest's `smoke_run` and a module-scoped echo
bot trained for 2 steps.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import REPO, corpus_text, refused, run_command
from lm_jax.data import tokenizers
from lm_jax.errors import UserError
from lm_jax.runs import modelfile

TIMEOUT = 300
ROOT = os.geteuid() == 0  # root writes through a read-only mode bit


@pytest.fixture(scope="module")
def model_file(smoke_run, tmp_path_factory):
  """The smoke run exported once."""
  out = tmp_path_factory.mktemp("export") / "m.safetensors"
  modelfile.export_run(smoke_run, out)
  return out


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory):
  """An echo bot (echo_s2s smoke) trained 2 steps on a small pairs file."""
  from configs import echo_s2s
  from lm_jax.loop import trainer
  d = tmp_path_factory.mktemp("echo")
  (d / "pairs.tsv").write_text("".join(
      f"word {i}\tdrow {i}\n" for i in range(60)), encoding="utf-8")
  config = echo_s2s.get_config("smoke")
  config.data.pairs_file = str(d / "pairs.tsv")
  config.train.update(num_steps=2, eval_every=2, log_every=2, eval_pairs=8)
  trainer.train_and_evaluate(config, d / "run")
  return d / "run"


# 2. A model file is validated before anything is allocated ----------------


def _damaged(model_file, tmp_path, case: str) -> pathlib.Path:
  """A copy of `model_file` damaged as `case` says."""
  tensors, meta = modelfile.read_safetensors(model_file)
  config = json.loads(meta["config"])
  # The vocabulary in the older {"kind", "vocab"} form, which lm_jax still
  # reads: easy to damage by hand.
  vocab = tokenizers.tokenizer_from_json(json.loads(meta["tokenizer"])).vocab
  tok = {"kind": "char", "vocab": vocab}
  model = lambda **kw: json.dumps(
      {**config, "model": {**config["model"], **kw}})
  tensors = {k: v.copy() for k, v in tensors.items()}
  kernel = "block_0/attn/proj/kernel"
  changes = {
      "config_not_json": dict(config="{not json"),
      "no_config": dict(config=None),
      "tokenizer_kind": dict(tokenizer=json.dumps({**tok,
                                                    "kind": "sentencepiece"})),
      "model_kind": dict(config=model(kind="lstm")),
      "step_not_a_number": dict(step="twenty"),
      "negative_size": dict(config=model(d_model=-4)),
      "a_million_layers": dict(config=model(num_layers=1_000_000)),
      "tokenizer_larger": dict(tokenizer=json.dumps(
          {**tok, "vocab": tok["vocab"] + ["\u00c6", "\u00d8"]})),
      "tokenizer_smaller": dict(tokenizer=json.dumps(
          {**tok, "vocab": tok["vocab"][:-3]})),
  }.get(case, {})
  if case == "missing_tensor":
    del tensors[kernel]
  elif case == "wrong_shape":
    tensors[kernel] = np.zeros((3, 3), np.float32)
  elif case == "nan_weights":
    tensors[kernel][0, 0] = np.nan
  meta = {k: v for k, v in {**meta, **changes}.items() if v is not None}
  path = tmp_path / f"{case}.safetensors"
  save_file(tensors, path, meta)
  return path


MODEL_FILE_CASES = {
    "config_not_json": "'config' is not JSON",
    "no_config": "has no 'config'",
    "tokenizer_kind": "tokenizer kind 'sentencepiece'",
    "model_kind": "cannot build a model",
    "step_not_a_number": "step 'twenty' is not a whole number",
    "negative_size": "config.model.d_model=-4 is outside",
    "a_million_layers": "config.model.num_layers=1000000 is outside",
    "missing_tensor": "tensor block_0/attn/proj/kernel is missing",
    "wrong_shape": "has shape (3, 3)",
    "tokenizer_larger": "tokenizer has 47 tokens but tensor embed/embedding",
    "tokenizer_smaller": "tokenizer has 42 tokens but tensor embed/embedding",
    "nan_weights": "holds NaN or infinite weights",
}


@pytest.mark.slow  # loads and checks a model per case
@pytest.mark.parametrize("case", sorted(MODEL_FILE_CASES))
def test_a_damaged_model_file_is_one_line(model_file, tmp_path, case):
  path = _damaged(model_file, tmp_path, case)
  out = run_command("lm_jax.sample", f"--model={path}", "--prompt=LINE",
             "--max_new_tokens=5")
  line = refused(out, MODEL_FILE_CASES[case], "export the run again")
  assert out.stdout == ""  # refused before the prompt is printed
  with pytest.raises(UserError) as caught:  # the notebook API: same line
    modelfile.load_model(path)
  assert f"error: {caught.value}" == line


# 3. Impossible sizes are refused before anything is written ---------------


def test_an_impossible_size_is_refused_and_writes_nothing(tmp_path):
  text = tmp_path / "corpus.txt"
  text.write_text(corpus_text(), encoding="utf-8")
  workdir = tmp_path / "run"
  out = run_command("lm_jax.train", "--config=char_tf:smoke",
             f"--config.data.path={text}", f"--workdir={workdir}",
             "--config.model.d_model=1000000")
  refused(out, "GiB per device", "lower config.model.d_model")
  assert not workdir.exists()


# 4. Output paths of plot and inspect --------------------------------------


@pytest.mark.slow  # inspect compiles the model
@pytest.mark.parametrize("command",
                         ["lm_jax.cli.plot", "lm_jax.cli.inspect_run"])
@pytest.mark.parametrize("out, message", [
    ("x.txt", "cannot write a .txt file; name a .png"),
    ("DIR", "is a directory"),
    ("/sys/x.png", "cannot write /sys/x.png"),
])
def test_plot_and_inspect_refuse_what_they_cannot_write(smoke_run, tmp_path,
                                                        command, out, message):
  out = out.replace("DIR", str(tmp_path))
  prompt = ("--prompt=LINE",) if "inspect" in command else ()
  refused(run_command(command, f"--workdir={smoke_run}", f"--out={out}",
                       *prompt),
           message)
  assert list(tmp_path.iterdir()) == [] and not (REPO / "x.txt").exists()


@pytest.mark.slow  # compiles the model
def test_inspect_in_a_read_only_directory_is_one_line(smoke_run):
  refused(run_command("lm_jax.cli.inspect_run", f"--workdir={smoke_run}",
                "--prompt=LINE", cwd="/sys"), "attention.png")


@pytest.mark.skipif(ROOT, reason="root writes into a read-only directory")
def test_plot_of_a_read_only_run_is_one_line(smoke_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  run.chmod(0o555)
  try:
    refused(run_command("lm_jax.cli.plot", f"--workdir={run}"), "loss.png")
  finally:
    run.chmod(0o755)


# 5. Clean exits --------------------------------------------------------------


@pytest.mark.slow
def test_a_hand_edited_config_is_one_line_in_sample_and_train(smoke_run,
                                                              tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  config = json.loads((run / "config.json").read_text())
  config["model"]["d_model"] = 48
  (run / "config.json").write_text(json.dumps(config))
  message = ("does not fit the model its config builds (parameter "
             "block_0/attn/proj/bias: stored shape (32,), the config makes "
             "shape (48,)); a hand-edited config.json: restore it")
  refused(run_command("lm_jax.sample", f"--workdir={run}", "--prompt=LINE"),
           message)
  out = run_command("lm_jax.train", "--config=char_tf:smoke",
             f"--config.data.path={config['data']['path']}",
             "--config.model.d_model=48", f"--workdir={run}")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.count("error:") == 1 and message in out.stderr


# 6. Encoder-decoder gaps -----------------------------------------------------


@pytest.mark.slow  # trains the echo bot
@pytest.mark.parametrize("n", ["0", "-1"])
def test_num_samples_below_one_is_one_line(echo_run, n):
  refused(run_command("lm_jax.sample", f"--workdir={echo_run}",
                       "--prompt=word 1",
                f"--num_samples={n}"), f"--num_samples must be at least 1")


def test_huge_pair_weights_mix_as_equal_ones():
  from lm_jax.data import pairs
  lines = [f"line {i}" for i in range(200)]
  huge = pairs.transform_pairs(lines, pairs.parse_mix(
      "copy:1e308,reverse:1e308"), 0)
  ones = pairs.transform_pairs(lines, pairs.parse_mix("copy:1,reverse:1"), 0)
  assert huge == ones


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
  import ml_collections
  from lm_jax.data import pairs
  path = tmp_path / "p.tsv"
  path.write_bytes(b"\xef\xbb\xbf" + b"".join(
      f"hello {i}\tolleh {i}\n".encode() for i in range(20)))
  data = ml_collections.ConfigDict(dict(pairs_file=str(path),
                                        val_fraction=0.1))
  assert pairs.load_pairs(data, 0).train[0] == ("hello 0", "olleh 0")


def _train_pairs(tmp_path, pairs_file) -> subprocess.CompletedProcess:
  return run_command("lm_jax.train", "--config=echo_s2s:smoke",
              f"--config.data.pairs_file={pairs_file}",
              f"--workdir={tmp_path / 'run'}")


@pytest.mark.parametrize("content, message", [
    ("\u00a0\t\u00a0\n \n", "pairs file holds only whitespace"),
    ("hello\tolleh\n", "has 1 line(s): holding out the last 10% of lines "
     "(config.data.val_fraction) leaves no training line"),
])
def test_a_pairs_file_without_pairs_says_why(tmp_path, content, message):
  path = tmp_path / "p.tsv"
  path.write_text(content, encoding="utf-8")
  refused(_train_pairs(tmp_path, path), message)
  assert not (tmp_path / "run").exists()


def test_a_directory_as_pairs_file_names_its_flag(tmp_path):
  refused(_train_pairs(tmp_path, tmp_path),
           "pairs path is a directory", "--config.data.pairs_file")


@pytest.mark.slow
def test_beam_works_in_the_prompt_loop(echo_run, smoke_run):
  out = run_command("lm_jax.sample", f"--workdir={echo_run}", "--interactive",
             "--beam=2", "--max_new_tokens=5", stdin="word 1\n")
  assert out.returncode == 0, out.stderr
  assert "(beam 2: log-probability" in out.stderr
  refused(run_command("lm_jax.sample", f"--workdir={smoke_run}",
                       "--interactive",
                "--beam=2", stdin="LINE\n"), "drop --beam")


def test_step_with_a_model_file_is_one_line(model_file):
  refused(run_command("lm_jax.sample", f"--model={model_file}", "--step=2",
                "--prompt=LINE"), "drop --step")


# 7. Seed, compilation cache, flags -----------------------------------------


def _resume_args(smoke_run, workdir, *flags):
  config = json.loads((smoke_run / "config.json").read_text())
  return ("lm_jax.train", "--config=char_tf:smoke",
          f"--config.data.path={config['data']['path']}",
          f"--workdir={workdir}", "--config.train.sample_tokens=0",
          "--config.train.eval_every=4", *flags)


def test_another_seed_is_refused_on_resume(smoke_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  refused(run_command(*_resume_args(smoke_run, run, "--config.seed=1")),
           "was trained with config.seed=0, not 1", "--config.seed=0")


@pytest.mark.slow
def test_more_steps_on_resume_say_how_the_schedule_changes(smoke_run,
                                                           tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  out = run_command(*_resume_args(smoke_run, run, "--config.train.num_steps=8"))
  assert out.returncode == 0, out.stderr
  assert ("resuming with config.train num_steps 4 -> 8: the learning-rate "
          "schedule is redrawn over 8 steps; at step 4 it is") in out.stdout


@pytest.mark.slow  # a process of its own
def test_an_unwritable_compilation_cache_is_one_line(model_file):
  # A process of its own: the cache is chosen once, as the process starts.
  out = subprocess.run(
      [sys.executable, "-m", "lm_jax.sample", f"--model={model_file}",
       "--prompt=LINE", "--max_new_tokens=3"], cwd=REPO,
      env=dict(os.environ, JAX_COMPILATION_CACHE_DIR="/sys/x"),
      capture_output=True, text=True, timeout=TIMEOUT)
  assert out.returncode == 0
  assert out.stderr.splitlines() == [
      "note: no compilation cache (cannot write /sys/x: Operation not "
      "permitted); each run compiles afresh; set JAX_COMPILATION_CACHE_DIR "
      "to a writable folder, or to nothing to silence this"]


def test_a_bool_given_another_word_is_plain():
  refused(run_command("lm_jax.train", "--config=char_tf:smoke",
                "--config.model.tie_embeddings=maybe"),
           "expected True or False, got 'maybe'")


# 8. Commands that are safe to explore --------------------------------------


def test_a_bare_train_prints_usage_and_trains_nothing(tmp_path):
  out = run_command("lm_jax.train", cwd=tmp_path)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "no --config" in out.stderr and "char_tf, echo_lstm" in out.stderr
  assert list(tmp_path.iterdir()) == []


CONSOLE = ("import sys; from lm_jax.cli.{0} import cli; "
           "sys.argv[0] = '{1}'; cli()")


@pytest.mark.slow  # a process each
@pytest.mark.parametrize("module, script, flag", [
    ("train", "lm-jax-train", "--show_config"),
    ("sample", "lm-jax-sample", "--num_samples"),
    ("plot", "lm-jax-plot", "--x"),
    ("inspect_run", "lm-jax-inspect", "--prompt"),
    ("export", "lm-jax-export", "--[no]force"),
])
def test_help_of_a_console_script_lists_its_flags(module, script, flag):
  # A process of its own, as the console script runs: __main__ is a wrapper
  # defining no flags.
  out = subprocess.run([sys.executable, "-c", CONSOLE.format(module, script),
                        "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=TIMEOUT)
  assert out.returncode == 0, out.stderr
  assert flag in out.stdout and "--workdir" in out.stdout


def test_show_config_says_the_default_a_comment_describes():
  out = run_command("lm_jax.train", "--config=char_tf", "--show_config")
  line = next(l for l in out.stdout.splitlines()
              if l.startswith("model.position"))
  assert line.endswith("# default 'learned'; or \"rope\": rotary embeddings "
                       "on q and k")


def test_the_sample_hint_uses_a_prompt_the_run_can_read(tmp_path,
                                                        smoke_config):
  from lm_jax.data import tokenizers
  from lm_jax.tasks import PairsTask, TextTask
  path = tmp_path / "ru.txt"
  path.write_text("Однажды в студёную зимнюю пору\n" * 50, encoding="utf-8")
  smoke_config.data.path = str(path)
  tokenizer = tokenizers.build_tokenizer("char", path.read_text())
  assert TextTask().example(smoke_config, tokenizer) == \
      "Однажды в студёную зимнюю"
  assert PairsTask.sample_flags == "--temperature=0"  # the echo bot: greedy
  from lm_jax.cli.train import sample_command
  assert sample_command("runs/e", "hi", "--temperature=0").endswith(
      "--prompt=hi --temperature=0")


@pytest.mark.slow
def test_the_alignment_picture_follows_the_greedy_reply(echo_run):
  from lm_jax.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
  from lm_jax.generation import replies, sampling
  from lm_jax.runs import rundir
  run = rundir.load_run(echo_run)
  tokens = run.tokenizer.encode("word 1")
  inside = run.model.internals(run.params, tokens)
  rows = list(inside.rows)
  assert PAD_ID not in rows and BOS_ID not in rows
  assert EOS_ID not in rows[:-1]  # it ends at the reply's end
  greedy = sampling.SamplingOptions(max_new_tokens=64, temperature=0.0)
  [text] = replies.reply(run.params, run.model, run.tokenizer, ["word 1"],
                         jax.random.key(0), greedy)
  assert run.tokenizer.decode([r for r in rows if r != EOS_ID]) == text


def test_a_prompt_is_echoed_as_typed():
  from lm_jax.data.tokenizers import WordTokenizer
  from lm_jax.generation.interactive import shown_prompt
  words = WordTokenizer.build("it says %s and 50 % of it")
  assert words.decode(words.encode("says %s")) == "says% s"  # respaced
  assert shown_prompt(words, "it says %s ") == "it says %s"
