"""Fetching weights into the cache: verified, atomic, resumable, bounded, one download for many processes.

`fetch(url)` returns the path of the file in the cache (`$MINDCV_HOME`, default `~/.cache/mindcv`, in a folder
named after the URL: two addresses never share a file), downloading it first if it is not there:
- the folder must be safe from other users (owned by this user, not writable by group or others, in folders that
  others cannot rename: the kernel cache's rules, `mindcv.io.files.directory_problem`); the lock, the `.part` file
  and a cached file are opened without following links and must be regular files of this user;
- the bytes go to `<name>.part` under an exclusive lock (`<name>.lock`), so several processes asking at once
  (msrun ranks) download once: the others wait for the lock (at most `lock_wait_s`, then a one-line error), then
  find the finished file;
- an interrupted download leaves only the `.part` file (and `<name>.part.json`: its address, size and the server's
  validators), which the next attempt continues with an HTTP Range request when the server's `Content-Range`
  answers exactly that range of the same file (else it starts again from zero); a complete `.part` is finished;
- the whole file is checked against the expected sha256 (a `#sha256=<hex>` suffix of the URL, or the 8-hex-digit
  prefix in MindCV's file names such as `convnext_tiny-ae5ff8d7.ckpt`) before it is renamed to its final name; a
  mismatch deletes it and is an error. A cached file is checked against that hash on every use;
- a download is limited in size (`max_bytes`, and the server's Content-Length) and in time (`deadline_s` for the
  whole transfer, `timeout` for each wait on the socket);
- a file already in the cache is used without touching the network.
`MINDCV_DOWNLOAD_BASE` replaces the base URL of MindCV's model zoo (a mirror). Only http:// and https:// are
fetched. Without a network the error is one line: the URL that failed, the file to fetch by hand and the folder to
put it in.

`fetch_from_hub(repo_id)` gets timm's weights from the Hugging Face Hub through the `huggingface_hub` library (an
optional dependency), which verifies, caches (under `$MINDCV_HOME/hub`) and locks as it does for every user, and
honours `HF_ENDPOINT` and `HF_HUB_OFFLINE`.

`DownLoad` is MindCV's helper class (download_url, download_and_extract_archive, extract_archive, check_md5) over
`fetch`, used by the dataset downloads of `mindcv.data`: archives unpack only plain files and folders inside the
target, up to a size, into a temporary folder renamed into place.
"""
import contextlib
import errno
import fcntl
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from typing import Optional, Tuple
from urllib.parse import urlsplit

from tqdm import tqdm

from .files import file_problem, open_regular, private_folder_problem, read_text, write_text_atomic

MINDCV_ZOO = "https://download.mindspore.cn/toolkits/mindcv/"
_CHUNK = 1 << 20
MAX_WEIGHTS_BYTES = 8 << 30  # the largest weights file fetched (ConvNeXt-XXLarge's float32 weights are 3.4 GB)
DEADLINE_S = 3 * 3600.0  # the longest a whole download may take, by default
MAX_UNPACKED_BYTES = 8 << 30  # the most an archive may unpack to, by default


class DownloadError(ValueError):
    """A download that failed or did not match its hash; the message says what to fetch where."""


def cache_dir() -> str:
    """Where downloads go: $MINDCV_HOME, default ~/.cache/mindcv."""
    return os.path.expanduser(os.environ.get("MINDCV_HOME", "~/.cache/mindcv"))


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def mirrored(url: str) -> str:
    """`url` with MindCV's model-zoo base replaced by $MINDCV_DOWNLOAD_BASE when that is set."""
    base = os.environ.get("MINDCV_DOWNLOAD_BASE")
    if base and url.startswith(MINDCV_ZOO):
        if not is_url(base):
            raise DownloadError(f"MINDCV_DOWNLOAD_BASE is {base!r}: it must be an http:// or https:// address (a "
                                f"local copy of a file is passed as its path instead of a URL)")
        return base.rstrip("/") + "/" + url[len(MINDCV_ZOO):]
    return url


def expected_hash(url: str) -> Tuple[str, Optional[str], bool]:
    """(url without fragment, expected sha256 hex or its prefix, whether it is only a prefix). The hash comes from a
    `#sha256=<hex>` fragment, else from a MindCV-style name `<model>-<8 hex digits>.<ext>`, else None."""
    address, _, fragment = url.partition("#")
    match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    if match:
        return address, match[1].lower(), False
    if fragment:
        raise DownloadError(f"unknown URL suffix #{fragment} in {url}; use #sha256=<64 hex digits>")
    name = os.path.basename(urlsplit(address).path)
    prefix = re.fullmatch(r".+-([0-9a-f]{8})\.[A-Za-z]+", name)
    return address, prefix[1] if prefix else None, bool(prefix)


def url_folder(address: str) -> str:
    """The cache folder of one address (without its #fragment): two URLs whose files have the same name never
    share a cached file."""
    return os.path.join(cache_dir(), "by-url", hashlib.sha256(address.encode()).hexdigest()[:16])


def _safe_folder(folder: str) -> None:
    """Create `folder` (0700) if needed; DownloadError unless other users are kept out of it."""
    problem = private_folder_problem(folder)
    if problem:
        raise DownloadError(f"not downloading into {folder}: it {problem}, so another user could replace what is "
                            "downloaded there; make it private (chmod go-w) or choose another folder ($MINDCV_HOME)")


def _check_hash(path: str, digest: Optional[str], prefix_only: bool, what: str) -> None:
    if digest is None:
        return
    actual = _file_digest(path, "sha256")
    if not (actual.startswith(digest) if prefix_only else actual == digest):
        raise DownloadError(f"{what} does not match its sha256 (expected {digest}{'...' if prefix_only else ''}, got "
                            f"{actual})")


def fetch(url: str, folder: Optional[str] = None, progress: bool = True, timeout: float = 60.0, *,
          filename: Optional[str] = None, max_bytes: int = MAX_WEIGHTS_BYTES, deadline_s: float = DEADLINE_S,
          lock_wait_s: Optional[float] = None) -> str:
    """The cached copy of `url` (downloaded now if missing; see the module docstring). Returns its path.

    Args:
        folder: where the file goes (default: the cache folder of this URL, see `url_folder`).
        filename: its name there (default: the URL's).
        timeout: seconds to wait for the server at each step. max_bytes: the largest file accepted (default 8 GiB).
        deadline_s: seconds the whole download may take (default 3 hours).
        lock_wait_s: seconds to wait for another process's download of the same file (default deadline_s + 60).
    Raises DownloadError (a ValueError) for a network failure, a hash mismatch, a limit passed, or an unsafe
    folder or file."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"cannot fetch {url}: only http:// and https:// addresses are downloaded; pass a local "
                            "file as its path")
    address, digest, prefix_only = expected_hash(url)
    name = filename or os.path.basename(urlsplit(address).path)
    if not name or name in (".", "..") or os.sep in name:
        raise DownloadError(f"{url} names no file")
    folder = folder or url_folder(address)
    final = os.path.join(folder, name)
    _safe_folder(folder)
    if os.path.lexists(final):
        return _use_cached(final, url, digest, prefix_only)
    source = mirrored(address)
    with exclusive(final + ".lock", deadline_s + 60 if lock_wait_s is None else lock_wait_s, name):
        if os.path.lexists(final):  # another process finished it while we waited
            return _use_cached(final, url, digest, prefix_only)
        partial = final + ".part"
        try:
            _download(source, partial, timeout, progress, max_bytes, deadline_s)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise DownloadError(f"cannot download {source} ({reason}); fetch {name} by hand and put it in "
                                f"{folder}") from None
        try:
            _check_hash(partial, digest, prefix_only, source)
        except DownloadError as error:
            _remove_partial(partial)
            raise DownloadError(f"{error}; the download was deleted: check the URL or the mirror") from None
        os.replace(partial, final)
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial + ".json")
    return final


def _use_cached(final: str, url: str, digest: Optional[str], prefix_only: bool) -> str:
    """`final`, after checking that it is a safe regular file that matches the hash `url` asks for."""
    problem = file_problem(final)
    if problem:
        raise DownloadError(f"the cached {final} {problem}: not using it for {url}; delete it to download again")
    try:
        _check_hash(final, digest, prefix_only, f"the cached {final}")
    except DownloadError as error:
        raise DownloadError(f"{error}, which {url} asks for; delete it to download again") from None
    return final


def _remove_partial(partial: str) -> None:
    for path in (partial, partial + ".json"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def exclusive(path: str, wait_s: float, what: str):
    """Hold an exclusive lock on the file `path` (created if needed, never through a link) for the block, then
    delete it. Waits at most `wait_s` seconds for another holder, then DownloadError naming `what`. A process that
    waited for a lock file its holder has since deleted takes the lock again on a fresh file, so at most one
    process is ever inside the block. The lock goes with the process if it dies."""
    give_up = time.monotonic() + wait_s
    while True:
        try:
            descriptor = open_regular(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise DownloadError(f"cannot lock {path} ({error.strerror or error}); delete it") from None
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    os.close(descriptor)
                    raise DownloadError(f"gave up after {wait_s:.0f} s waiting for another process that is "
                                        f"downloading {what} (it holds {path}); try again when it is done, or stop "
                                        "it") from None
                time.sleep(0.05)
        try:
            current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(descriptor)
    try:
        yield
    finally:
        os.remove(path)  # before the lock is released: a waiter then sees its file is stale
        os.close(descriptor)


def _content_range(header: Optional[str]):
    """(first byte or None, total or None) of a `Content-Range: bytes a-b/total` (or `bytes */total`) header, or
    None when it is not one."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if not match:
        return None
    return None if match[1] is None else int(match[1]), None if match[2] == "*" else int(match[2])


def _download(url: str, partial: str, timeout: float, progress: bool, max_bytes: int, deadline_s: float) -> None:
    """Bytes of `url` into `partial`: continued where an earlier try stopped when the server answers with exactly
    that range of the same file, else from zero. OSError for a failure or a limit passed."""
    deadline = time.monotonic() + deadline_s
    descriptor = None
    try:
        if os.path.lexists(partial):
            descriptor = open_regular(partial, os.O_RDWR)
        known = _read_part_info(partial + ".json", url) if descriptor is not None else None
        have = os.fstat(descriptor).st_size if known else 0
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            if known.get("validator"):  # the server sends the whole file instead when it changed
                headers["If-Range"] = known["validator"]
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                              timeout=min(timeout, deadline_s))
        except urllib.error.HTTPError as error:
            finished = _content_range(error.headers.get("Content-Range") if error.headers else None)
            if error.code == 416 and have and finished and finished[1] == have == known.get("total"):
                return  # a complete .part left by a process that stopped before renaming it
            if error.code != 416 or not have:
                raise
            have, response = 0, urllib.request.urlopen(url, timeout=min(timeout, deadline_s))
        with response:
            if have and response.status == 206:
                answered = _content_range(response.headers.get("Content-Range"))
                if answered is None or answered[0] != have or answered[1] != known.get("total"):
                    response.close()  # another range, or the file changed: start again from zero
                    have, response = 0, urllib.request.urlopen(url, timeout=min(timeout, deadline_s))
            else:
                have = 0
            with response:
                length = response.length
                total = have + length if length is not None else None
                if total is not None and total > max_bytes:
                    raise OSError(f"the file is {total} bytes, more than the {max_bytes} allowed")
                if descriptor is None:
                    descriptor = open_regular(partial, os.O_RDWR | os.O_CREAT, 0o600)
                os.ftruncate(descriptor, have)
                os.lseek(descriptor, have, os.SEEK_SET)
                if not have:
                    validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
                    write_text_atomic(partial + ".json", json.dumps({"url": url, "total": total,
                                                                     "validator": validator}))
                _copy_body(response, descriptor, have, total, max_bytes, deadline, deadline_s,
                           tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                desc=os.path.basename(partial)[:-len(".part")], disable=not progress))
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _copy_body(response, descriptor: int, have: int, total: Optional[int], max_bytes: int, deadline: float,
               deadline_s: float, bar) -> None:
    """The response body onto the descriptor, within the size and the time allowed."""
    with bar:
        while True:
            chunk = response.read1(_CHUNK)  # what has arrived, so that a trickle still meets the deadline check
            if not chunk:
                break
            have += len(chunk)
            if have > (total if total is not None else max_bytes):
                raise OSError(f"the server sent more than the {total if total is not None else max_bytes} bytes "
                              "allowed")
            os.write(descriptor, chunk)
            bar.update(len(chunk))
            if time.monotonic() > deadline:
                raise OSError(f"the download took longer than {deadline_s:.0f} s")
    if total is not None and have < total:
        raise OSError(f"the connection closed after {have} of {total} bytes")


def _read_part_info(path: str, url: str) -> Optional[dict]:
    """What an earlier try recorded of the download it left in `<name>.part`, when it was of `url`; else None."""
    try:
        info = json.loads(read_text(path))
    except (OSError, ValueError):
        return None
    if not (isinstance(info, dict) and info.get("url") == url and isinstance(info.get("total"), (int, type(None)))):
        return None
    return info


def _file_digest(path: str, algorithm: str, chunk_size: int = _CHUNK, follow_links: bool = False) -> str:
    """Hex digest of a regular file (`hashlib` algorithm name), read in chunks: weights files are large. A FIFO or
    device is an OSError (not a hang); a link too unless `follow_links`."""
    digest = hashlib.new(algorithm)
    with os.fdopen(open_regular(path, os.O_RDONLY, follow_links=follow_links), "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_from_hub(repo_id: str, filename: str = "model.safetensors") -> str:
    """The cached path of `filename` in the Hugging Face Hub repository `repo_id` (e.g.
    "timm/convnextv2_tiny.fcmae_ft_in22k_in1k"), downloaded by `huggingface_hub` if needed. ImportError without
    that library; DownloadError when the Hub cannot give the file."""
    try:
        from huggingface_hub import hf_hub_download  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError(f"weights {repo_id} come from the Hugging Face Hub: `pip install huggingface_hub`, or "
                          f"download {filename} of https://huggingface.co/{repo_id} and pass it as ckpt_path") from None
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=os.path.join(cache_dir(), "hub"))
    except Exception as error:  # the library's own errors: offline, unknown repository, network, hash
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DownloadError(f"cannot fetch {filename} of {repo_id} from the Hugging Face Hub ({reason}); download "
                            f"https://huggingface.co/{repo_id} by hand and pass the file as ckpt_path") from None


class DownLoad:
    """MindCV's download helper (`mindcv.io.download.DownLoad`), on top of `fetch`: every download is verified
    (a `#sha256=` suffix or a MindCV hash prefix in the name, and the `md5` given here), written atomically,
    resumed after a dropped connection, limited in size and time, and done once for several processes. Archives
    unpack only plain files and folders inside the target, up to a size. Nothing already at a target path is
    deleted or overwritten. Failures raise `DownloadError` with a one-line message."""

    @staticmethod
    def calculate_md5(file_path: str, chunk_size: int = _CHUNK) -> str:
        return _file_digest(file_path, "md5", chunk_size, follow_links=True)

    def check_md5(self, file_path: str, md5: Optional[str] = None) -> bool:
        """Whether the file's md5 is `md5` (False when md5 is None, as MindCV's)."""
        return md5 is not None and md5.lower() == self.calculate_md5(file_path)

    @staticmethod
    def extract_tar(from_path: str, to_path: Optional[str] = None, compression: Optional[str] = None, *,
                    max_bytes: int = MAX_UNPACKED_BYTES) -> None:
        """Unpack a tar archive (compression "gz", "bz2", "xz" or None: detected) into `to_path` (default: the
        archive's folder). An archive holding anything but plain files and folders inside `to_path` (absolute
        paths, "..", links, devices), or more than `max_bytes` of files, is refused with a DownloadError before
        anything is written (on every Python: tarfile's own "data" filter was bypassed by link chains)."""
        to_path = to_path or os.path.dirname(os.path.abspath(from_path))
        compression = (compression or "*").lstrip(".")
        with tarfile.open(from_path, f"r:{compression}") as archive:
            members = archive.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise DownloadError(f"{from_path}: refused to extract {member.name} (not a plain file or folder)")
                _check_member_path(from_path, member.name, to_path)
            _check_unpacked_size(from_path, sum(m.size for m in members if m.isfile()), max_bytes)
            if hasattr(tarfile, "data_filter"):  # also drops set-uid bits and foreign owners
                archive.extractall(to_path, members=members, filter="data")
            else:
                archive.extractall(to_path, members=members)

    @staticmethod
    def extract_zip(from_path: str, to_path: Optional[str] = None, compression: Optional[str] = None, *,
                    max_bytes: int = MAX_UNPACKED_BYTES) -> None:
        """Unpack a zip archive into `to_path` (default: the archive's folder); members outside it, or more than
        `max_bytes` unpacked (zipfile stops each member at its stated size), are refused."""
        del compression  # zip members carry their own
        to_path = os.path.abspath(to_path or os.path.dirname(os.path.abspath(from_path)))
        with zipfile.ZipFile(from_path) as archive:
            members = archive.infolist()
            for member in members:
                _check_member_path(from_path, member.filename, to_path)
            _check_unpacked_size(from_path, sum(m.file_size for m in members), max_bytes)
            archive.extractall(to_path)

    def extract_archive(self, from_path: str, to_path: Optional[str] = None, *,
                        max_bytes: int = MAX_UNPACKED_BYTES) -> str:
        """Unpack `from_path` (.tar, .tar.gz / .tgz, .tar.bz2 / .tbz2, .tar.xz, .zip, or a single .gz file) into
        `to_path` (default: its folder), at most `max_bytes` (default 8 GiB). It unpacks into a temporary folder
        beside, whose top-level entries are then renamed into `to_path`; an entry already there is kept as it is
        (another process unpacked it, or it is not the toolkit's to replace). Returns to_path."""
        to_path = to_path or os.path.dirname(os.path.abspath(from_path))
        name = os.path.basename(from_path).lower()
        os.makedirs(to_path, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".unpacking-", dir=to_path)
        try:
            for suffixes, compression in (((".tar",), None), ((".tar.gz", ".tgz"), "gz"),
                                          ((".tar.bz2", ".tbz2", ".tbz"), "bz2"), ((".tar.xz", ".txz"), "xz")):
                if name.endswith(suffixes):
                    self.extract_tar(from_path, staging, compression, max_bytes=max_bytes)
                    break
            else:
                if name.endswith(".zip"):
                    self.extract_zip(from_path, staging, max_bytes=max_bytes)
                elif name.endswith(".gz"):
                    _gunzip(from_path, os.path.join(staging, os.path.basename(from_path)[:-len(".gz")]), max_bytes)
                else:
                    raise DownloadError(f"cannot extract {from_path}: not a .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, "
                                        ".zip or .gz file")
            for entry in os.listdir(staging):
                _move_unless_there(os.path.join(staging, entry), os.path.join(to_path, entry))
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, OSError) as error:
            raise DownloadError(f"cannot extract {from_path} ({error})") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return to_path

    def download_file(self, url: str, file_path: str, chunk_size: int = _CHUNK, *,
                      max_bytes: int = MAX_WEIGHTS_BYTES) -> None:
        """Download `url` to `file_path` (through `fetch`, into the file's folder, at most `max_bytes`)."""
        del chunk_size  # fetch reads in its own chunks
        fetch(url, os.path.dirname(os.path.abspath(file_path)), filename=os.path.basename(file_path),
              max_bytes=max_bytes)

    def download_url(self, url: str, path: Optional[str] = None, filename: Optional[str] = None,
                     md5: Optional[str] = None, *, max_bytes: int = MAX_WEIGHTS_BYTES) -> str:
        """`url` as `path/filename` (default: the cache folder, the URL's file name), downloaded unless a file
        with the right md5 (or any file, without md5) is there already. A file there with another md5 is left
        alone and is a DownloadError (it is not the toolkit's to delete); a download that does not match `md5` is
        deleted and raises DownloadError. Returns the file's path."""
        path = os.path.expanduser(path or cache_dir())
        filename = filename or os.path.basename(urlsplit(url.partition("#")[0]).path)
        file_path = os.path.join(path, filename)
        if os.path.lexists(file_path):
            try:
                actual = self.calculate_md5(file_path)
            except OSError as error:
                raise DownloadError(f"cannot read {file_path} ({error.strerror or error}); move it away to "
                                    f"download {url}") from None
            if not md5 or actual == md5.lower():
                return file_path
            raise ExistingFileError(f"{file_path} is already there but is not the file of {url} (md5 {actual}, "
                                    f"expected {md5}); it was left as it is: move it away to download the right one, "
                                    "or put the right file there")
        self.download_file(url, file_path, max_bytes=max_bytes)
        actual = self.calculate_md5(file_path) if md5 else None
        if md5 and actual != md5.lower():
            os.remove(file_path)  # the download's own file
            raise DownloadError(f"{url} does not match its md5 (expected {md5}, got {actual}); the download was "
                                "deleted: check the URL or the mirror")
        return file_path

    def download_and_extract_archive(self, url: str, download_path: Optional[str] = None,
                                     extract_path: Optional[str] = None, filename: Optional[str] = None,
                                     md5: Optional[str] = None, remove_finished: bool = False, *,
                                     max_bytes: int = MAX_WEIGHTS_BYTES,
                                     max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> str:
        """`download_url`, then `extract_archive` into `extract_path` (default: download_path); the archive is
        deleted afterwards with `remove_finished`. Returns the extraction folder."""
        archive = self.download_url(url, download_path, filename, md5, max_bytes=max_bytes)
        extracted = self.extract_archive(archive, extract_path or os.path.dirname(archive),
                                         max_bytes=max_unpacked_bytes)
        if remove_finished:
            os.remove(archive)
        return extracted


class ExistingFileError(DownloadError):
    """A file the toolkit did not download is where a download should go: it is left alone."""


def _check_member_path(archive: str, member: str, to_path: str) -> None:
    root = os.path.abspath(to_path)
    target = os.path.abspath(os.path.join(root, member))
    if os.path.isabs(member) or ".." in member.replace("\\", "/").split("/") or \
            os.path.commonpath([root, target]) != root:
        raise DownloadError(f"{archive}: refused to extract {member} (outside {to_path})")


def _check_unpacked_size(archive: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DownloadError(f"{archive}: refused to extract {size} bytes, more than the {max_bytes} allowed")


def _gunzip(source: str, target: str, max_bytes: int) -> None:
    """Decompress the .gz file `source` into the new file `target`, refusing more than `max_bytes`."""
    written = 0
    with gzip.open(source, "rb") as data, open(target, "xb") as out:
        for chunk in iter(lambda: data.read(_CHUNK), b""):
            written += len(chunk)
            if written > max_bytes:
                raise DownloadError(f"{source}: refused to extract more than the {max_bytes} bytes allowed")
            out.write(chunk)


def _move_unless_there(source: str, target: str) -> None:
    """Rename `source` to `target` unless something is at `target` already (then `source` stays)."""
    if os.path.isdir(source) and not os.path.islink(source):
        try:
            os.mkdir(target)  # claims the name, so that rename never replaces another process's folder
        except FileExistsError:
            return
        try:
            os.rename(source, target)  # onto the empty folder just made
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        return
    try:
        os.link(source, target)  # fails when the name is taken
    except FileExistsError:
        pass
