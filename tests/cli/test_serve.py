"""lm-jax-serve (lm_jax/cli/serve.py): the port is taken before the model
loads; what cannot be served is one line and exit 2."""

import socket

import pytest

from lm_jax.cli import serve
from lm_jax.errors import UserError


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
])
def test_a_refusal_is_one_line_and_exit_2(capsys, flags, message):
  assert serve.main(flags) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1
  assert message in err
