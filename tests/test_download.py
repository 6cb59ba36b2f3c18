"""mindcv.io.download against a local HTTP server made by the test (never the internet): verified, cached,
atomic, resumable downloads, one download for two processes, mirrors, and one-line errors."""
import contextlib
import fcntl
import gzip
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile

import numpy as np
import pytest

from conftest import MINI, ROOT
from mindcv.models import create_model
from mindcv.io.download import DownLoad, DownloadError, fetch
from mindcv.io.checkpoint import save_checkpoint_atomic

PAYLOAD = os.urandom(300_000)


class Server:
    """Serves `files` (name -> bytes) on 127.0.0.1 as an HTTP server that honours Range (with Content-Range, 416
    past the end, and If-Range against each file's ETag); `cut` names files whose connection drops halfway;
    `trickle` names files sent a byte at a time, slowly; `endless` names files sent forever without a length.
    Counts requests per path."""

    def __init__(self, files, cut=(), trickle=(), endless=()):
        self.files, self.cut, self.requests, self.ranges = files, set(cut), [], []
        self.trickle, self.endless, self.etags = set(trickle), set(endless), True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("/")[-1]
                server.requests.append(self.path)
                server.ranges.append(self.headers["Range"])
                if name in server.endless:
                    self.send_response(200)
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        while True:
                            self.wfile.write(b"\0" * 65536)
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers["Range"] else 0
                if self.headers["If-Range"] not in (None, etag):
                    start = 0  # the file changed: the whole of it
                if start >= len(data) > 0 and self.headers["Range"]:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if server.etags:
                    self.send_header("ETag", etag)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if name in server.trickle:
                    with contextlib.suppress(OSError):
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.2)
                    return
                if name in server.cut and not start:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-file
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    serving = Server({"w.bin": PAYLOAD, "net-" + hashlib.sha256(PAYLOAD).hexdigest()[:8] + ".ckpt": PAYLOAD,
                      "net-00000000.ckpt": PAYLOAD, "cut.bin": PAYLOAD, "slow.bin": PAYLOAD},
                     cut={"cut.bin"}, trickle={"slow.bin"}, endless={"endless.bin"})
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
    assert len(list((tmp_path / "cache").glob("by-url/*/tiny.ckpt"))) == 1
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
    assert list((tmp_path / "cache").glob("by-url/*/start.safetensors")) and serving.requests == ["/start.safetensors"]
    assert os.path.isfile(tmp_path / "run" / "convnext_atto-1_1.ckpt")


# ---- issue 22: the toolkit's downloads delete, overwrite and trust nothing they should not


def test_a_users_file_of_another_md5_is_left_alone(tmp_path):
    """Item 3: with the network off, a folder holding another dataset's train-images-idx3-ubyte.gz kept it."""
    from mindcv.data.dataset_download import MnistDownload
    root = tmp_path / "mnist"
    root.mkdir()
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"another dataset's images")
    download = MnistDownload(str(root))
    download.resources = tuple((f, md5, ("http://127.0.0.1:9/" + f,)) for f, md5, _ in download.resources)
    with pytest.raises(DownloadError, match=r"train-images-idx3-ubyte.gz is already there but is not the file of "
                                            r"http://127.0.0.1:9/train-images-idx3-ubyte.gz .*left as it is"):
        download.download()
    assert (root / "train-images-idx3-ubyte.gz").read_bytes() == b"another dataset's images"
    assert os.listdir(root) == ["train-images-idx3-ubyte.gz"]


def tar_of(tmp_path, *members):
    """A tar archive of (TarInfo, bytes or None) members."""
    path = tmp_path / "archive.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def test_archives_unpack_plain_files_and_folders_only(tmp_path):
    """Item 4: a link chain bypassed tarfile's "data" filter on Python 3.11.7 (CVE-2025-4517); a link, hard link
    or device member of any kind is refused before anything is written, on every Python."""
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tarfile.TarInfo("a")
    folder.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("a/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    through = tarfile.TarInfo("a/link/planted.txt")
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    for members in ([(folder, None), (link, None), (through, b"bad")], [(hard, None)], [(device, None)]):
        into = tmp_path / "into"
        with pytest.raises(DownloadError, match="refused to extract .*not a plain file or folder"):
            DownLoad().extract_archive(tar_of(tmp_path, *members), str(into))
        assert os.listdir(into) == [] and os.listdir(outside) == []
    good = tar_of(tmp_path, (tarfile.TarInfo("data/x.bin"), b"12345"))
    DownLoad().extract_archive(good, str(tmp_path / "good"))
    assert (tmp_path / "good" / "data" / "x.bin").read_bytes() == b"12345"


def test_unpacking_is_capped(tmp_path):
    """Item 8: 1 MB of archive unpacked to 1.07 GB; each kind stops at max_bytes, before writing it."""
    zeros = b"\0" * (2 << 20)
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(zeros))
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros", zeros)
    for path in (str(tmp_path / "bomb.gz"), str(tmp_path / "bomb.zip"),
                 tar_of(tmp_path, (tarfile.TarInfo("zeros"), zeros))):
        with pytest.raises(DownloadError, match="refused to extract .*1048576 .*allowed"):
            DownLoad().extract_archive(path, str(tmp_path / "out"), max_bytes=1 << 20)
        assert os.listdir(tmp_path / "out") == []
    DownLoad().extract_archive(str(tmp_path / "bomb.gz"), str(tmp_path / "out"), max_bytes=2 << 20)
    assert os.path.getsize(tmp_path / "out" / "bomb") == 2 << 20


def test_a_damaged_archive_leaves_nothing_half_unpacked(tmp_path):
    """Item 9: an archive unpacks into a temporary folder, renamed into place when whole."""
    whole = open(tar_of(tmp_path, (tarfile.TarInfo("data/a.bin"), b"a" * 5000),
                        (tarfile.TarInfo("data/b.bin"), b"b" * 5000)), "rb").read()
    (tmp_path / "cut.tar").write_bytes(whole[:8000])  # ends inside data/b.bin
    with pytest.raises(DownloadError, match="cannot extract .*cut.tar"):
        DownLoad().extract_archive(str(tmp_path / "cut.tar"), str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("planted", ["w.bin.part", "w.bin.lock", "w.bin"])
def test_a_link_planted_in_the_cache_is_never_written_through(server, tmp_path, planted):
    """Item 5: a planted w.bin.part -> ~/.bashrc was overwritten by a pinned download."""
    cache, victim = tmp_path / "cache", tmp_path / "bashrc"
    cache.mkdir(mode=0o700)
    victim.write_text("precious")
    (cache / planted).symlink_to(victim)
    with pytest.raises(DownloadError, match="cannot download|cannot lock|is not a regular file"):
        fetch(f"{server.url}/w.bin#sha256={hashlib.sha256(PAYLOAD).hexdigest()}", str(cache), progress=False)
    assert victim.read_text() == "precious"


def test_a_cache_folder_others_can_write_to_is_refused(server, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(DownloadError, match=f"not downloading into {shared}: it can be written by group or others"):
        fetch(f"{server.url}/w.bin", str(shared), progress=False)
    assert os.listdir(shared) == []


def test_a_cached_file_is_checked_against_the_pin_on_every_use(server, tmp_path, monkeypatch):
    """Item 6: a cached file of the same name was returned whatever the #sha256= pin said; and the cache is keyed
    by URL, so two addresses of one file name never share a file."""
    (tmp_path / "w.bin").write_bytes(b"something else")
    with pytest.raises(DownloadError, match="the cached .*w.bin does not match its sha256 .*delete it"):
        fetch(f"{server.url}/w.bin#sha256={hashlib.sha256(PAYLOAD).hexdigest()}", str(tmp_path), progress=False)
    assert server.requests == []
    good = "net-" + hashlib.sha256(PAYLOAD).hexdigest()[:8] + ".ckpt"
    (tmp_path / good).write_bytes(b"not the weights its name promises")
    with pytest.raises(DownloadError, match="does not match its sha256"):
        fetch(f"{server.url}/{good}", str(tmp_path), progress=False)
    monkeypatch.setenv("MINDCV_HOME", str(tmp_path / "home"))
    other = Server({"w.bin": b"another file of the same name"})
    try:
        first = fetch(f"{server.url}/w.bin", progress=False)
        second = fetch(f"{other.url}/w.bin", progress=False)
    finally:
        other.close()
    assert first != second and open(second, "rb").read() == b"another file of the same name"
    assert open(first, "rb").read() == PAYLOAD


def test_a_resume_checks_content_range_and_restarts_when_the_file_changed(server, tmp_path):
    """Item 7: a 206 was taken without its Content-Range: a file that changed on the server between two tries was
    cached as a mix of both versions (no hash given)."""
    with pytest.raises(DownloadError):
        fetch(f"{server.url}/cut.bin", str(tmp_path), progress=False)
    changed = os.urandom(len(PAYLOAD))  # the same size: the ETag tells (If-Range), the server sends it whole
    server.files["cut.bin"], server.cut = changed, set()
    assert open(fetch(f"{server.url}/cut.bin", str(tmp_path), progress=False), "rb").read() == changed
    server.files["cut.bin"], server.cut, server.etags = PAYLOAD, {"cut.bin"}, False
    with pytest.raises(DownloadError):
        fetch(f"{server.url}/cut.bin", str(tmp_path / "again"), progress=False)
    longer = changed + PAYLOAD  # no ETag now: Content-Range's total tells
    server.files["cut.bin"], server.cut = longer, set()
    assert open(fetch(f"{server.url}/cut.bin", str(tmp_path / "again"), progress=False), "rb").read() == longer
    assert server.ranges[-2:] == [f"bytes={len(PAYLOAD) // 2}-", None]  # asked for the rest, then restarted


def test_a_complete_part_file_is_finished(server, tmp_path, monkeypatch):
    """Item 7: a complete .part left by a killed process made every later try fail with 416."""
    url = f"{server.url}/w.bin#sha256={hashlib.sha256(PAYLOAD).hexdigest()}"
    replace = os.replace

    def killed_before_the_rename(source, target):
        if target.endswith("w.bin"):
            raise KeyboardInterrupt
        replace(source, target)

    monkeypatch.setattr(os, "replace", killed_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        fetch(url, str(tmp_path), progress=False)
    monkeypatch.setattr(os, "replace", replace)
    assert (tmp_path / "w.bin.part").read_bytes() == PAYLOAD and not (tmp_path / "w.bin").exists()
    assert open(fetch(url, str(tmp_path), progress=False), "rb").read() == PAYLOAD
    assert sorted(os.listdir(tmp_path)) == ["w.bin"] and server.ranges[-1] == f"bytes={len(PAYLOAD)}-"


def test_downloads_are_limited_in_size_and_time(server, tmp_path):
    """Item 8: an endless server filled 2.9 GB in 15 s; a byte every 2 s never timed out."""
    with pytest.raises(DownloadError, match=r"the file is 300000 bytes, more than the 1000 allowed"):
        fetch(f"{server.url}/w.bin", str(tmp_path), progress=False, max_bytes=1000)
    assert server.requests == ["/w.bin"] and not (tmp_path / "w.bin.part").exists()
    with pytest.raises(DownloadError, match=r"the server sent more than the 1048576 bytes allowed"):
        fetch(f"{server.url}/endless.bin", str(tmp_path), progress=False, max_bytes=1 << 20)
    error = raised_within(5, lambda: fetch(f"{server.url}/slow.bin", str(tmp_path), progress=False, deadline_s=1))
    assert isinstance(error, DownloadError) and "the download took longer than 1 s" in str(error)


def raised_within(seconds, call):
    """The exception `call()` raised, which must happen within `seconds` (a test fails instead of hanging)."""
    raised = []

    def target():
        try:
            call()
        except BaseException as error:  # pylint: disable=broad-except
            raised.append(error)
        else:
            raised.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert raised, f"still running after {seconds} s"
    return raised[0]


def test_waiting_for_another_download_is_bounded(server, tmp_path):
    """Item 8: the other ranks waited on the lock forever."""
    with open(tmp_path / "w.bin.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process downloading w.bin
        error = raised_within(5, lambda: fetch(f"{server.url}/w.bin", str(tmp_path), progress=False, lock_wait_s=1))
        assert isinstance(error, DownloadError)
        assert "gave up after 1 s waiting for another process that is downloading w.bin" in str(error)
    assert server.requests == []


def test_only_http_addresses_are_fetched(tmp_path, monkeypatch):
    """Item 11: fetch("file://...") and MINDCV_DOWNLOAD_BASE=file://... were AttributeErrors."""
    with pytest.raises(DownloadError, match="cannot fetch file:///etc/hostname: only http:// and https://"):
        fetch("file:///etc/hostname", str(tmp_path), progress=False)
    monkeypatch.setenv("MINDCV_DOWNLOAD_BASE", "file:///srv/mirror/")
    with pytest.raises(DownloadError, match="MINDCV_DOWNLOAD_BASE is 'file:///srv/mirror/': it must be an http"):
        fetch("https://download.mindspore.cn/toolkits/mindcv/convnext/w.bin", str(tmp_path), progress=False)


def test_ranks_unpack_a_dataset_once_into_place(tmp_path, monkeypatch):
    """Item 9: ranks extracted one archive at once, outside the lock: a rank read files another was rewriting."""
    from mindcv.data.dataset_download import Cifar10Download
    made = tmp_path / "made" / "cifar-10-batches-bin"
    made.mkdir(parents=True)
    for name in Cifar10Download.files:
        (made / name).write_bytes(name.encode() * 1000)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(made, arcname="cifar-10-batches-bin")
    serving = Server({"cifar-10-binary.tar.gz": buffer.getvalue()})
    monkeypatch.setattr(Cifar10Download, "resources", (("cifar-10-binary.tar.gz",
                                                        hashlib.md5(buffer.getvalue()).hexdigest(),
                                                        (f"{serving.url}/cifar-10-binary.tar.gz",)),))
    unpacked, seen_during, real_extract = [], [], DownLoad.extract_archive

    def counting_extract(self, *args, **kwargs):
        unpacked.append(1)
        time.sleep(0.3)  # the other ranks arrive meanwhile
        seen_during.append(os.path.exists(tmp_path / "root" / "cifar-10-batches-bin"))
        return real_extract(self, *args, **kwargs)

    monkeypatch.setattr(DownLoad, "extract_archive", counting_extract)
    results = []
    threads = [threading.Thread(target=lambda: results.append(Cifar10Download(str(tmp_path / "root")).download()))
               for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        serving.close()
    assert len(results) == 3 and len(unpacked) == 1 and seen_during == [False]
    assert serving.requests == ["/cifar-10-binary.tar.gz"]
    for name in Cifar10Download.files:
        assert (tmp_path / "root" / "cifar-10-batches-bin" / name).read_bytes() == name.encode() * 1000
    assert sorted(os.listdir(tmp_path / "root")) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]
