import functools
import hashlib
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from charrnn import corpora
from charrnn.corpora import CorpusSpec, build_stdlib_corpus, default_corpus_path, fetch_corpus
from charrnn.data import load_corpus
from charrnn.errors import CharrnnError

PAYLOAD = ("To be, or not to be: that is the question.\n" * 3000).encode("utf-8")  # ~130 KB


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server on an ephemeral port serving tmp_path/www; yields its base URL."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # urllib would send even 127.0.0.1 through a proxy
    root = tmp_path / "www"
    root.mkdir()
    (root / "input.txt").write_bytes(PAYLOAD)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def no_data_dir(monkeypatch):
    """Every test starts without CHARRNN_DATA, whatever the machine running them sets."""
    monkeypatch.delenv(corpora.DATA_ENV, raising=False)


@pytest.fixture
def test_corpus(monkeypatch):
    """Register a corpus whose checksum matches PAYLOAD."""
    spec = CorpusSpec(
        "unit-test",
        "served locally",
        url="http://invalid.invalid/input.txt",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
    )
    monkeypatch.setitem(corpora.CORPORA, spec.name, spec)
    return spec


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def forbid_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_fetch_downloads_verifies_and_reports_progress(tmp_path, server, test_corpus, capsys):
    dest_dir = tmp_path / "data"
    path = fetch_corpus("unit-test", dest_dir, url=f"{server}/input.txt")
    assert path == dest_dir / "unit-test" / "input.txt"
    assert path.read_bytes() == PAYLOAD
    assert files_under(dest_dir) == ["unit-test/input.txt"]  # no temp file left behind
    err = capsys.readouterr().err
    assert "downloading unit-test" in err and "100%" in err


def test_cached_file_with_right_checksum_is_reused_offline(tmp_path, server, test_corpus, monkeypatch):
    path = fetch_corpus("unit-test", tmp_path, url=f"{server}/input.txt", progress=False)
    forbid_network(monkeypatch)
    assert fetch_corpus("unit-test", tmp_path, url=f"{server}/input.txt") == path
    assert path.read_bytes() == PAYLOAD


def test_cached_file_with_wrong_checksum_is_replaced(tmp_path, server, test_corpus):
    stale = tmp_path / "unit-test" / "input.txt"
    stale.parent.mkdir()
    stale.write_bytes(b"truncated")
    assert fetch_corpus("unit-test", tmp_path, url=f"{server}/input.txt", progress=False).read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, server):
    dest_dir = tmp_path / "data"
    with pytest.raises(CharrnnError) as info:
        fetch_corpus("tinyshakespeare", dest_dir, url=f"{server}/input.txt", progress=False)
    message = str(info.value)
    assert "sha256" in message and corpora.CORPORA["tinyshakespeare"].sha256 in message
    assert "download it yourself" in message and "\n" not in message
    assert files_under(dest_dir) == []


def test_http_404_is_a_user_error(tmp_path, server, test_corpus):
    with pytest.raises(CharrnnError, match=r"HTTP 404.*download it yourself"):
        fetch_corpus("unit-test", tmp_path / "data", url=f"{server}/missing.txt", progress=False)
    assert files_under(tmp_path / "data") == []


def test_unreachable_server_is_a_user_error(tmp_path, test_corpus):
    with pytest.raises(CharrnnError, match="could not download unit-test"):
        fetch_corpus("unit-test", tmp_path, url="http://127.0.0.1:9/input.txt", progress=False)
    assert files_under(tmp_path) == []


def test_unknown_corpus_lists_known_ones(tmp_path):
    with pytest.raises(CharrnnError, match="known corpora: python-stdlib, tinyshakespeare"):
        fetch_corpus("war-and-peace", tmp_path)


def make_fake_stdlib(root):
    files = {
        "abc.py": "A = 1\n",
        "zzz.py": "Z = 26",  # no final newline
        "json/__init__.py": "J = 'é'\n",
        "test/test_abc.py": "TEST = 1\n",
        "site-packages/pkg.py": "PKG = 1\n",
        "notes.txt": "not python\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "latin.py").write_bytes(b"S = '\xe9'\n")  # not UTF-8: skipped


def test_stdlib_builder_rules_on_a_fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    make_fake_stdlib(root)
    dest = build_stdlib_corpus(tmp_path / "out" / "input.txt", max_bytes=10_000, stdlib_dir=root)
    assert dest.read_text(encoding="utf-8") == (
        "# file: abc.py\nA = 1\n# file: json/__init__.py\nJ = 'é'\n# file: zzz.py\nZ = 26\n"
    )
    capped = build_stdlib_corpus(tmp_path / "capped.txt", max_bytes=30, stdlib_dir=root)
    assert capped.read_bytes() == b"# file: abc.py\nA = 1\n"  # second file cut at its last whole line


def test_stdlib_builder_on_this_python(tmp_path):
    dest = build_stdlib_corpus(tmp_path / "input.txt", max_bytes=20_000)
    raw = dest.read_bytes()
    assert 10_000 < len(raw) <= 20_000 and raw.startswith(b"# file: ") and raw.endswith(b"\n")
    assert b"# file: test/" not in raw
    assert len(load_corpus(dest).vocab) > 20


def test_fetch_python_stdlib_builds_offline_then_reuses(tmp_path, monkeypatch):
    forbid_network(monkeypatch)
    built = []
    monkeypatch.setattr(
        corpora, "build_stdlib_corpus", lambda dest: built.append(dest) or build_stdlib_corpus(dest, max_bytes=5_000)
    )
    path = fetch_corpus("python-stdlib", tmp_path)
    assert path == tmp_path / "python-stdlib" / "input.txt" and path.stat().st_size > 0
    assert fetch_corpus("python-stdlib", tmp_path) == path and len(built) == 1


def test_default_corpus_prefers_tinyshakespeare(tmp_path, monkeypatch):
    forbid_network(monkeypatch)
    project = tmp_path / "main"
    beside = tmp_path / "shared" / "data" / "tinyshakespeare" / "input.txt"  # a folder outside the project
    beside.parent.mkdir(parents=True)
    beside.write_text("beside the project\n")
    local = project / "data" / "tinyshakespeare" / "input.txt"
    local.parent.mkdir(parents=True)
    local.write_text("local copy\n")
    assert default_corpus_path(project) == local
    data_dir = tmp_path / "machine-data"
    named = data_dir / "tinyshakespeare" / "input.txt"
    named.parent.mkdir(parents=True)
    named.write_text("the machine's copy\n")
    monkeypatch.setenv("CHARRNN_DATA", str(data_dir))
    assert default_corpus_path(project) == named
    named.write_text("")  # an empty file is no corpus
    assert default_corpus_path(project) == local


def test_default_corpus_never_looks_outside_the_project(tmp_path, monkeypatch):
    forbid_network(monkeypatch)
    monkeypatch.setattr(corpora, "build_stdlib_corpus", lambda dest: build_stdlib_corpus(dest, max_bytes=5_000))
    project = tmp_path / "main"
    beside = tmp_path / "shared" / "data" / "tinyshakespeare" / "input.txt"
    beside.parent.mkdir(parents=True)
    beside.write_text("beside the project\n")
    monkeypatch.setenv("CHARRNN_DATA", str(tmp_path / "no-such-dir"))
    assert default_corpus_path(project) == project / "data" / "python-stdlib" / "input.txt"


def test_env_corpus_path(tmp_path, monkeypatch):
    assert corpora.env_corpus_path("tinyshakespeare") is None  # unset
    monkeypatch.setenv("CHARRNN_DATA", "")
    assert corpora.env_corpus_path("tinyshakespeare") is None
    monkeypatch.setenv("CHARRNN_DATA", str(tmp_path))
    assert corpora.env_corpus_path("tinyshakespeare") is None  # nothing there
    there = tmp_path / "tinyshakespeare" / "input.txt"
    there.parent.mkdir()
    there.write_text("x\n")
    assert corpora.env_corpus_path("tinyshakespeare") == there


def test_fetch_copies_a_verified_corpus_from_the_data_dir_offline(tmp_path, test_corpus, monkeypatch):
    forbid_network(monkeypatch)
    data_dir = tmp_path / "machine-data"
    (data_dir / "unit-test").mkdir(parents=True)
    (data_dir / "unit-test" / "input.txt").write_bytes(PAYLOAD)
    monkeypatch.setenv("CHARRNN_DATA", str(data_dir))
    path = fetch_corpus("unit-test", tmp_path / "data")
    assert path == tmp_path / "data" / "unit-test" / "input.txt" and path.read_bytes() == PAYLOAD
    assert files_under(tmp_path / "data") == ["unit-test/input.txt"]


def test_fetch_downloads_when_the_data_dir_copy_is_wrong(tmp_path, server, test_corpus, monkeypatch):
    data_dir = tmp_path / "machine-data"
    (data_dir / "unit-test").mkdir(parents=True)
    (data_dir / "unit-test" / "input.txt").write_bytes(b"an edited copy")
    monkeypatch.setenv("CHARRNN_DATA", str(data_dir))
    path = fetch_corpus("unit-test", tmp_path / "data", url=f"{server}/input.txt", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert (data_dir / "unit-test" / "input.txt").read_bytes() == b"an edited copy"  # left as it was


def test_unwritable_destination_is_a_user_error(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CharrnnError, match="cannot write .*choose a writable directory"):
        build_stdlib_corpus(tmp_path / "a-file" / "input.txt", max_bytes=5_000)


def test_default_corpus_falls_back_to_stdlib(tmp_path, monkeypatch):
    forbid_network(monkeypatch)
    monkeypatch.setattr(corpora, "build_stdlib_corpus", lambda dest: build_stdlib_corpus(dest, max_bytes=5_000))
    monkeypatch.chdir(tmp_path)
    assert default_corpus_path() == tmp_path / "data" / "python-stdlib" / "input.txt"
    assert (tmp_path / "data" / "python-stdlib" / "input.txt").stat().st_size > 0
