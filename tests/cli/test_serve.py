"""lm-jax-serve (lm_jax/cli/serve.py): the port is taken before the model
loads; what cannot be served is one line and exit 2."""

import socket

import pytest

from lm_jax.cli import serve
from lm_jax.errors import UserError

from conftest import run_command


def test_a_busy_port_is_refused_before_the_model_loads():
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port} "
                       r"\(.*\); pass a free --port"):
      serve.listen("127.0.0.1", port)
  free = serve.listen("127.0.0.1", 0)
  assert free.getsockname()[1] > 0
  free.close()


@pytest.mark.parametrize("flags, message", [
    ([], "pass either --workdir=DIR (a training run) or --model=FILE"),
    (["--workdir=a", "--model=b"], "pass either --workdir=DIR"),
    (["--workdir=a", "--max_batch=0"],
     "flag --max_batch=0: 0 is not a positive integer"),
    (["--workdir=a", "--max_queue=0"], "flag --max_queue=0"),
    (["--workdir=a", "--port=70000"], "flag --port=70000"),
    (["--workdir=a", "--port=-1"], "flag --port=-1"),
    (["--workdir=a", "--api_key="], "printable ASCII without spaces"),
    (["--workdir=a", "--api_key=clé"], "printable ASCII without spaces"),
    (["--workdir=a", "--api_key=a b"], "printable ASCII without spaces"),
    (["--workdir=a", "--allow_origin=evil.example"], "such as http://"),
    (["--workdir=a", "--allow_origin=http://a.b/page"], "no path"),
])
def test_a_refusal_is_one_line_and_exit_2(capsys, flags, message):
  assert serve.main(flags) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1
  assert message in err


def serve_command(*flags):
  return run_command("lm_jax.cli.serve", *flags)


@pytest.mark.slow
def test_a_busy_port_or_a_bad_run_is_one_line_and_exit_2(smoke_run, tmp_path):
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    out = serve_command(f"--workdir={smoke_run}",
                        f"--port={sock.getsockname()[1]}")
  assert out.returncode == 2
  assert out.stderr.strip().startswith("error: cannot listen on")
  out = serve_command(f"--workdir={tmp_path}", "--host=0.0.0.0", "--port=0")
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert "no authentication" in lines[0] and "not a run directory" in lines[1]
