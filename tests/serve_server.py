"""A real `charrnn serve` in a subprocess on 127.0.0.1 (any free port), and small HTTP clients for it."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="charrnn serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("starlette", reason="charrnn serve needs the serve extra: pip install -e '.[serve]'")

from test_sampling import TEXT, trained_model  # noqa: E402

from charrnn.saved import save_model  # noqa: E402

STARTUP_SECONDS = 120  # a fresh machine compiles the kernels first


def save_tiny_model(directory: Path, hidden=16, unigram=True) -> Path:
    """A small LSTM trained a few steps (predictions far from uniform), saved as a checkpoint."""
    model, vocab = trained_model("lstm", hidden=hidden)
    meta = {"iteration": 25}
    if unigram:  # where unprimed samples start, as training records it
        counts = [TEXT.count(symbol) for symbol in vocab.symbols]
        meta["unigram"] = [count / sum(counts) for count in counts]
    path = directory / "model.npz"
    save_model(path, model, vocab, meta)
    return path


class Server:
    """`charrnn serve CHECKPOINT --port 0 OPTIONS` until stop(); .port is the one it printed."""

    def __init__(self, checkpoint, *options):
        command = [sys.executable, "-m", "charrnn", "serve", str(checkpoint), "--port", "0", *map(str, options)]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.stop()
            pytest.fail(f"charrnn serve did not start: {line!r} {self.process.stderr.read()[-2000:]}")
        self.port = int(match.group(1))
        while time.monotonic() < deadline:  # the socket listens from the start; uvicorn answers once it runs
            try:
                if get(self.port, "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("charrnn serve printed its address but never answered /healthz")

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        out, err = self.process.communicate()
        return self.process.returncode, out, err


def connection(port, timeout=30):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def get(port, path):
    """(status, JSON body) of GET path."""
    conn = connection(port)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def post(port, body, path="/v1/generate"):
    """(status, JSON body) of POST path with a JSON body (or raw bytes)."""
    conn = connection(port)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def events(response):
    """(name, data) of each server-sent event of a response, as they arrive."""
    name, data = "message", ""
    while True:
        line = response.readline()
        if not line:
            return
        line = line.decode("utf-8").rstrip("\n")
        if line == "":
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:]


def stream(port, body):
    """(status, [(name, data), ...]) of a streamed request, read to its end."""
    conn = connection(port)
    try:
        conn.request("POST", "/v1/generate", body=json.dumps({**body, "stream": True}).encode())
        response = conn.getresponse()
        if response.status != 200:
            return response.status, json.loads(response.read())
        return 200, list(events(response))
    finally:
        conn.close()


def streamed_texts(received):
    """The texts of each sample and the done event's data from stream()'s events."""
    start = next(data for name, data in received if name == "start")
    texts = [""] * start["num_samples"]
    for name, data in received:
        if name == "message":
            texts[data["sample"]] += data["text"]
    done = [data for name, data in received if name == "done"]
    return texts, done[0] if done else None
