"""lm-jax-serve (lm_jax/cli/serve.py): the port is taken before the model
loads; what cannot be served (a flag past its limits included) is one line
and exit 2; SIGTERM and SIGINT answer the requests in flight."""

import signal
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest

from lm_jax.cli import serve
from lm_jax.errors import UserError

from conftest import REPO, run_command


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


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_answers_the_requests_in_flight(smoke_run, sig):
  """lm-jax-serve stopped while a stream and a whole completion decode:
  the stream ends with an error event and [DONE] (never finish_reason
  'length'), the other gets a 503 error object, and no traceback prints."""
  server = subprocess.Popen(
      [sys.executable, "-m", "lm_jax.cli.serve", f"--workdir={smoke_run}",
       "--port=0", "--warm_up=false", "--max_tokens=100000"], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = ""
    while "serving" not in line:
      line = server.stdout.readline()
      assert line, server.stderr.read()
    url = line.split(" at ")[1].split()[0].rstrip("/")
    c = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
    stream = iter(c.completions.create(model=smoke_run.name, prompt="the",
                                       max_tokens=100_000, stream=True))
    next(stream)
    whole: dict = {}

    def wait_whole():
      try:
        c.completions.create(model=smoke_run.name, prompt="the",
                             max_tokens=100_000)
      except openai.APIStatusError as e:
        whole["status"], whole["body"] = e.status_code, e.body

    waiting = threading.Thread(target=wait_whole)
    waiting.start()
    time.sleep(1)  # both decode
    server.send_signal(sig)
    with pytest.raises(openai.APIError, match="shutting down"):
      for chunk in stream:
        assert chunk.choices[0].finish_reason is None
    waiting.join(timeout=60)
    assert whole["status"] == 503 and whole["body"]["code"] == "unavailable"
    server.wait(timeout=60)
    err = server.stderr.read()
    assert "Traceback" not in err and "Exception" not in err, err
  finally:
    server.kill()
    server.wait()
