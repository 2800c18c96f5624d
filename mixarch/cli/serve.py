"""``mixarch serve``: an OpenAI-compatible completions server (LitServe) for a model directory."""

from __future__ import annotations

import sys

from mixarch.cli.format import non_negative_seconds, port_number, positive_int
from mixarch.cli.generate import add_model_args

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model directory over HTTP (OpenAI completions)",
                       description="Serve the model in DIR with LitServe: POST /v1/completions (OpenAI "
                                   "parameters, stream=true for server-sent events) and GET /health. Concurrent "
                                   "requests are generated in batches.")
    add_model_args(p, devices="cpu, cuda")
    p.add_argument("--host", default="127.0.0.1", choices=HOSTS, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch-size", type=positive_int, default=8, metavar="N",
                   help="requests generated together (default 8)")
    p.add_argument("--batch-timeout", type=non_negative_seconds, default=0.01, metavar="S",
                   help="seconds to wait for a batch to fill (default 0.01)")
    p.add_argument("--max-tokens-limit", type=positive_int, default=1024, metavar="N",
                   help="largest max_tokens a request may ask for (default 1024)")
    p.set_defaults(run=run)


def run(args) -> int:
    from mixarch.cli.generate import resolve_device
    from mixarch.errors import MixarchError

    device = resolve_device(args.device)
    if device not in ("cpu", "cuda"):
        raise MixarchError("mixarch serve takes cpu, cuda or auto (choose the GPU with CUDA_VISIBLE_DEVICES)",
                           key="--device")
    from mixarch.serve import make_server
    from mixarch.serve import run as run_server

    server = make_server(args.directory, accelerator=device, dtype=args.dtype, prefill_chunk=args.prefill_chunk,
                         max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout,
                         max_tokens_limit=args.max_tokens_limit)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mixarch: serving {args.directory} at http://{host}:{args.port}/v1/completions", file=sys.stderr)
    try:
        run_server(server, host=args.host, port=args.port)
    except RuntimeError as err:  # LitServe: "One or more workers failed to start" (the worker logged why)
        raise MixarchError(f"the server stopped: {err}") from None
    return 0
