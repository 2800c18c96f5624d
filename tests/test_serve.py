"""`mixarch serve` on a built tiny model, in a subprocess on a free loopback port: completions (JSON and
server-sent events), 400s for bad requests while it keeps serving, and 32 concurrent clients whose outputs
equal sequential generation (the server runs in float64 so batch shapes cannot flip an argmax)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import run_cli

import mixarch
from mixarch.cli.main import main
from mixarch.generate import SamplingParams, load_tokenizer, stream_text

STARTUP_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: dict | bytes | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET (no body) or a JSON POST."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def events(raw: bytes) -> list:
    """The ``data:`` payloads of a server-sent-event body (JSON decoded, ``[DONE]`` kept as a string)."""
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


class Served:
    def __init__(self, url: str, directory):
        self.url, self.completions = url, url + "/v1/completions"
        self.model = mixarch.load(directory, dtype=torch.float64)
        self.tokenizer = load_tokenizer(directory)

    def sequential(self, prompt: str, max_tokens: int, temperature: float = 0.0, seed: int | None = None,
                   stop: tuple[str, ...] = ()) -> str:
        """What one request should return: the same generation, alone and in-process."""
        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, seed=seed,
                                stop=frozenset({self.tokenizer.eos_id}))
        steps = stream_text(self.model, self.tokenizer, [self.tokenizer.encode(prompt)], [params], [list(stop)])
        return "".join(deltas[0].text for deltas in steps if deltas[0] is not None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("served")
    assert main(["build", "blueprints/tiny.yaml", "--set", "model.init_std=0.5", "--out", str(directory),
                 "--json"]) == 0
    port = free_port()
    log = open(directory / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mixarch", "serve", str(directory), "--port", str(port),
                             "--dtype", "float64", "--max-batch-size", "8", "--batch-timeout", "0.05"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, (directory / "server.log").read_text()
            try:
                if request(url + "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server not healthy in time:\n" + (directory / "server.log").read_text()
            time.sleep(0.5)
        yield Served(url, directory)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:  # anything the server left in its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
    assert proc.returncode == 0, (directory / "server.log").read_text()


def test_health(server):
    status, _, body = request(server.url + "/health")
    assert status == 200 and body == b"ok"


def test_completion(server):
    status, headers, raw = request(server.completions, {"prompt": "Hello", "max_tokens": 7, "temperature": 0})
    assert status == 200 and headers["content-type"] == "application/json"
    body = json.loads(raw)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "tiny"
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] in ("length", "stop")
    assert choice["text"] == server.sequential("Hello", 7)
    n = body["usage"]["completion_tokens"]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n} and n <= 7


def test_streaming_equals_non_streaming(server):
    request_body = {"prompt": "Streaming", "max_tokens": 9, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}
    status, headers, raw = request(server.completions, request_body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    chunks = events(raw)
    assert chunks[-1] == "[DONE]"
    *text_chunks, usage_chunk = chunks[:-1]
    assert len({c["id"] for c in chunks[:-1]}) == 1
    assert all(c["object"] == "text_completion" and len(c["choices"]) == 1 for c in text_chunks)
    assert [c["choices"][0]["finish_reason"] for c in text_chunks][:-1] == [None] * (len(text_chunks) - 1)
    assert text_chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    text = "".join(c["choices"][0]["text"] for c in text_chunks)
    assert text == server.sequential("Streaming", 9)
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 9
    whole = json.loads(request(server.completions, {**request_body, "stream": False})[2])
    assert whole["choices"][0]["text"] == text


def test_stop_string_and_seeded_sampling(server):
    full = server.sequential("Stop here", 16)
    stop = full[3:5]
    body = json.loads(request(server.completions, {"prompt": "Stop here", "max_tokens": 16, "temperature": 0,
                                                   "stop": [stop, "never"]})[2])
    assert body["choices"][0]["text"] == full[:full.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"
    sampled = {"prompt": "Sample", "max_tokens": 8, "temperature": 0.9, "top_p": 0.95, "seed": 11}
    texts = {json.loads(request(server.completions, sampled)[2])["choices"][0]["text"] for _ in range(2)}
    assert texts == {server.sequential("Sample", 8, temperature=0.9, seed=11)}


@pytest.mark.parametrize("body, param", [
    (b'{"prompt": "x", "max_tokens":', None),
    (b"[1, 2]", None),
    (b"not json at all", None),
    ({"prompt": "x", "temperature": 3}, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 100000}, "max_tokens"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "x", "temprature": 0.5}, "temprature"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": [1, 999]}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
])
def test_bad_requests_get_400_and_the_server_keeps_serving(server, body, param):
    status, headers, raw = request(server.completions, body)
    assert status == 400 and headers["content-type"] == "application/json"
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert request(server.completions, {"prompt": "ok", "max_tokens": 2})[0] == 200


def test_32_concurrent_clients_get_their_sequential_outputs(server):
    def body(i: int) -> dict:
        prompt = f"client {i}: " + "abcdefghij"[: i % 11]  # prompt lengths 10..20
        if i % 8 == 7:  # some sampled, seeded per request
            return {"prompt": prompt, "max_tokens": 6, "temperature": 0.8, "seed": i, "stream": i % 2 == 0}
        return {"prompt": prompt, "max_tokens": 2 + i % 7, "temperature": 0, "stream": i % 2 == 0}

    def call(i: int) -> tuple[int, str]:
        status, _, raw = request(server.completions, body(i), timeout=120)
        if status != 200:
            return status, raw.decode()
        if body(i)["stream"]:
            chunks = events(raw)
            assert chunks[-1] == "[DONE]"
            return status, "".join(c["choices"][0]["text"] for c in chunks[:-1])
        return status, json.loads(raw)["choices"][0]["text"]

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(32)))
    elapsed = time.monotonic() - start
    assert [status for status, _ in results] == [200] * 32, results
    for i, (_, text) in enumerate(results):
        b = body(i)
        assert text == server.sequential(b["prompt"], b["max_tokens"], b["temperature"], b.get("seed")), i
    assert elapsed < 60


def test_serve_rejects_bad_arguments_before_starting(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "serve", str(tmp_path / "missing"))
    assert rc == 2 and "not a directory written by `mixarch build --out`" in err
    assert main(["build", "blueprints/tiny.yaml", "--out", str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    for args, message in ((["--port", "80"], "--port: expected a port from 1024 to 65535"),
                          (["--host", "example.com"], "--host: invalid choice"),
                          (["--batch-timeout", "-1"], "--batch-timeout: expected seconds in [0, 60)"),
                          (["--max-batch-size", "0"], "--max-batch-size: expected a positive integer")):
        rc, _, err = run_cli(capsys, "serve", str(tmp_path), *args)
        assert rc == 2 and message in err, err
    (tmp_path / "model.safetensors").unlink()
    rc, _, err = run_cli(capsys, "serve", str(tmp_path))
    assert rc == 2 and "no model.safetensors in the model directory" in err
