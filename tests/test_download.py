"""mindcv.io.download against a local HTTP server made by the test (never the internet): verified, cached,
atomic, resumable downloads, one download for two processes, mirrors, and one-line errors."""
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import MINI, ROOT
from mindcv.models import create_model
from mindcv.io.download import DownloadError, fetch
from mindcv.io.checkpoint import save_checkpoint_atomic

PAYLOAD = os.urandom(300_000)


class Server:
    """Serves `files` (name -> bytes) on 127.0.0.1; honours Range; `cut` names files whose connection drops
    halfway; counts requests per path."""

    def __init__(self, files, cut=()):
        self.files, self.cut, self.requests, self.ranges = files, set(cut), [], []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("/")[-1]
                server.requests.append(self.path)
                server.ranges.append(self.headers["Range"])
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers["Range"] else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut and not start:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-file
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    serving = Server({"w.bin": PAYLOAD, "net-" + hashlib.sha256(PAYLOAD).hexdigest()[:8] + ".ckpt": PAYLOAD,
                      "net-00000000.ckpt": PAYLOAD, "cut.bin": PAYLOAD}, cut={"cut.bin"})
    yield serving
    serving.close()


def test_a_verified_download_is_cached_and_not_fetched_again(server, tmp_path):
    url = f"{server.url}/w.bin#sha256={hashlib.sha256(PAYLOAD).hexdigest()}"
    path = fetch(url, str(tmp_path), progress=False)
    assert open(path, "rb").read() == PAYLOAD and os.listdir(tmp_path) == ["w.bin"]
    assert fetch(url, str(tmp_path), progress=False) == path
    assert server.requests == ["/w.bin"]


def test_mindcv_names_carry_their_hash_prefix(server, tmp_path):
    good = "net-" + hashlib.sha256(PAYLOAD).hexdigest()[:8] + ".ckpt"
    assert os.path.basename(fetch(f"{server.url}/{good}", str(tmp_path), progress=False)) == good
    with pytest.raises(DownloadError, match="does not match its sha256 .*the download was deleted"):
        fetch(f"{server.url}/net-00000000.ckpt", str(tmp_path), progress=False)
    assert sorted(os.listdir(tmp_path)) == [good]


def test_a_wrong_hash_leaves_nothing_in_the_cache(server, tmp_path):
    with pytest.raises(DownloadError, match="does not match its sha256"):
        fetch(f"{server.url}/w.bin#sha256={'0' * 64}", str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []


def test_a_dropped_connection_never_leaves_the_final_name_and_the_next_try_resumes(server, tmp_path):
    with pytest.raises(DownloadError, match=f"cannot download {server.url}/cut.bin .*put it in {tmp_path}"):
        fetch(f"{server.url}/cut.bin", str(tmp_path), progress=False)
    assert not os.path.exists(tmp_path / "cut.bin") and os.path.getsize(tmp_path / "cut.bin.part") < len(PAYLOAD)
    path = fetch(f"{server.url}/cut.bin#sha256={hashlib.sha256(PAYLOAD).hexdigest()}", str(tmp_path),
                 progress=False)
    assert open(path, "rb").read() == PAYLOAD and sorted(os.listdir(tmp_path)) == ["cut.bin"]
    assert server.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"]  # the second asked for the rest only


def test_the_mirror_setting_redirects_mindcvs_model_zoo(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MINDCV_DOWNLOAD_BASE", server.url + "/mirror/")
    fetch("https://download.mindspore.cn/toolkits/mindcv/convnext/w.bin", str(tmp_path), progress=False)
    assert server.requests == ["/mirror/convnext/w.bin"]


def test_no_server_is_one_line_naming_url_file_and_folder(tmp_path):
    with pytest.raises(DownloadError) as error:
        fetch("http://127.0.0.1:9/weights.ckpt", str(tmp_path), progress=False, timeout=5)
    message = str(error.value)
    assert "\n" not in message and "http://127.0.0.1:9/weights.ckpt" in message
    assert f"fetch weights.ckpt by hand and put it in {tmp_path}" in message


def test_two_processes_asking_at_once_download_once(server, tmp_path):
    script = ("import sys; from mindcv.io.download import fetch; "
              "print(fetch(sys.argv[1], sys.argv[2], progress=False))")
    processes = [subprocess.Popen([sys.executable, "-c", script, f"{server.url}/w.bin", str(tmp_path)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in processes]
    assert outputs == [str(tmp_path / "w.bin")] * 2 and server.requests == ["/w.bin"]


def test_ckpt_path_may_be_a_url(tmp_path, monkeypatch):
    """`--ckpt_path http://.../x.ckpt#sha256=...` (create_model's checkpoint_path) downloads into the cache, then
    loads through the same checks as a local file."""
    local = str(tmp_path / "tiny.ckpt")
    reference_model = create_model("convnext_atto", **MINI)
    save_checkpoint_atomic(reference_model, local)
    data = open(local, "rb").read()
    serving = Server({"tiny.ckpt": data})
    monkeypatch.setenv("MINDCV_HOME", str(tmp_path / "cache"))
    try:
        model = create_model("convnext_atto", **MINI,
                             checkpoint_path=f"{serving.url}/tiny.ckpt#sha256={hashlib.sha256(data).hexdigest()}")
    finally:
        serving.close()
    assert os.path.isfile(tmp_path / "cache" / "tiny.ckpt")
    for mine, theirs in zip(model.get_parameters(), reference_model.get_parameters()):
        np.testing.assert_array_equal(mine.asnumpy(), theirs.asnumpy())


def test_train_starts_from_weights_at_a_url(tmp_path):
    """`train.py --ckpt_path http://.../x.safetensors#sha256=...` downloads into $MINDCV_HOME, verifies and trains."""
    from safetensors.numpy import save_file
    from test_train import TINY
    source = create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
    save_file({p.name: p.asnumpy() for p in source.get_parameters()}, str(tmp_path / "start.safetensors"))
    data = open(tmp_path / "start.safetensors", "rb").read()
    serving = Server({"start.safetensors": data})
    try:
        result = subprocess.run(
            [sys.executable, "train.py", *TINY, "--num_samples", "16", "--batch_size", "16", "--epoch_size", "1",
             "--val_while_train", "False", "--ckpt_save_dir", str(tmp_path / "run"), "--ckpt_path",
             f"{serving.url}/start.safetensors#sha256={hashlib.sha256(data).hexdigest()}"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, "MINDCV_HOME": str(tmp_path / "cache")})
    finally:
        serving.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(tmp_path / "cache" / "start.safetensors") and serving.requests == ["/start.safetensors"]
    assert os.path.isfile(tmp_path / "run" / "convnext_atto-1_1.ckpt")
