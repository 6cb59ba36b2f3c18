"""Fetching weights into the cache: verified, atomic, resumable, one download for many processes.

`fetch(url)` returns the path of the file in the cache (`$MINDCV_HOME`, default `~/.cache/mindcv`), downloading
it first if it is not there:
- the bytes go to `<name>.part` under an exclusive lock (`<name>.lock`), so several processes asking at once
  (msrun ranks) download once: the others wait for the lock, then find the finished file;
- an interrupted download leaves only the `.part` file, which the next attempt continues with an HTTP Range
  request (or restarts, when the server ignores ranges);
- the whole file is checked against the expected sha256 (a `#sha256=<hex>` suffix of the URL, or the 8-hex-digit
  prefix in MindCV's file names such as `convnext_tiny-ae5ff8d7.ckpt`) before it is renamed to its final name;
  a mismatch deletes it and is an error;
- a file already in the cache is used without touching the network.
`MINDCV_DOWNLOAD_BASE` replaces the base URL of MindCV's model zoo (a mirror). Without a network the error is one
line: the URL that failed, the file to fetch by hand and the folder to put it in.

`fetch_from_hub(repo_id)` gets timm's weights from the Hugging Face Hub through the `huggingface_hub` library (an
optional dependency), which verifies, caches (under `$MINDCV_HOME/hub`) and locks as it does for every user, and
honours `HF_ENDPOINT` and `HF_HUB_OFFLINE`.

`DownLoad` is MindCV's helper class (download_url, download_and_extract_archive, extract_archive, check_md5) over
`fetch`, used by the dataset downloads of `mindcv.data`.
"""
import contextlib
import fcntl
import gzip
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from typing import Optional, Tuple
from urllib.parse import urlsplit

from tqdm import tqdm

MINDCV_ZOO = "https://download.mindspore.cn/toolkits/mindcv/"
_CHUNK = 1 << 20


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


def fetch(url: str, folder: Optional[str] = None, progress: bool = True, timeout: float = 60.0) -> str:
    """The cached copy of `url` (downloaded now if missing; see the module docstring). Returns its path.
    Raises DownloadError (a ValueError) for a network failure or a hash mismatch."""
    address, digest, prefix_only = expected_hash(url)
    folder = folder or cache_dir()
    name = os.path.basename(urlsplit(address).path)
    if not name:
        raise DownloadError(f"{url} names no file")
    final = os.path.join(folder, name)
    if os.path.isfile(final):
        return final
    os.makedirs(folder, exist_ok=True)
    with _exclusive(final + ".lock"):
        if os.path.isfile(final):  # another process finished it while we waited
            return final
        source = mirrored(address)
        partial = final + ".part"
        try:
            _download(source, partial, timeout, progress)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise DownloadError(f"cannot download {source} ({reason}); fetch {name} by hand and put it in "
                                f"{folder}") from None
        actual = _file_digest(partial, "sha256")
        if digest and not (actual.startswith(digest) if prefix_only else actual == digest):
            os.remove(partial)
            raise DownloadError(f"{source} does not match its sha256 (expected {digest}{'...' if prefix_only else ''}"
                                f", got {actual}); the download was deleted: check the URL or the mirror")
        os.replace(partial, final)
    return final


@contextlib.contextmanager
def _exclusive(path: str):
    """Hold an exclusive lock on the file `path` (created if needed) for the block, then delete it. A process that
    waited for a lock file its holder has since deleted takes the lock again on a fresh file, so at most one
    process is ever inside the block. The lock goes with the process if it dies."""
    while True:
        lock = open(path, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        lock.close()
    try:
        yield
    finally:
        os.remove(path)  # before the lock is released: a waiter then sees its file is stale
        lock.close()


def _download(url: str, partial: str, timeout: float, progress: bool) -> None:
    """Bytes of `url` into `partial`, continuing a partial file where the server honours Range."""
    have = os.path.getsize(partial) if os.path.isfile(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have and response.status == 206
        total = response.length + (have if resumed else 0) if response.length is not None else None
        with open(partial, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                     desc=os.path.basename(partial)[:-len(".part")], disable=not progress) as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and os.path.getsize(partial) < total:
            raise OSError(f"the connection closed after {os.path.getsize(partial)} of {total} bytes")


def _file_digest(path: str, algorithm: str, chunk_size: int = _CHUNK) -> str:
    """Hex digest of a file (`hashlib` algorithm name), read in chunks: weights files are large."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
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
    resumed after a dropped connection and done once for several processes. Failures raise `DownloadError` with
    a one-line message."""

    @staticmethod
    def calculate_md5(file_path: str, chunk_size: int = _CHUNK) -> str:
        return _file_digest(file_path, "md5", chunk_size)

    def check_md5(self, file_path: str, md5: Optional[str] = None) -> bool:
        """Whether the file's md5 is `md5` (False when md5 is None, as MindCV's)."""
        return md5 is not None and md5.lower() == self.calculate_md5(file_path)

    @staticmethod
    def extract_tar(from_path: str, to_path: Optional[str] = None, compression: Optional[str] = None) -> None:
        """Unpack a tar archive (compression "gz", "bz2", "xz" or None: detected) into `to_path` (default: the
        archive's folder). Members that would land outside `to_path` (absolute paths, "..", links out) or that
        are devices are refused with a DownloadError."""
        to_path = to_path or os.path.dirname(os.path.abspath(from_path))
        compression = (compression or "*").lstrip(".")
        with tarfile.open(from_path, f"r:{compression}") as archive:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                try:
                    archive.extractall(to_path, filter="data")
                except tarfile.FilterError as error:
                    raise DownloadError(f"{from_path}: refused to extract {error}") from None
                return
            root = os.path.abspath(to_path)
            for member in archive.getmembers():
                target = os.path.abspath(os.path.join(root, member.name))
                if os.path.commonpath([root, target]) != root or not (member.isfile() or member.isdir()):
                    raise DownloadError(f"{from_path}: refused to extract {member.name} (outside {to_path}, or "
                                        "not a plain file or folder)")
            archive.extractall(to_path)

    @staticmethod
    def extract_zip(from_path: str, to_path: Optional[str] = None, compression: Optional[str] = None) -> None:
        """Unpack a zip archive into `to_path` (default: the archive's folder); members outside it are refused."""
        del compression  # zip members carry their own
        to_path = os.path.abspath(to_path or os.path.dirname(os.path.abspath(from_path)))
        with zipfile.ZipFile(from_path) as archive:
            for member in archive.namelist():
                target = os.path.abspath(os.path.join(to_path, member))
                if os.path.commonpath([to_path, target]) != to_path:
                    raise DownloadError(f"{from_path}: refused to extract {member} outside {to_path}")
            archive.extractall(to_path)

    def extract_archive(self, from_path: str, to_path: Optional[str] = None) -> str:
        """Unpack `from_path` (.tar, .tar.gz / .tgz, .tar.bz2 / .tbz2, .tar.xz, .zip, or a single .gz file, which
        is decompressed beside itself) into `to_path` (default: its folder). Returns to_path."""
        to_path = to_path or os.path.dirname(os.path.abspath(from_path))
        name = os.path.basename(from_path).lower()
        os.makedirs(to_path, exist_ok=True)
        for suffixes, compression in (((".tar",), None), ((".tar.gz", ".tgz"), "gz"), ((".tar.bz2", ".tbz2", ".tbz"),
                                                                                        "bz2"),
                                      ((".tar.xz", ".txz"), "xz")):
            if name.endswith(suffixes):
                self.extract_tar(from_path, to_path, compression)
                return to_path
        if name.endswith(".zip"):
            self.extract_zip(from_path, to_path)
        elif name.endswith(".gz"):
            target = os.path.join(to_path, os.path.basename(from_path)[:-len(".gz")])
            with gzip.open(from_path, "rb") as source, open(target + ".part", "wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
            os.replace(target + ".part", target)
        else:
            raise DownloadError(f"cannot extract {from_path}: not a .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .zip or "
                                ".gz file")
        return to_path

    def download_file(self, url: str, file_path: str, chunk_size: int = _CHUNK) -> None:
        """Download `url` to `file_path` (through `fetch`, into the file's folder)."""
        del chunk_size  # fetch reads in its own chunks
        folder = os.path.dirname(os.path.abspath(file_path))
        path = fetch(url, folder)
        if os.path.abspath(path) != os.path.abspath(file_path):
            os.replace(path, file_path)

    def download_url(self, url: str, path: Optional[str] = None, filename: Optional[str] = None,
                     md5: Optional[str] = None) -> str:
        """`url` as `path/filename` (default: the cache folder, the URL's file name), downloaded unless a file
        with the right md5 (or any file, without md5) is there already. A download that does not match `md5`
        is deleted and raises DownloadError. Returns the file's path."""
        path = os.path.expanduser(path or cache_dir())
        os.makedirs(path, exist_ok=True)
        filename = filename or os.path.basename(urlsplit(url.partition("#")[0]).path)
        file_path = os.path.join(path, filename)
        if os.path.isfile(file_path):
            if not md5 or self.check_md5(file_path, md5):
                return file_path
            os.remove(file_path)  # a stale or damaged copy
        self.download_file(url, file_path)
        if md5 and not self.check_md5(file_path, md5):
            actual = self.calculate_md5(file_path)
            os.remove(file_path)
            raise DownloadError(f"{url} does not match its md5 (expected {md5}, got {actual}); the download was "
                                "deleted: check the URL or the mirror")
        return file_path

    def download_and_extract_archive(self, url: str, download_path: Optional[str] = None,
                                     extract_path: Optional[str] = None, filename: Optional[str] = None,
                                     md5: Optional[str] = None, remove_finished: bool = False) -> str:
        """`download_url`, then `extract_archive` into `extract_path` (default: download_path); the archive is
        deleted afterwards with `remove_finished`. Returns the extraction folder."""
        archive = self.download_url(url, download_path, filename, md5)
        extracted = self.extract_archive(archive, extract_path or os.path.dirname(archive))
        if remove_finished:
            os.remove(archive)
        return extracted
