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
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free "
                             "one).", lower_bound=0, upper_bound=65535,
                             flag_values=FLAGS)
_API_KEY = flags.DEFINE_string(
    "api_key", None, "Require 'Authorization: Bearer KEY' on every API "
    "request (printable ASCII, no spaces).", flag_values=FLAGS)
_ALLOW_ORIGIN = flags.DEFINE_multi_string(
    "allow_origin", [], "An origin (http://host:port) whose web pages may "
    "call the API; repeat for more. Others are refused (403).",
    flag_values=FLAGS)
_MAX_PENDING = flags.DEFINE_integer(
    "max_pending_per_client", 16, "Connections one client address may hold "
    "whose request has not fully arrived (idle or slow); past it its oldest "
    "is closed.", lower_bound=1, flag_values=FLAGS)
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 1024,
                                   "Cap on a request's max_tokens.",
                                   lower_bound=1, flag_values=FLAGS)
_MAX_BATCH = flags.DEFINE_integer(
    "max_batch", 32, "Requests decoded together in one batch.", lower_bound=1,
    flag_values=FLAGS)
_MAX_QUEUE = flags.DEFINE_integer(
    "max_queue", 64, "Requests waiting for a place in the batch; more are "
    "answered 429.", lower_bound=1, flag_values=FLAGS)
_MAX_BODY = flags.DEFINE_integer("max_body", 1 << 20,
                                 "Request body limit in bytes (413).",
                                 lower_bound=1, flag_values=FLAGS)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 1, "JAX CPU devices to make: 1, one for all cores; 0, "
    "one per core (lowered to a divisor of --max_batch): a batch of "
    "requests is split over them, each core decoding its share, and one "
    "request runs on the first.", lower_bound=0, flag_values=FLAGS)
_WARM_UP = flags.DEFINE_boolean(
    "warm_up", True, "Compile the decoding programs before serving.",
    flag_values=FLAGS)
_STRICT_MODEL_NAME = flags.DEFINE_boolean(
    "strict_model_name", False, "Answer a request naming another model with "
    "404 model_not_found (vLLM's way) instead of serving it this run's "
    "model (llama.cpp's way, the default).", flag_values=FLAGS)


def api_key_ok(key: str | None) -> bool:
  """Whether --api_key can go in an HTTP header as sent (checked at
  parse time: one line before anything loads)."""
  return key is None or (bool(key) and all(33 <= ord(c) < 127 for c in key))


def origins_ok(origins: list[str]) -> bool:
  """Whether each --allow_origin is a bare origin: scheme://host[:port]."""
  return all(o.startswith(("http://", "https://")) and o.count("/") == 2
             and o.isascii() and len(o) > len("https://") for o in origins)


flags.register_validator(
    "api_key", api_key_ok, "must be printable ASCII without spaces "
    "(it is sent in a header), e.g. --api_key=$(openssl rand -hex 16)",
    flag_values=FLAGS)
flags.register_validator(
    "allow_origin", origins_ok, "must be an origin such as "
    "http://localhost:3000 (a scheme, a host, perhaps a port; no path)",
    flag_values=FLAGS)


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

  from lm_jax.errors import UserError
  from lm_jax.runs import modelfile, rundir
  from lm_jax.serve import app as serve_app
  from lm_jax.serve import server

  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise UserError("pass either --workdir=DIR (a training run) or "
                    "--model=FILE (from lm-jax-export)")
  if _HOST.value not in ("127.0.0.1", "localhost", "::1") and \
      not _API_KEY.value:
    print(f"warning: --host={_HOST.value} lets other machines reach the "
          "server, and it has no authentication; pass --api_key=KEY to "
          "require one", file=sys.stderr)
  sock = listen(_HOST.value, _PORT.value)
  # Before JAX starts (loading the run starts it); None: it had started
  # or XLA_FLAGS chose (the devices there are used).
  process.use_cpu_cores(_CPU_DEVICES.value, _MAX_BATCH.value)
  import jax
  given = _MODEL.value or _WORKDIR.value
  assert given is not None  # one of the two, checked above
  path = pathlib.Path(given)
  run = (modelfile.load_model(path) if _MODEL.value
         else rundir.load_run(path, _STEP.value))
  name = path.stem if _MODEL.value else path.resolve().name
  settings = serve_app.Settings(
      max_tokens=_MAX_TOKENS.value, max_batch=_MAX_BATCH.value,
      max_queue=_MAX_QUEUE.value, max_body=_MAX_BODY.value,
      api_key=_API_KEY.value, warm_up=_WARM_UP.value, host=_HOST.value,
      allow_origins=tuple(_ALLOW_ORIGIN.value),
      strict_model_name=_STRICT_MODEL_NAME.value,
      devices=(jax.local_device_count() if _CPU_DEVICES.value != 1 and
               jax.default_backend() == "cpu" else 1))
  host = f"[{_HOST.value}]" if ":" in _HOST.value else _HOST.value
  url = f"http://{host}:{sock.getsockname()[1]}/"
  print(f"loaded {name} (step {run.step}); compiling...", flush=True)
  ready = lambda: print(f"serving {name} at {url} (API: {url}v1); Ctrl-C "
                        "stops", flush=True)
  # uvicorn answers 503 past this many connections at once.
  limit = _MAX_BATCH.value + _MAX_QUEUE.value + 32
  server.server(serve_app.create_app(run, name, settings, ready),
                limit_concurrency=limit,
                max_pending=_MAX_PENDING.value).run(sockets=[sock])


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, serve_main)


def cli() -> None:
  """The `lm-jax-serve` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
