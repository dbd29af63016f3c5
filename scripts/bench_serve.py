"""Load test of `charrnn serve`: 1, 8 and 32 concurrent streaming clients against one server on 127.0.0.1.

    python scripts/bench_serve.py                         # a 2x256 LSTM (random weights, 65 symbols), 30 s a level
    python scripts/bench_serve.py runs/shakespeare-3min --clients 1,8,32 --seconds 30
    python scripts/bench_serve.py --seconds 5             # a quick look

The server runs in its own process (`python -m charrnn serve CHECKPOINT --port 0`); the clients are
asyncio connections in this one, each asking for a streamed text (POST /v1/generate, "stream": true,
--length characters) again and again until the level's time is up, then hanging up mid-stream. A
random-weight model costs what a trained one of its shape does per character, so without CHECKPOINT
the script makes one of the shape asked for.

For each level it prints: the characters per second all clients received together; per client, the
median and 99th percentile of the time between characters (an event of n characters arriving t
seconds after the client's previous one counts as n gaps of t/n: the pace a reader sees), the median
over clients of each; the longest wait for an event; and errors (refused or failed requests, error
events, streams that ended early). Then the ratio of the last level's rate to the first's (the
target: 32 clients together receive at least 5x what one receives alone, with no errors), and how
long the server took to free a row after its client hung up. Bounded: at most MAX_CLIENTS clients and
MAX_SECONDS per level, 127.0.0.1 only. The machine (charrnn.machine) is printed first: figures from a
shared or loaded machine are not measurements of the server.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

MAX_CLIENTS = 256
MAX_SECONDS = 120
HOST = "127.0.0.1"
SYMBOLS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # 65, as Tiny Shakespeare's


def random_checkpoint(directory, layers, hidden):
    from charrnn.data import Vocab
    from charrnn.model import Model, ModelConfig
    from charrnn.saved import save_model

    vocab = Vocab.from_text(SYMBOLS)
    model = Model(ModelConfig("lstm", len(vocab), hidden, layers), seed=0)
    path = Path(directory) / f"lstm-{layers}x{hidden}.npz"
    save_model(path, model, vocab, {"iteration": 0})
    return path


def start_server(checkpoint, max_streams, length):
    command = [sys.executable, "-m", "charrnn", "serve", str(checkpoint), "--host", HOST, "--port", "0"]
    command += ["--max-streams", str(max_streams), "--max-length", str(length)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = server.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        server.kill()
        sys.exit(f"bench_serve: charrnn serve did not start: {line!r}")
    return server, int(match.group(1))


def health(port):
    with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=10) as response:
        return json.loads(response.read())


class Client:
    """One connection that streams texts one after another and notes when each event arrives."""

    def __init__(self, port, length, seed):
        self.port, self.length, self.seed = port, length, seed
        self.chars, self.gaps, self.waits, self.errors, self.texts = 0, [], [], [], 0

    async def run(self, deadline):
        reader = writer = None
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port)
            while time.monotonic() < deadline:
                self.seed += 1
                body = json.dumps({"length": self.length, "seed": self.seed, "stream": True}).encode()
                writer.write(
                    b"POST /v1/generate HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                if not await self._read_stream(reader, deadline):
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            self.errors.append(f"{type(error).__name__}: {error}")
        finally:
            if writer is not None:
                writer.close()  # mid-stream at the deadline: the server must free the row

    async def _read_stream(self, reader, deadline):
        """Reads one response; False when the time is up (or it failed), True when it finished."""
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 200:
            await reader.readexactly(int(headers.get("content-length", 0)))
            self.errors.append(f"HTTP {status}")
            return False
        buffer, last = b"", time.monotonic()
        while True:
            size = int((await reader.readline()).strip(), 16)  # chunked transfer encoding
            if size == 0:
                await reader.readline()
                self.errors.append("the stream ended without a done event")
                return False
            buffer += (await reader.readexactly(size + 2))[:-2]
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                name, data = "message", None
                for line in event.decode().split("\n"):
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                now = time.monotonic()
                if name == "message" and data["text"]:
                    n = len(data["text"])
                    self.chars += n
                    self.gaps.extend([(now - last) / n] * n)
                    self.waits.append(now - last)
                    last = now
                elif name == "done":
                    self.texts += 1
                    while int((await reader.readline()).strip(), 16):  # the chunked body's end
                        pass
                    await reader.readline()
                    return True
                elif name == "error":
                    self.errors.append(data["error"])
                    return False
            if time.monotonic() >= deadline:
                return False


async def run_level(port, clients, seconds, length):
    pool = [Client(port, length, seed=1000 * index) for index in range(clients)]
    started = time.monotonic()
    await asyncio.gather(*(client.run(started + seconds) for client in pool))
    elapsed = time.monotonic() - started
    medians = [np.median(c.gaps) for c in pool if c.gaps]
    p99s = [np.percentile(c.gaps, 99) for c in pool if c.gaps]
    return {
        "clients": clients,
        "seconds": elapsed,
        "chars_per_s": sum(c.chars for c in pool) / elapsed,
        "texts": sum(c.texts for c in pool),
        "median_gap_ms": 1e3 * float(np.median(medians)) if medians else None,
        "p99_gap_ms": 1e3 * float(np.median(p99s)) if p99s else None,
        "worst_p99_gap_ms": 1e3 * float(max(p99s)) if p99s else None,
        "longest_wait_ms": 1e3 * max((max(c.waits) for c in pool if c.waits), default=0.0),
        "errors": [error for c in pool for error in c.errors],
    }


async def row_freed_after_hangup(port, length):
    """Milliseconds from hanging up mid-stream to /healthz showing the row free."""
    reader, writer = await asyncio.open_connection(HOST, port)
    body = json.dumps({"length": length, "stream": True}).encode()
    writer.write(b"POST /v1/generate HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    while b"data:" not in await reader.readline():
        pass
    await reader.readline()
    while health(port)["streams"] == 0:
        await asyncio.sleep(0.001)
    writer.close()
    hung_up = time.monotonic()
    while health(port)["streams"] != 0:
        if time.monotonic() - hung_up > 10:
            return None
        await asyncio.sleep(0.001)
    return 1e3 * (time.monotonic() - hung_up)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint or run directory (default: a random-weight LSTM)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients of each level")
    parser.add_argument("--seconds", type=float, default=30.0, help=f"time per level (at most {MAX_SECONDS})")
    parser.add_argument("--length", type=int, default=2000, help="characters each request asks for")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    if not all(1 <= n <= MAX_CLIENTS for n in levels) or not 0 < args.seconds <= MAX_SECONDS:
        sys.exit(f"bench_serve: clients must be 1..{MAX_CLIENTS} and --seconds at most {MAX_SECONDS}")

    from charrnn import machine, parallel

    print(f"CPU: {machine.cpu_model()}, {parallel.usable_cores()} usable cores; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = args.checkpoint or random_checkpoint(directory, args.layers, args.hidden)
        server, port = start_server(checkpoint, max(levels), max(args.length, 10_000))
        try:
            while True:  # the server prints its address before uvicorn answers
                try:
                    model = json.loads(urllib.request.urlopen(f"http://{HOST}:{port}/v1/model", timeout=10).read())
                    break
                except OSError:
                    time.sleep(0.05)
            print(
                f"model: {model['cell']} {model['layers']}x{model['hidden']}, {model['vocab_size']} symbols; "
                f"{args.length} characters a request, {args.seconds:g} s a level"
            )
            asyncio.run(run_level(port, 1, min(2.0, args.seconds), args.length))  # warm-up, not reported
            results = []
            for clients in levels:
                results.append(asyncio.run(run_level(port, clients, args.seconds, args.length)))
                row = results[-1]
                print(
                    f"{clients:4d} clients  {row['chars_per_s']:9.0f} chars/s  texts {row['texts']:4d}  "
                    f"per client: median {row['median_gap_ms']:.3f} ms, p99 {row['p99_gap_ms']:.3f} ms "
                    f"(worst client {row['worst_p99_gap_ms']:.3f}) between characters; "
                    f"longest wait {row['longest_wait_ms']:.0f} ms; errors {len(row['errors'])}"
                    + (f" (first: {row['errors'][0]})" if row["errors"] else "")
                )
            freed_ms = asyncio.run(row_freed_after_hangup(port, max(args.length, 10_000)))
        finally:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=30)
    ratio = results[-1]["chars_per_s"] / results[0]["chars_per_s"]
    errors = sum(len(row["errors"]) for row in results)
    print(
        f"{levels[-1]} clients vs {levels[0]}: {ratio:.2f}x the characters per second (target >= 5x), "
        f"{errors} errors; a hung-up client's row was free {freed_ms:.1f} ms later"
        if freed_ms is not None
        else "a hung-up client's row was not freed within 10 s"
    )
    if args.json:
        print(json.dumps({"levels": results, "ratio": ratio, "row_freed_ms": freed_ms}))


if __name__ == "__main__":
    main()
