"""The HTTP side of ``mixarch serve``: a LitServe spec for OpenAI's ``POST /v1/completions``.

Requests are parsed, validated and tokenized here, in the API server process, so a bad request gets its 400
before it can reach (and fail) a batch of other requests. Valid ones go to the inference worker's queue; its
per-step text deltas come back through LitServe's response buffer and leave as one JSON completion or as
server-sent events (``data: {...}`` chunks, then ``data: [DONE]``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem

from mixarch.serve.schema import (
    InvalidRequest,
    choice,
    completion_body,
    completion_id,
    error_body,
    now,
    parse_request,
    usage,
)

COMPLETIONS_PATH = "/v1/completions"
logger = logging.getLogger(__name__)


class GenerationFailed(Exception):
    """The worker reported an error (or a queue timeout, ``status`` 504) for a request."""

    def __init__(self, status: int = 500):
        super().__init__(f"generation failed ({status})")
        self.status = status


def worker_error_status(data) -> int:
    """The HTTP status of an error the worker sent: an HTTPException's own (e.g. 504), else 500."""
    if isinstance(data, bytes):
        try:
            data = pickle.loads(data)
        except Exception:  # an error that does not unpickle is still an error
            return 500
    return int(getattr(data, "status_code", 500))


def invalid(message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, param), status_code=400)


class CompletionSpec(LitSpec):
    """``POST /v1/completions`` for :class:`mixarch.serve.api.CompletionAPI`."""

    def __init__(self, directory: str, *, max_tokens_limit: int):
        super().__init__()
        self.api_path = COMPLETIONS_PATH
        self.directory = directory
        self.max_tokens_limit = max_tokens_limit
        self.tokenizer = None
        self.model_name = ""
        self.vocab_size = 0
        self.add_endpoint(self.api_path, self.completions, ["POST"])

    @property
    def stream(self) -> bool:
        return True  # the worker always streams deltas; each request chooses SSE or one JSON body

    def pre_setup(self, lit_api) -> None:
        from mixarch.errors import MixarchError
        from mixarch.generate import load_tokenizer
        from mixarch.model.io import WEIGHTS_FILE, read_resolved

        resolved = read_resolved(self.directory)
        if not (Path(self.directory) / WEIGHTS_FILE).is_file():
            raise MixarchError(f"no {WEIGHTS_FILE} in the model directory", source=self.directory)
        self.model_name, self.vocab_size = resolved.name, resolved.model.vocab_size
        self.tokenizer = load_tokenizer(self.directory, self.vocab_size)

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            ids = prompt
            if any(not 0 <= t < self.vocab_size for t in ids):
                raise InvalidRequest(f"prompt: token ids must be in [0, {self.vocab_size})", "prompt")
        else:
            try:
                ids = self.tokenizer.encode(prompt)
            except ValueError as err:
                raise InvalidRequest(f"prompt: cannot be tokenized: {err}", "prompt") from None
        if not ids:
            raise InvalidRequest("prompt: must not be empty (the model needs at least one token)", "prompt")
        return ids

    async def completions(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError as err:
            return invalid(f"the request body is not valid JSON: {err}")
        try:
            req = parse_request(body, max_tokens_limit=self.max_tokens_limit)
            ids = self.tokenize(req.prompt)
        except InvalidRequest as err:
            return invalid(err.message, err.param)
        job = {"ids": ids, "params": req.sampling(self.tokenizer.eos_id), "stop": req.stop_strings}
        deltas = self.submit(job)
        head = (completion_id(), now(), self.model_name)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self.events(deltas, head, len(ids), include_usage),
                                     media_type="text/event-stream")
        return await self.complete(deltas, head, len(ids))

    def submit(self, job: dict) -> AsyncIterator[dict]:
        """Queue ``job`` for the worker; its text deltas, up to the one with a ``finish_reason``."""
        uid = str(uuid.uuid4())
        queue, event = deque(), asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event, response_queue=queue)
        self.request_queue.put((self.response_queue_id, uid, time.monotonic(), job))
        return self._deltas(uid, queue, event)

    async def _deltas(self, uid: str, queue: deque, event: asyncio.Event) -> AsyncIterator[dict]:
        try:
            async for data, status in self.data_streamer(queue, event, send_status=True):
                if status == LitAPIStatus.ERROR:
                    raise GenerationFailed(worker_error_status(data))
                if data is None:  # this request's row finished earlier in its batch
                    continue
                delta = json.loads(data)
                yield delta
                if delta["finish_reason"] is not None:
                    return
            raise GenerationFailed()  # the worker ended the batch without finishing this row
        finally:
            self.response_buffer.pop(uid, None)

    async def complete(self, deltas: AsyncIterator[dict], head: tuple, prompt_tokens: int) -> Response:
        pieces, reason, tokens = [], None, 0
        try:
            async for delta in deltas:
                pieces.append(delta["text"])
                reason, tokens = delta["finish_reason"], delta["tokens"]
        except GenerationFailed as err:
            logger.error("completion failed: %s", err)
            return JSONResponse(error_body("generation failed", kind="server_error"), status_code=err.status)
        return JSONResponse(completion_body(*head, [choice("".join(pieces), reason)], usage(prompt_tokens, tokens)))

    async def events(self, deltas: AsyncIterator[dict], head: tuple, prompt_tokens: int,
                     include_usage: bool) -> AsyncIterator[str]:
        tokens = 0
        try:
            async for delta in deltas:
                tokens = delta["tokens"]
                yield sse(completion_body(*head, [choice(delta["text"], delta["finish_reason"])]))
            if include_usage:
                yield sse(completion_body(*head, [], usage(prompt_tokens, tokens)))
        except GenerationFailed as err:
            logger.error("streamed completion failed: %s", err)
            yield sse(error_body("generation failed", kind="server_error"))
        yield "data: [DONE]\n\n"


def sse(body: dict) -> str:
    return f"data: {json.dumps(body)}\n\n"
