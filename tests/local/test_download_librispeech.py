"""The downloader against a loopback HTTP server serving tarballs in the official format."""

import hashlib
import http.server
import re
import tarfile
import threading

import pytest

from download_librispeech import ChecksumError, download_subset, fetch


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support (as the openslr mirrors have)."""

    def do_GET(self):  # noqa: N802
        # Recorded before the reply: the client may finish reading (and the test assert) before this thread
        # returns from the write.
        self.server.requests.append(self.headers.get("Range"))
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        if start >= len(data) and match:
            self.send_error(416)
            return
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(synthetic_librispeech, tmp_path_factory):
    """Serves dev-clean.tar.gz (LibriSpeech/dev-clean/... inside, as the official tarballs)."""
    root = tmp_path_factory.mktemp("mirror")
    with tarfile.open(root / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(synthetic_librispeech / "dev-clean", arcname="LibriSpeech/dev-clean")
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    md5 = hashlib.md5((root / "dev-clean.tar.gz").read_bytes()).hexdigest()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", md5, root / "dev-clean.tar.gz", httpd
    httpd.shutdown()


def test_good_md5_downloads_and_unpacks_once(server, tmp_path, synthetic_librispeech):
    url, md5, _, _ = server
    target = download_subset("dev-clean", tmp_path, url, {"dev-clean": md5})
    assert (target / ".complete").exists()
    assert sorted(p.name for p in target.glob("*/*/*.flac")) == sorted(
        p.name for p in (synthetic_librispeech / "dev-clean").glob("*/*/*.flac")
    )
    (tmp_path / "dev-clean.tar.gz").unlink()
    assert download_subset("dev-clean", tmp_path, url, {"dev-clean": md5}) == target  # no second download


def test_wrong_md5_fails_loudly_and_unpacks_nothing(server, tmp_path):
    url, md5, _, _ = server
    with pytest.raises(ChecksumError, match=f"does not match the expected {'0' * 32}"):
        download_subset("dev-clean", tmp_path, url, {"dev-clean": "0" * 32})
    assert (tmp_path / "dev-clean.tar.gz.md5-mismatch").exists()
    assert not (tmp_path / "LibriSpeech").exists()


def test_partial_download_resumes_with_a_range_request(server, tmp_path):
    url, md5, archive, httpd = server
    data = archive.read_bytes()
    (tmp_path / "dev-clean.tar.gz.part").write_bytes(data[: len(data) // 2])
    fetch(f"{url}/dev-clean.tar.gz", tmp_path / "dev-clean.tar.gz")
    assert httpd.requests[-1] == f"bytes={len(data) // 2}-"
    assert hashlib.md5((tmp_path / "dev-clean.tar.gz").read_bytes()).hexdigest() == md5


def test_missing_file_names_the_url(server, tmp_path):
    url, _, _, _ = server
    with pytest.raises(RuntimeError, match="HTTP 404"):
        fetch(f"{url}/nope.tar.gz", tmp_path / "nope.tar.gz")
