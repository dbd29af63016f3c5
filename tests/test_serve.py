"""`charrnn serve` over real HTTP: a server in its own process on 127.0.0.1, clients on sockets."""

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cli_runner import run_main
from serve_server import Server, connection, events, get, post, save_tiny_model, stream, streamed_texts

from charrnn.commands.serve import DEFAULT_OUTBOX_CHARS
from charrnn.engine import DEFAULT_OUTBOX_CHARS as ENGINE_OUTBOX_CHARS
from charrnn.sampling import generate_text
from charrnn.saved import load_model

MAX_STREAMS = 4  # and as many waiting
MAX_LENGTH = 2_000_000  # texts that run for longer than any test
MAX_UNREAD = 50_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server, checkpoint path) of one server for the module, with small limits to reach."""
    checkpoint = save_tiny_model(tmp_path_factory.mktemp("serve"))
    server = Server(
        checkpoint,
        "--max-streams",
        MAX_STREAMS,
        "--max-length",
        MAX_LENGTH,
        "--max-prime",
        500,
        "--max-unread",
        MAX_UNREAD,
    )
    yield server, checkpoint
    code, _, err = server.stop()
    assert code == 0, err[-2000:]
    assert "Traceback" not in err, err[-4000:]


def cli_text(capsys, checkpoint, *options):
    code, out, err = run_main(capsys, "sample", checkpoint, *options)
    assert code == 0, err
    return out


def wait_until_idle(port, seconds=5.0):
    """/healthz's status once no stream is generating and none waits (or the last one seen)."""
    deadline = time.monotonic() + seconds
    while True:
        status = get(port, "/healthz")[1]
        if (status["streams"] == 0 and status["waiting"] == 0) or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


# ------------------------------------------------------------------------------------ generate
@pytest.mark.parametrize(
    "request_options, cli_options",
    [
        ({"prime": "the ", "length": 300, "seed": 5}, ["--prime", "the ", "-n", 300, "--seed", 5]),
        (
            {"prime": "the d", "length": 200, "seed": 11, "temperature": 0.7, "top_k": 5},
            ["--prime", "the d", "-n", 200, "--seed", 11, "-t", 0.7, "--top-k", 5],
        ),
        ({"length": 150, "seed": 3, "top_p": 0.8}, ["-n", 150, "--seed", 3, "--top-p", 0.8]),
        ({"prime": "a", "length": 80, "argmax": True}, ["--prime", "a", "-n", 80, "--argmax"]),
    ],
)
def test_a_seed_gives_the_text_charrnn_sample_gives(served, capsys, request_options, cli_options):
    server, checkpoint = served
    status, answer = post(server.port, request_options)
    assert status == 200, answer
    text = answer["samples"][0]
    assert cli_text(capsys, checkpoint, *cli_options) == text + ("" if text.endswith("\n") else "\n")
    assert text.startswith(request_options.get("prime", ""))
    assert len(text) == len(request_options.get("prime", "")) + request_options["length"]


def test_several_samples_are_charrnn_samples_samples(served):
    server, checkpoint = served
    model, vocab, meta = load_model(checkpoint)
    status, answer = post(server.port, {"prime": "the c", "length": 600, "seed": 21, "num_samples": 3, "top_p": 0.9})
    assert status == 200
    expected = generate_text(
        model, vocab, 600, prime="the c", seed=21, num_samples=3, top_p=0.9, start_probs=meta["unigram"]
    )
    assert answer["samples"] == expected
    assert len(set(expected)) == 3


def test_without_a_seed_the_server_picks_one_and_says_which(served):
    server, _ = served
    first = post(server.port, {"prime": "the ", "length": 100})[1]
    again = post(server.port, {"prime": "the ", "length": 100, "seed": first["seed"]})[1]
    assert isinstance(first["seed"], int) and again == first
    assert post(server.port, {"prime": "the ", "length": 100})[1]["seed"] != first["seed"]


def test_streamed_events_carry_the_whole_text(served):
    server, _ = served
    body = {"prime": "the m", "length": 700, "seed": 8, "num_samples": 2}
    status, received = stream(server.port, body)
    assert status == 200
    names = [name for name, _ in received]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"message"}
    assert received[0][1] == {"seed": 8, "num_samples": 2, "length": 700}
    first = [data["text"] for name, data in received if name == "message" and data["sample"] == 0][0]
    assert first.startswith("the m")  # the prime first, as charrnn sample prints it
    texts, done = streamed_texts(received)
    assert texts == post(server.port, body)[1]["samples"]
    assert done == {"seed": 8, "characters": [705, 705]}


def test_model_is_what_info_json_says(served, capsys):
    server, checkpoint = served
    code, out, _ = run_main(capsys, "info", checkpoint, "--json")
    assert code == 0
    assert get(server.port, "/v1/model") == (200, json.loads(out))
    status, health = get(server.port, "/healthz")
    assert status == 200 and health["status"] == "ok" and health["max_streams"] == MAX_STREAMS


def test_the_page_is_self_contained(served):
    server, _ = served
    conn = connection(server.port)
    conn.request("GET", "/")
    response = conn.getresponse()
    page = response.read().decode()
    assert response.status == 200 and response.getheader("content-type").startswith("text/html")
    assert "<style>" in page and "v1/generate" in page
    for external in ("src=", "href=", "http://", "https://", "@import"):
        assert external not in page


# ------------------------------------------------------------------------------- concurrency
REQUESTS = [
    {"prime": "the ", "length": 900, "seed": 1},
    {"prime": "the cat", "length": 400, "seed": 2, "temperature": 0.6},
    {"length": 700, "seed": 3, "top_k": 3, "num_samples": 2},
    {"prime": "a", "length": 300, "argmax": True},
    {"prime": "the h", "length": 1200, "seed": 5, "top_p": 0.7, "temperature": 1.3},
    {"prime": "dog", "length": 500, "seed": 6, "num_samples": 3},
    {"prime": "the ", "length": 800, "seed": 7, "temperature": 0.9, "top_k": 6, "top_p": 0.95},
    {"prime": "mat", "length": 250, "seed": 8},
]


def test_same_seed_same_text_alone_or_among_others(served):
    server, _ = served
    alone = [post(server.port, body)[1]["samples"] for body in REQUESTS]
    for _ in range(2):  # requests join and leave the batch at different moments each time
        with ThreadPoolExecutor(MAX_STREAMS) as pool:  # never more in flight than may wait: none refused
            together = list(pool.map(lambda body: stream(server.port, body), REQUESTS))
        assert [status for status, _ in together] == [200] * len(REQUESTS)
        assert [streamed_texts(received)[0] for _, received in together] == alone
    assert wait_until_idle(server.port)["streams"] == 0


def open_stream(port, body, receive_buffer=None):
    """A raw socket that has sent a streamed request and read up to its "start" event."""
    client = socket.socket()
    if receive_buffer:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.settimeout(30)
    client.connect(("127.0.0.1", port))
    data = json.dumps({**body, "stream": True}).encode()
    client.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
    received = b""
    while b"event: start" not in received:
        received += client.recv(4096)
    return client


def read_head(client):
    """The status line and headers of a response, read byte by byte so nothing after them is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = client.recv(1)
        if not byte:
            break
        head += byte
    return head


def read_until_closed(client):
    try:
        while client.recv(1 << 16):
            pass
    except OSError:  # closed under it
        pass


def test_a_client_that_disconnects_frees_its_rows_at_once(served):
    server, _ = served
    before = get(server.port, "/healthz")[1]["cancelled"]
    # Every row taken by a text that would run for minutes, read on (a client that stops reading is dropped).
    clients = [open_stream(server.port, {"length": MAX_LENGTH}) for _ in range(MAX_STREAMS)]
    readers = [threading.Thread(target=read_until_closed, args=(client,), daemon=True) for client in clients]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 10
    while get(server.port, "/healthz")[1]["streams"] < MAX_STREAMS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert get(server.port, "/healthz")[1]["streams"] == MAX_STREAMS
    for client in clients:
        client.shutdown(socket.SHUT_RDWR)
        client.close()
    status = wait_until_idle(server.port, seconds=2.0)
    assert status["streams"] == 0 and status["cancelled"] - before == MAX_STREAMS and status["dropped"] == 0
    assert post(server.port, {"length": 50, "seed": 1})[0] == 200


def test_a_client_that_never_reads_is_dropped_and_the_others_are_served(served):
    server, _ = served
    before = get(server.port, "/healthz")[1]["dropped"]
    stalled = open_stream(server.port, {"length": MAX_LENGTH, "seed": 4}, receive_buffer=4096)  # and never reads
    others = [{"prime": "the ", "length": 3000, "seed": seed} for seed in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda body: post(server.port, body), others))
    assert [status for status, _ in results] == [200, 200, 200]
    deadline = time.monotonic() + 30
    while get(server.port, "/healthz")[1]["dropped"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    status = get(server.port, "/healthz")[1]
    assert status["dropped"] == before + 1, json.dumps(status)
    assert wait_until_idle(server.port)["streams"] == 0
    read_until_closed(stalled)  # the server closed it: what was buffered, then end-of-file
    stalled.close()


def test_more_connections_than_rows_get_a_json_503_and_the_server_goes_on(served):
    server, _ = served
    body = json.dumps({"length": MAX_LENGTH, "stream": True}).encode()
    request = b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    clients = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(200)]
    heads = [None] * len(clients)
    go, answered = threading.Barrier(len(clients)), threading.Barrier(len(clients) + 1)

    def client_says(index):  # all at once; an accepted stream is read on until the test closes it
        client = clients[index]
        go.wait()
        client.sendall(request)
        heads[index] = read_head(client)
        answered.wait()
        if b" 200 " in heads[index].split(b"\r\n", 1)[0]:
            read_until_closed(client)

    threads = [threading.Thread(target=client_says, args=(index,), daemon=True) for index in range(len(clients))]
    try:
        for thread in threads:
            thread.start()
        answered.wait(timeout=60)
        statuses = [int(head.split(b" ", 2)[1]) for head in heads]
        assert statuses.count(200) == 2 * MAX_STREAMS  # the batch's rows and as many waiting
        assert statuses.count(503) == len(clients) - 2 * MAX_STREAMS
        refused = next(head for head in heads if b" 503 " in head)
        assert b"retry-after: 1" in refused.lower() and b"content-type: application/json" in refused.lower()
        error = json.loads(clients[heads.index(refused)].recv(4096) or b"{}")["error"]
        assert error.startswith("the server is busy: ")
        assert get(server.port, "/healthz")[0] == 200
    finally:
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
    assert wait_until_idle(server.port)["streams"] == 0
    assert post(server.port, {"length": 20, "seed": 2})[0] == 200


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "body, cli_options",
    [
        ({"temperature": 0}, ["-t", 0]),
        ({"top_k": -1}, ["--top-k", -1]),
        ({"top_p": 1.5}, ["--top-p", 1.5]),
        ({"length": 0}, ["-n", 0]),
        ({"prime": "the Zoë"}, ["--prime", "the Zoë"]),
    ],
)
def test_refused_controls_are_the_command_lines_one_line_errors(served, capsys, body, cli_options):
    server, checkpoint = served
    code, _, err = run_main(capsys, "sample", checkpoint, *cli_options)
    assert code == 1
    status, answer = post(server.port, body)
    assert status == 400
    assert f"charrnn: error: {answer['error']}\n" == err


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{nope", "the request body is not valid JSON ("),
        (b'{"temperature": NaN}', "the request body is not valid JSON ("),
        (b"[1, 2]", "the request body must be a JSON object"),
        ({"prime": "the", "colour": "red"}, 'unknown field "colour" in the request; the fields are prime, length,'),
        ({"length": MAX_LENGTH + 1}, f"length {MAX_LENGTH + 1} is over this server's --max-length {MAX_LENGTH}"),
        ({"length": "long"}, 'length must be an integer, got "long"'),
        ({"argmax": 1}, "argmax must be true or false, got 1"),
        ({"seed": -4}, "seed must be an integer from 0 to"),
        ({"num_samples": 0}, "num_samples must be at least 1, got 0"),
        ({"num_samples": MAX_STREAMS + 1}, f"num_samples {MAX_STREAMS + 1} is more than this server's --max-streams"),
        ({"prime": "t" * 501}, "the prime is 501 characters, over this server's --max-prime 500"),
    ],
)
def test_bad_requests_are_json_errors(served, body, message):
    server, _ = served
    status, answer = post(server.port, body)
    assert status == 400
    assert answer["error"].startswith(message) and "\n" not in answer["error"]


def test_unknown_endpoints_and_methods_are_json_errors(served):
    server, _ = served
    status, answer = get(server.port, "/v2/generate")
    assert status == 404 and answer["error"].startswith("no such endpoint GET /v2/generate; the endpoints are")
    status, answer = get(server.port, "/v1/generate")
    assert status == 405 and answer["error"].startswith("GET is not allowed on /v1/generate")


def test_a_10_mb_body_is_refused_before_it_is_read(served):
    server, _ = served
    client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    size = 10 * 1024 * 1024
    client.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    client.sendall(b'{"prime": "' + b"t" * 16000)  # and no more: the answer must not wait for the rest
    answer = read_answer(client)  # the server answers and closes the connection
    client.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["error"] == (
        "the request body is 10,485,760 bytes, over this server's limit of 1,048,576; send a shorter prime"
    )
    assert post(server.port, {"length": 10, "seed": 1})[0] == 200


def read_answer(client):
    """What the server sent before it closed the connection (it may reset it, having left our body unread)."""
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def test_a_chunked_body_is_refused_once_it_passes_the_limit(served):
    server, _ = served
    client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    client.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 60000
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it stops reading past the limit
        for _ in range(20):  # 1.2 MB, past the 1 MB limit
            client.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    answer = read_answer(client)
    client.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"over this server's limit of 1,048,576 bytes" in answer
    assert post(server.port, {"length": 10, "seed": 1})[0] == 200


# --------------------------------------------------------------------------- the command line
def test_a_port_in_use_is_one_line(served, capsys):
    server, checkpoint = served
    code, out, err = run_main(capsys, "serve", checkpoint, "--port", server.port)
    assert code == 1 and out == ""
    assert (
        err
        == f"charrnn: error: port {server.port} on 127.0.0.1 is in use; stop what listens there or pass --port another\n"
    )


def test_a_file_that_is_not_a_checkpoint_is_one_line(capsys, tmp_path):
    bogus = tmp_path / "notes.npz"
    bogus.write_text("not an archive")
    code, _, err = run_main(capsys, "serve", bogus)
    assert code == 1 and err.startswith("charrnn: error: ") and err.count("\n") == 1


def test_without_the_serve_extra_the_command_says_how_to_install_it(served):
    _, checkpoint = served
    hide = "import sys; sys.modules['uvicorn'] = None; from charrnn.cli import main; main(sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", hide, "serve", str(checkpoint)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr == "charrnn: error: charrnn serve needs the serve extra: pip install -e '.[serve]'\n"


def test_the_unread_limit_has_one_default():
    assert DEFAULT_OUTBOX_CHARS == ENGINE_OUTBOX_CHARS


def test_ctrl_c_stops_the_server_while_a_client_streams(tmp_path):
    server = Server(save_tiny_model(tmp_path), "--max-length", MAX_LENGTH)
    conn = connection(server.port)
    conn.request("POST", "/v1/generate", body=json.dumps({"length": MAX_LENGTH, "stream": True}).encode())
    response = conn.getresponse()
    received = events(response)
    assert next(received)[0] == "start"
    reader = threading.Thread(target=lambda: list(received), daemon=True)
    reader.start()
    code, out, err = server.stop()
    assert code == 0, err
    assert out.endswith("charrnn serve: stopped\n") and "Traceback" not in err
    reader.join(10)
    assert not reader.is_alive()
    conn.close()
