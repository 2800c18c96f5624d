"""Build and run the LitServe server of a model directory."""

from __future__ import annotations

import os
import signal

import litserve as ls

from mixarch.serve.api import CompletionAPI

QUEUE_TIMEOUT_S = 300  # a request waiting longer than this for a batch gets 504


def make_server(directory: str, *, accelerator: str = "auto", dtype: str | None = None,
                prefill_chunk: int | None = None, max_batch_size: int = 8, batch_timeout: float = 0.01,
                max_tokens_limit: int = 1024) -> ls.LitServer:
    """A LitServer with ``POST /v1/completions`` and ``GET /health`` for the model in ``directory``, one
    inference worker on ``accelerator`` (``cpu``, ``cuda`` or ``auto``)."""
    api = CompletionAPI(directory, dtype=dtype, prefill_chunk=prefill_chunk, max_batch_size=max_batch_size,
                        batch_timeout=batch_timeout, max_tokens_limit=max_tokens_limit)
    return ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=1, timeout=QUEUE_TIMEOUT_S)


def _sigterm_handler(main_pid: int):
    def handler(signum, frame):
        if os.getpid() != main_pid:  # a forked API server: uvicorn re-raises SIGTERM after its own shutdown
            raise SystemExit(0)
        raise KeyboardInterrupt  # LitServer.run shuts everything down on it

    return handler


def run(server: ls.LitServer, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve until interrupted; SIGTERM shuts down as cleanly as Ctrl-C (workers stopped, nothing left)."""
    signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    server.run(host=host, port=port, num_api_servers=1, generate_client_file=False, log_level=log_level)
