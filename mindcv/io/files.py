"""Writing run files and caches safely: whole files replaced atomically, appends only to a regular file that is
not a link, and the owner and mode rules that keep a cache folder out of other users' reach.

A folder that others can write to (a shared run folder, `$MINDCV_HOME` on a shared machine) may hold a symlink
planted where the toolkit will write: `open(path, "w")` would write through it into the link's target. A file
replaced with `os.replace` replaces the link itself; an append opens with `O_NOFOLLOW` and refuses anything but a
regular file."""
import os
import socket
import stat
from typing import Optional


def temporary_path(path: str) -> str:
    """A hidden file beside `path` to write before renaming it over `path`. Host and pid make the name unique to
    this process: the ranks of a distributed run may write the same path on a shared file system."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".tmp-{socket.gethostname()}-{os.getpid()}-{name}")


def write_text_atomic(path: str, text: str) -> str:
    """Write `text` into a temporary file beside `path` (created exclusively, never through a link), then rename it
    over `path`: readers see the old or the new whole file, and a link at `path` is replaced, not followed.
    Returns `path`."""
    temporary = temporary_path(path)
    try:
        os.remove(temporary)  # a leftover of this host and pid (or a planted link): O_EXCL below refuses both
    except FileNotFoundError:
        pass
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


def open_regular(path: str, flags: int, mode: int = 0o644, follow_links: bool = False) -> int:
    """`os.open(path, flags | O_NOFOLLOW)`, then OSError unless it is a regular file: a symlink, FIFO or device
    planted at `path` is refused instead of written through (or blocking the open: O_NONBLOCK until checked).
    `follow_links`: a link to a regular file is accepted (for reading a user's own files). Returns the
    descriptor (blocking)."""
    descriptor = os.open(path, flags | (0 if follow_links else os.O_NOFOLLOW) | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(f"{path} is not a regular file")
    os.set_blocking(descriptor, True)
    return descriptor


def append_text(path: str, text: str) -> None:
    """Append `text` to the regular file `path` (created if missing); a link or special file there is an OSError."""
    with os.fdopen(open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as f:
        f.write(text)


def write_problem(info) -> Optional[str]:
    """Why the owner or mode of `info` (an os.stat result of a cache folder or file) lets others change it."""
    uid = os.geteuid()
    if info.st_uid != uid:
        return f"is owned by uid {info.st_uid}, not by this user (uid {uid})"
    if info.st_mode & 0o022:
        return f"can be written by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def directory_problem(directory: str) -> Optional[str]:
    """Why other users could plant or replace files in `directory` (an existing folder), or None when they cannot:
    it must be owned by this user and not writable by group or others, and each folder above it owned by this user
    or root and not writable by others unless sticky (/tmp). A link is judged by the folder it leads to."""
    real = os.path.realpath(directory)
    info = os.stat(real)
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    problem = write_problem(info)
    if problem:
        return problem
    uid, parent = os.geteuid(), os.path.dirname(real)
    while True:
        info = os.stat(parent)
        if info.st_uid not in (uid, 0):
            return f"lies in {parent}, which is owned by uid {info.st_uid} (not this user or root)"
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            return f"lies in {parent}, which group or others can write to (mode {stat.S_IMODE(info.st_mode):o})"
        if parent == os.path.dirname(parent):
            return None
        parent = os.path.dirname(parent)


def private_folder_problem(folder: str) -> Optional[str]:
    """Create `folder` (0700) where missing; then why other users could plant or replace files in it
    (`directory_problem`), or why it cannot be used, or None when it is private."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        return directory_problem(folder)
    except OSError as error:
        return f"cannot be used ({error.strerror or error})"


def file_problem(path: str) -> Optional[str]:
    """Why the existing `path` must not be trusted as this user's own file (a link, folder or special file; an
    owner or mode that lets others change it), or None."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a link, folder or special file)"
    return write_problem(info)


def read_text(path: str) -> str:
    """The text of the regular file `path` (a FIFO or a link planted there is an OSError, not a hang)."""
    with os.fdopen(open_regular(path, os.O_RDONLY), encoding="utf-8") as f:
        return f.read()


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The bytes of the regular file `path` (a link to one is followed). A FIFO, device or folder (a hang, or a
    read that never ends: /dev/zero), or a file of more than `max_bytes`, is an OSError saying so."""
    with os.fdopen(open_regular(path, os.O_RDONLY, follow_links=True), "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"{path} is larger than the {max_bytes} bytes allowed")
    return data
