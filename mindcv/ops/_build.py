"""Compile-at-first-use of the C++ kernels in this package into a cached shared library."""
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from typing import Optional

_SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
# -O3 auto-vectorises the kernels; each has AVX-512, AVX2 and baseline versions (target attributes, see simd.h)
# picked at load time, so no -march flag is needed and the library runs on any x86-64 CPU.
# -Wno-psabi: the kernels' vector types never cross a call boundary, see simd.h.
CXX_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-Wno-psabi"]
_HEADERS = ("simd.h", "gelu.h", "layer_norm.h")
_built = {}


def op_from_library(source_name: str, link=lambda: (), **build_options):
    """Decorator for `make(library_path) -> ops.Custom` (or a tuple of them): the decorated function takes no
    arguments, builds the operator from the compiled `source_name` on its first call and returns that same result
    afterwards; None, every time, where the library cannot be built (`build` warns once). `link()`, called at the
    first build, gives the linker arguments, or None where a library to link is missing (then None, silently: the
    caller's separate operators run); `build_options` go to `build`."""

    def decorate(make):
        built = []

        @functools.wraps(make)
        def get():
            if not built:
                link_args = link()
                library = build(source_name, link=link_args, **build_options) if link_args is not None else None
                built.append(make(library) if library is not None else None)
            return built[0]

        return get

    return decorate


def same_as_first(*args):
    """Output shape / dtype inference of a custom op whose output is shaped like its first input."""
    return args[0]


def cache_dir() -> str:
    """Where compiled libraries live: $MINDCV_OPS_CACHE, default ~/.cache/mindcv/ops."""
    return os.path.expanduser(os.environ.get("MINDCV_OPS_CACHE", "~/.cache/mindcv/ops"))


def build(source_name: str, link=(), flags=(),
          fallback: str = "MindSpore's stock operators, which are much slower on CPU") -> Optional[str]:
    """Path of the shared library compiled from `source_name` (a file in mindcv/ops) and linked with
    the `link` arguments (e.g. ("-ljpeg",)) with extra compiler `flags`, or None with a warning (once per source) that names `fallback` when it cannot
    be built. The library's name carries a hash of the source and the shared headers and the flags, so an
    edited kernel is rebuilt; concurrent builders each write a private file and rename it."""
    if source_name in _built:
        return _built[source_name]
    source = os.path.join(_SOURCE_DIR, source_name)
    compiler = os.environ.get("CXX", "g++")
    library = None
    try:
        digest = hashlib.sha256(" ".join(CXX_FLAGS + list(flags) + list(link)).encode())
        for name in (source_name,) + _HEADERS:
            with open(os.path.join(_SOURCE_DIR, name), "rb") as handle:
                digest.update(handle.read())
        library = os.path.join(cache_dir(), f"{os.path.splitext(source_name)[0]}-{digest.hexdigest()[:16]}.so")
        if not os.path.isfile(library):
            if shutil.which(compiler) is None:
                raise RuntimeError(f"no C++ compiler ({compiler}) on PATH")
            os.makedirs(cache_dir(), exist_ok=True)
            handle, partial = tempfile.mkstemp(suffix=".so", dir=cache_dir())
            os.close(handle)
            try:
                subprocess.run([compiler, *CXX_FLAGS, *flags, "-o", partial, source, *link], check=True, capture_output=True,
                               text=True)
                os.replace(partial, library)
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        warnings.warn(f"mindcv.ops: cannot build {source_name} ({detail}); using {fallback}")
        library = None
    _built[source_name] = library
    return library
