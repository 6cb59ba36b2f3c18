"""Compile-at-first-use of C++ kernels (the model operators of mindcv.ops, the image kernels of mindcv.data) into
cached shared libraries; `simd.h` and `build_key.h` here are shared by both.

A library in the cache is code that this process runs, so the cache is trusted only as far as it is safe:

* Its name hashes everything that makes the binary: the source and shared headers, the flags and linker
  arguments, the CPU architecture (platform.machine()), the compiler (the path it is found at, the file that
  path resolves to, and the first line of `compiler --version`). A different compiler or machine builds its own.
* It is sealed when built: a SHA-256 of the library and a marker appended after the ELF data (which the loader
  ignores). A library is compiled under a name private to the process, sealed, loaded by a separate Python
  process (which must find `mindcv_ops_build_key()` returning the key of its name, see build_key.h), and only
  then renamed into place, atomically. A cached library whose seal is missing or wrong (truncated, damaged,
  half-written) is never mapped: it would crash the process (SIGBUS). It is rebuilt once; if that fails the
  caller's fallback runs, with a warning.
* The cache folder, each folder above it and each library must be safe from other users: the folder and the
  libraries owned by this user and not writable by group or others, the folders above owned by this user or
  root and not writable by others unless sticky (/tmp). A cache folder that is not is refused with a warning,
  and the libraries are built into a private folder instead (the default cache, else a fresh temporary
  folder); a library file that is not is rebuilt.
"""
import atexit
import ctypes
import functools
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from typing import Optional, Tuple

from ..io.files import file_problem, private_folder_problem

_NATIVE_DIR = os.path.dirname(os.path.abspath(__file__))
# -O3 auto-vectorises the kernels; each has AVX-512, AVX2 and baseline versions (target attributes, see simd.h)
# picked at load time, so no -march flag is needed and the library runs on any x86-64 CPU.
# -Wno-psabi: the kernels' vector types never cross a call boundary, see simd.h.
CXX_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-Wno-psabi"]
_SHARED_HEADERS = ("simd.h", "build_key.h")  # a source may also include the headers of its own folder
DEFAULT_CACHE = "~/.cache/mindcv/ops"
SEAL_MAGIC = b"mindcv-ops-seal1"  # the last 16 bytes of a sealed library; before them, the SHA-256 of the rest
SEAL_SIZE = 32 + len(SEAL_MAGIC)
_built = {}
_directories = {}  # requested cache folder -> the folder used
_compilers = {}  # (path, resolved path, mtime, size) -> first line of --version


class BuildError(RuntimeError):
    """A library could not be built or failed its checks."""


def op_from_library(source: str, link=lambda: (), **build_options):
    """Decorator for `make(library_path) -> ops.Custom` (or a tuple of them): the decorated function takes no
    arguments, builds the operator from the compiled `source` (a .cc path) on its first call and returns that same result
    afterwards; None, every time, where the library cannot be built (`build` warns once). `link()`, called at the
    first build, gives the linker arguments, or None where a library to link is missing (then None, silently: the
    caller's separate operators run); `build_options` go to `build`."""

    def decorate(make):
        built = []

        @functools.wraps(make)
        def get():
            if not built:
                link_args = link()
                library = build(source, link=link_args, **build_options) if link_args is not None else None
                built.append(make(library) if library is not None else None)
            return built[0]

        return get

    return decorate


def same_as_first(*args):
    """Output shape / dtype inference of a custom op whose output is shaped like its first input."""
    return args[0]


def cache_dir() -> str:
    """The configured home of compiled libraries: $MINDCV_OPS_CACHE, default ~/.cache/mindcv/ops (see
    `library_dir` for the folder actually used)."""
    return os.path.expanduser(os.environ.get("MINDCV_OPS_CACHE", DEFAULT_CACHE))


# ---------------------------------------------------------------------------------------------------------
# the key


def compiler_identity(compiler: str) -> Tuple[str, str, str]:
    """(path on PATH, resolved path, first line of `--version`) of `compiler`; BuildError where there is none or
    it does not answer."""
    found = shutil.which(compiler)
    if found is None:
        raise BuildError(f"no C++ compiler ({compiler}) on PATH")
    found = os.path.abspath(found)
    resolved = os.path.realpath(found)
    info = os.stat(resolved)
    cache_key = (found, resolved, info.st_mtime_ns, info.st_size)  # an upgrade in place is noticed
    if cache_key not in _compilers:
        try:
            answer = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BuildError(f"{found} --version failed: {error}") from error
        lines = answer.stdout.strip().splitlines()
        if answer.returncode != 0 or not lines:
            raise BuildError(f"{found} --version failed: {(answer.stderr or answer.stdout).strip()[:200]}")
        _compilers[cache_key] = lines[0].strip()
    return found, resolved, _compilers[cache_key]


def _inputs(source: str):
    """The files a library is built from: the source, the headers of its folder and the shared headers."""
    folder = os.path.dirname(os.path.abspath(source))
    return [source] + sorted(glob.glob(os.path.join(folder, "*.h"))) + [os.path.join(_NATIVE_DIR, name)
                                                                          for name in _SHARED_HEADERS]


def library_key(source: str, link=(), flags=()) -> str:
    """The hex SHA-256 that names the library built from `source` (a .cc path) with `link` and `flags` by the compiler
    $CXX (default g++) on this CPU architecture."""
    digest = hashlib.sha256()
    for part in (platform.machine(), *compiler_identity(os.environ.get("CXX", "g++")),
                 " ".join(CXX_FLAGS + list(flags) + list(link))):
        digest.update(part.encode() + b"\0")
    for path in _inputs(source):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def library_name(source: str, key: str) -> str:
    return f"{os.path.splitext(os.path.basename(source))[0]}-{key[:16]}.so"


# ---------------------------------------------------------------------------------------------------------
# where libraries may be loaded from


def _private_dir(refused: str) -> str:
    """A folder only this user can write: the default cache where that is safe and not `refused`, else a fresh
    temporary folder (0700, removed at exit)."""
    default = os.path.realpath(os.path.expanduser(DEFAULT_CACHE))
    if default != refused and private_folder_problem(default) is None:
        return default
    private = os.path.realpath(tempfile.mkdtemp(prefix="mindcv-ops-"))
    atexit.register(shutil.rmtree, private, True)
    return private


def library_dir() -> str:
    """The folder that libraries are built in and loaded from: the real path of `cache_dir()` (created 0700
    where missing) when other users cannot write to it; else, with a warning once per process, a private one."""
    requested = cache_dir()
    if requested not in _directories:
        problem = private_folder_problem(requested)
        if problem is None:
            _directories[requested] = os.path.realpath(requested)
        else:
            refused = os.path.realpath(requested)
            private = _private_dir(refused)
            warnings.warn(f"mindcv.ops: not loading kernels from the cache folder {requested}: it {problem}, so "
                          f"another user could plant code there that this process would run; building them in "
                          f"{private} instead (make the folder private: chmod go-w, or set MINDCV_OPS_CACHE)")
            _directories[requested] = private
    return _directories[requested]


# ---------------------------------------------------------------------------------------------------------
# seal and self-check


def seal(path: str) -> None:
    """Append the SHA-256 of the file and SEAL_MAGIC."""
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).digest()
    with open(path, "ab") as handle:
        handle.write(digest + SEAL_MAGIC)


def seal_problem(path: str) -> Optional[str]:
    """Why the file at `path` is not whole as sealed (truncated, damaged, never sealed), or None."""
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < SEAL_SIZE or not data.endswith(SEAL_MAGIC):
        return f"is truncated or was never sealed ({len(data)} bytes, no seal at the end)"
    if hashlib.sha256(data[:-SEAL_SIZE]).digest() != data[-SEAL_SIZE:-len(SEAL_MAGIC)]:
        return "is damaged (its contents do not match the checksum it was sealed with)"
    return None


_SELF_CHECK = ("import ctypes, sys\n"
               "f = ctypes.CDLL(sys.argv[1]).mindcv_ops_build_key\n"
               "f.restype = ctypes.c_ulonglong\n"
               "print(f())\n")


def _load_problem(path: str, key: str) -> Tuple[Optional[str], bool]:
    """Load the sealed library at `path` into this process: (why it is unusable, or None; whether it loaded).
    One that loaded stays mapped under its name (the dynamic loader would hand it out again for that name)."""
    try:
        function = ctypes.CDLL(path).mindcv_ops_build_key
    except OSError as error:
        return f"does not load ({error})", False
    except AttributeError:
        return "has no build key (mindcv_ops_build_key)", True
    function.restype, function.argtypes = ctypes.c_ulonglong, []
    if function() != int(key[:16], 16):
        return "was built for other sources, flags or compiler than its name says", True
    return None, True


def _one_line(text: str) -> str:
    """The line of a tool's output that says what went wrong: its first error, else its last line."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    if errors:
        return errors[0][:300]
    return lines[-1][:300] if lines else ""


def _check_in_subprocess(path: str, key: str) -> None:
    """BuildError unless a separate Python process loads `path` and reads its key: a library that crashes when
    loaded kills that process, not this one."""
    if not sys.executable:  # an embedded interpreter: load it here (under its temporary name)
        problem, _ = _load_problem(path, key)
        if problem:
            raise BuildError(f"the new library {problem}")
        return
    try:
        answer = subprocess.run([sys.executable, "-I", "-c", _SELF_CHECK, path], capture_output=True, text=True,
                                timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"the new library could not be checked ({error})") from error
    if answer.returncode != 0:
        reason = f"signal {-answer.returncode}" if answer.returncode < 0 else _one_line(answer.stderr)
        raise BuildError(f"the new library does not load ({reason})")
    if answer.stdout.strip() != str(int(key[:16], 16)):
        raise BuildError(f"the new library returns build key {answer.stdout.strip()!r}, not {int(key[:16], 16)}")


def _cached_problem(library: str) -> Optional[str]:
    """Why the existing file `library` must not be loaded (unsafe owner or mode, not a file, seal), or None."""
    return file_problem(library) or seal_problem(library)


def _compile(compiler: str, source: str, library: str, key: str, link, flags) -> None:
    """Compile into a file private to this process, seal it, check it in a subprocess, rename it to `library`."""
    directory = os.path.dirname(library)
    handle, partial = tempfile.mkstemp(prefix=f".{os.path.basename(library)}.{os.getpid()}.", suffix=".tmp",
                                       dir=directory)
    os.close(handle)
    try:
        subprocess.run([compiler, *CXX_FLAGS, *flags, "-I", _NATIVE_DIR, "-include", os.path.join(_NATIVE_DIR, "build_key.h"),
                        f"-DMINDCV_OPS_BUILD_KEY=0x{key[:16]}ULL", "-o", partial, source, *link], check=True,
                       capture_output=True, text=True, timeout=900)
        seal(partial)
        os.chmod(partial, 0o700)
        _check_in_subprocess(partial, key)
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def build(source: str, link=(), flags=(),
          fallback: str = "MindSpore's stock operators, which are much slower on CPU") -> Optional[str]:
    """Path of the shared library compiled from `source` (the path of a .cc file) and linked with
    the `link` arguments (e.g. ("-ljpeg",)) with extra compiler `flags`, checked and loaded into this process;
    or None with a warning (once per source) that names `fallback` when it cannot be built or fails its checks.
    A cached library that is damaged or unsafe is rebuilt once, with a warning (see the module's docstring)."""
    if source in _built:
        return _built[source]
    source_name = os.path.basename(source)
    library = None
    try:
        compiler = compiler_identity(os.environ.get("CXX", "g++"))[0]
        key = library_key(source, link, flags)
        library = os.path.join(library_dir(), library_name(source, key))
        problem = _cached_problem(library) if os.path.lexists(library) else "missing"
        rebuilt = problem is not None
        if rebuilt:
            if problem != "missing":
                warnings.warn(f"mindcv.ops: the cached kernel library {library} {problem}; rebuilding it")
            _compile(compiler, source, library, key, link, flags)
        problem, loaded = _load_problem(library, key)
        if problem and not rebuilt and not loaded:  # a library that failed to load is not mapped: rebuild it
            warnings.warn(f"mindcv.ops: the cached kernel library {library} {problem}; rebuilding it")
            _compile(compiler, source, library, key, link, flags)
            problem, _ = _load_problem(library, key)
        if problem:
            raise BuildError(f"{library} {problem}")
    except (OSError, BuildError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        detail = _one_line(getattr(error, "stderr", "") or "") or error
        warnings.warn(f"mindcv.ops: cannot build {source_name} ({detail}); using {fallback}")
        library = None
    _built[source] = library
    return library
