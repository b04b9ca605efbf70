"""Serve a trained run: `lm-jax-serve --workdir=DIR` (or `--model=FILE`).

An OpenAI-compatible API (`/v1/completions`, `/v1/chat/completions`) and a
playground page at http://127.0.0.1:8000/. Flags only; the work is
`lm_jax.serve.app.create_app`, run by uvicorn. docs/SERVE.md.
"""

import pathlib
import socket

from absl import flags

from lm_jax.cli import flag_parsing, process

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to serve.",
                               flag_values=FLAGS)
_MODEL = flags.DEFINE_string(
    "model", None, "Or a .safetensors file lm-jax-export wrote.",
    flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best).",
                             flag_values=FLAGS)
_HOST = flags.DEFINE_string(
    "host", "127.0.0.1", "Address to listen on; 0.0.0.0 opens the server to "
    "the network (there is no authentication unless --api_key).",
    flag_values=FLAGS)
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.",
                             flag_values=FLAGS)
_API_KEY = flags.DEFINE_string(
    "api_key", None, "Require 'Authorization: Bearer KEY' on every API "
    "request.", flag_values=FLAGS)
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 1024,
                                   "Cap on a request's max_tokens.",
                                   lower_bound=1, flag_values=FLAGS)
_MAX_BATCH = flags.DEFINE_integer(
    "max_batch", 32, "Requests decoded together in one batch.", lower_bound=1,
    flag_values=FLAGS)
_MAX_QUEUE = flags.DEFINE_integer(
    "max_queue", 64, "Requests waiting for a place in the batch; more are "
    "answered 429.", lower_bound=0, flag_values=FLAGS)
_MAX_BODY = flags.DEFINE_integer("max_body", 1 << 20,
                                 "Request body limit in bytes (413).",
                                 lower_bound=1, flag_values=FLAGS)
_WARM_UP = flags.DEFINE_boolean(
    "warm_up", True, "Compile the decoding programs before serving.",
    flag_values=FLAGS)
_STRICT_MODEL_NAME = flags.DEFINE_boolean(
    "strict_model_name", False, "Answer a request naming another model with "
    "404 model_not_found (vLLM's way) instead of serving it this run's "
    "model (llama.cpp's way, the default).", flag_values=FLAGS)


def listen(host: str, port: int) -> socket.socket:
  """A listening socket, bound before the model loads: a busy port is a
  one-line error at once."""
  from lm_jax.errors import UserError
  try:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(info[4])
  except OSError as e:
    raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                    "pass a free --port or stop what uses it") from None
  sock.listen(2048)
  return sock


def serve_main() -> None:
  import sys

  import uvicorn

  from lm_jax.errors import UserError
  from lm_jax.runs import modelfile, rundir
  from lm_jax.serve import app as serve_app

  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise UserError("pass either --workdir=DIR (a training run) or "
                    "--model=FILE (from lm-jax-export)")
  if _HOST.value not in ("127.0.0.1", "localhost", "::1") and \
      not _API_KEY.value:
    print(f"warning: --host={_HOST.value} lets other machines reach the "
          "server, and it has no authentication; pass --api_key=KEY to "
          "require one", file=sys.stderr)
  sock = listen(_HOST.value, _PORT.value)
  given = _MODEL.value or _WORKDIR.value
  assert given is not None  # one of the two, checked above
  path = pathlib.Path(given)
  run = (modelfile.load_model(path) if _MODEL.value
         else rundir.load_run(path, _STEP.value))
  name = path.stem if _MODEL.value else path.resolve().name
  settings = serve_app.Settings(
      max_tokens=_MAX_TOKENS.value, max_batch=_MAX_BATCH.value,
      max_queue=_MAX_QUEUE.value, max_body=_MAX_BODY.value,
      api_key=_API_KEY.value, warm_up=_WARM_UP.value,
      strict_model_name=_STRICT_MODEL_NAME.value)
  host = f"[{_HOST.value}]" if ":" in _HOST.value else _HOST.value
  url = f"http://{host}:{sock.getsockname()[1]}/"
  print(f"loaded {name} (step {run.step}); compiling...", flush=True)
  ready = lambda: print(f"serving {name} at {url} (API: {url}v1); Ctrl-C "
                        "stops", flush=True)
  # uvicorn answers 503 past this many connections at once.
  limit = _MAX_BATCH.value + _MAX_QUEUE.value + 32
  config = uvicorn.Config(serve_app.create_app(run, name, settings, ready),
                          log_level="warning", limit_concurrency=limit,
                          timeout_graceful_shutdown=2)
  uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, serve_main)


def cli() -> None:
  """The `lm-jax-serve` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
