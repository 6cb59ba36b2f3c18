"""The kernel cache (mindcv/native/build.py) never runs a library that is damaged, built for another compiler or
CPU, or that another user could have planted; each case ends in a rebuild or a fallback with a warning, and the
results stay right.

Every test uses its own cache folder (MINDCV_OPS_CACHE) and, in subprocesses, its own HOME (the private folder
that a refused cache falls back to is ~/.cache/mindcv/ops). Whatever could crash runs in a subprocess, which must
exit normally: a damaged library that got mapped would kill it with SIGBUS. The compiler is a wrapper around g++
(`--version` passed through) that the tests can break, so that every build in this module has one key."""
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mindcv.data import kernels
from mindcv.data.transforms import create_transforms
from mindcv.io.files import directory_problem
from mindcv.native import build as _build
from mindcv.ops.gelu import SOURCE as GELU_SOURCE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the kernels")

# The subprocess: the evaluation transform of one JPEG through the image kernels (output saved for comparison)
# and/or the fast GELU operator (a MindSpore ops.Custom "aot" library), compared with a float64 reference.
SCRIPT = r'''
import json, math, sys, warnings
warnings.simplefilter("always")
import numpy as np
what, image, saved = sys.argv[1:4]
report = {}
if "image" in what:
    from mindcv.data import kernels
    from mindcv.data.transforms import create_transforms
    library = kernels.library()
    report["image_library"] = None if library is None else library._name
    np.save(saved, create_transforms("imagenet", is_training=False, image_resize=24)(open(image, "rb").read()))
if "op" in what:
    import mindspore as ms
    from mindspore import ops
    ms.set_context(device_target="CPU")
    from mindcv.native import build as _build
    from mindcv.ops import gelu
    from mindcv.ops.gelu import gelu_op
    op = gelu_op()
    x = np.linspace(-4, 4, 33, dtype=np.float32)
    y = (op(ms.Tensor(x)) if op is not None else ops.gelu(ms.Tensor(x), approximate="none")).asnumpy()
    expected = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)]
    report["op_library"] = _build._built.get(gelu.SOURCE)
    report["op_error"] = float(np.abs(y - np.array(expected)).max())
print("REPORT " + json.dumps(report))
'''

# A library that another user plants: it runs code as soon as it is loaded (it leaves a marker file), and it
# even answers the self-check with the right key.
PLANTED = r'''
#include <stdio.h>
extern "C" unsigned long long mindcv_ops_build_key() { return PLANTED_KEY; }
__attribute__((constructor)) static void planted() { FILE *f = fopen(MARKER, "w"); if (f) fclose(f); }
'''

WRAPPER = """#!/bin/sh
# g++, except that it fails (MINDCV_TEST_BREAK_CXX) or builds a library with a wrong key (MINDCV_TEST_WRONG_KEY)
if [ "$1" = "--version" ]; then exec g++ --version; fi
if [ -n "$MINDCV_TEST_BREAK_CXX" ]; then echo "the test broke this compiler" >&2; exit 1; fi
if [ -n "$MINDCV_TEST_WRONG_KEY" ]; then exec g++ "$@" -UMINDCV_OPS_BUILD_KEY -DMINDCV_OPS_BUILD_KEY=1ULL; fi
exec g++ "$@"
"""
IMAGE_FLAGS = ("-ffp-contract=off",)


def photo_jpeg():
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:45, 0:61]
    pixels = np.stack([x * 4, y * 5, (x + y) * 2], -1) + rng.normal(0, 20, (45, 61, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The compiler wrapper, a test JPEG, its expected evaluation transform (Pillow, kernels off), and a cache
    primed with the image and GELU libraries built by the wrapper."""
    base = tmp_path_factory.mktemp("kernel_cache")
    wrapper = base / "cxx"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    image = base / "photo.jpg"
    image.write_bytes(photo_jpeg())
    loaded = kernels._loaded[:]
    kernels._loaded[:] = [None]
    try:
        expected = create_transforms("imagenet", is_training=False, image_resize=24)(image.read_bytes())
    finally:
        kernels._loaded[:] = loaded
    world = dict(base=base, wrapper=str(wrapper), image=str(image), expected=expected)
    primed = base / "primed"
    report, stderr = run(world, primed, "image op")
    assert report["image_library"] and report["op_library"], stderr
    assert "mindcv.ops" not in stderr, stderr  # a fresh build: nothing to warn about
    world["primed"] = primed
    return world


def env_for(world, cache, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINDCV_IMAGE_KERNELS", "MINDCV_FAST_CPU_OPS", "MINDCV_CPU_ISA", "PYTHONWARNINGS")}
    env.update(MINDCV_OPS_CACHE=str(cache), CXX=world["wrapper"], HOME=str(world["base"] / "home"),
               PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.update(extra)
    return env


def start(world, cache, what, **extra):
    saved = os.path.join(str(cache) + "-out.npy")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, what, world["image"], saved], cwd=ROOT,
                            env=env_for(world, cache, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True), saved


def finish(world, process, saved, what):
    stdout, stderr = process.communicate(timeout=600)
    # a negative code is a signal (SIGBUS from a truncated library, SIGSEGV): the process must end normally
    assert process.returncode == 0, f"exit {process.returncode}\n{stderr[-3000:]}"
    report = json.loads(next(line for line in stdout.splitlines() if line.startswith("REPORT "))[7:])
    if "image" in what:  # the same pixels as Pillow, whichever path ran
        np.testing.assert_array_equal(np.load(saved), world["expected"])
    if "op" in what:
        assert report["op_error"] < 1e-6, report
    return report, stderr


def run(world, cache, what, **extra):
    process, saved = start(world, cache, what, **extra)
    return finish(world, process, saved, what)


def copy_primed(world, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(world["primed"], cache)
    return cache


def library(cache, stem):
    (found,) = [p for p in os.listdir(cache) if p.startswith(stem + "-") and p.endswith(".so")]
    return os.path.join(cache, found)


def keys(world, monkeypatch):
    """(image key, GELU key) as the subprocesses compute them."""
    monkeypatch.setenv("CXX", world["wrapper"])
    return (_build.library_key(kernels._SOURCE, kernels._libjpeg_link_args(), IMAGE_FLAGS),
            _build.library_key(GELU_SOURCE))


def plant(path, key, marker):
    """Write, at `path`, a sealed library that creates `marker` when loaded and answers the self-check with `key`."""
    source = str(path) + ".cc"
    with open(source, "w") as f:
        f.write(PLANTED)
    subprocess.run(["g++", "-shared", "-fPIC", f"-DPLANTED_KEY=0x{key[:16]}ULL", f'-DMARKER="{marker}"', "-o",
                    str(path), source], check=True, capture_output=True)
    os.remove(source)
    _build.seal(str(path))


# ---------------------------------------------------------------------------------------------------------
# (a) damaged libraries


def test_seal_detects_truncation_and_damage(world, tmp_path):
    original = library(world["primed"], "gelu_cpu")
    assert _build.seal_problem(original) is None
    data = open(original, "rb").read()
    truncated, damaged = tmp_path / "truncated.so", tmp_path / "damaged.so"
    truncated.write_bytes(data[:len(data) // 2])
    damaged.write_bytes(data[:1000] + bytes([data[1000] ^ 0x40]) + data[1001:])
    assert "truncated" in _build.seal_problem(str(truncated))
    assert "damaged" in _build.seal_problem(str(damaged))
    assert "truncated" in _build.seal_problem(str(tmp_path / "truncated.so"))  # checked again: no caching


def test_truncated_or_unloadable_cached_libraries_are_rebuilt(world, tmp_path):
    """A truncated custom-op library used to kill the process with SIGBUS when MindSpore mapped it; a sealed file
    that the loader refuses is rebuilt too. Both are rebuilt once, with a warning, and give the right results."""
    cache = copy_primed(world, tmp_path)
    gelu, image = library(cache, "gelu_cpu"), library(cache, "image_cpu")
    with open(gelu, "r+b") as f:
        f.truncate(os.path.getsize(gelu) // 2)
    with open(image, "wb") as f:  # not an ELF file, but sealed: it passes the seal and fails to load
        f.write(b"not a shared library" * 100)
    _build.seal(image)
    report, stderr = run(world, cache, "image op")
    assert f"the cached kernel library {gelu} is truncated or was never sealed" in stderr
    assert f"the cached kernel library {image} does not load" in stderr
    assert stderr.count("; rebuilding it\n") == 2 and "cannot build" not in stderr
    assert report["op_library"] == gelu and report["image_library"] == image
    assert _build.seal_problem(gelu) is None and _build.seal_problem(image) is None
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(p) for p in (gelu, image))  # no temporary files


def test_a_failed_rebuild_falls_back_with_a_warning(world, tmp_path):
    cache = copy_primed(world, tmp_path)
    gelu, image = library(cache, "gelu_cpu"), library(cache, "image_cpu")
    for path in (gelu, image):  # one byte changed: the seal's checksum no longer matches
        data = bytearray(open(path, "rb").read())
        data[len(data) // 3] ^= 1
        open(path, "wb").write(bytes(data))
    report, stderr = run(world, cache, "image op", MINDCV_TEST_BREAK_CXX="1")
    assert f"the cached kernel library {gelu} is damaged" in stderr
    assert f"the cached kernel library {image} is damaged" in stderr
    assert "cannot build gelu_cpu.cc (the test broke this compiler" in stderr
    assert "using MindSpore's stock operators" in stderr
    assert "cannot build image_cpu.cc (the test broke this compiler" in stderr
    assert "using Pillow and numpy for the image transforms" in stderr
    assert report["op_library"] is None and report["image_library"] is None  # and the results are right


def test_a_new_library_is_loaded_and_checked_before_it_is_renamed_into_place(world, tmp_path):
    """The compiler builds libraries that answer the self-check with a wrong key: none reaches the cache."""
    cache = tmp_path / "cache"
    report, stderr = run(world, cache, "image op", MINDCV_TEST_WRONG_KEY="1")
    assert stderr.count("the new library returns build key '1'") == 2, stderr
    assert report["op_library"] is None and report["image_library"] is None
    assert os.listdir(cache) == []  # neither the library nor its temporary file


def test_concurrent_builds_leave_one_whole_library(world, tmp_path):
    cache = tmp_path / "cache"
    runs = [start(world, cache, "image") for _ in range(2)]
    reports = [finish(world, process, saved, "image")[0] for process, saved in runs]
    (name,) = os.listdir(cache)
    assert reports[0]["image_library"] == reports[1]["image_library"] == str(cache / name)
    assert _build.seal_problem(str(cache / name)) is None


# ---------------------------------------------------------------------------------------------------------
# (b) the key


def test_the_key_covers_cpu_architecture_compiler_path_and_version(world, tmp_path, monkeypatch):
    image_key, gelu_key = keys(world, monkeypatch)
    assert os.path.basename(library(world["primed"], "image_cpu")) == _build.library_name("image_cpu.cc", image_key)
    assert os.path.basename(library(world["primed"], "gelu_cpu")) == _build.library_name("gelu_cpu.cc", gelu_key)

    def key():
        return _build.library_key(GELU_SOURCE)

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert key() != gelu_key
    monkeypatch.undo()
    # the same compiler found at another path, then that path's compiler upgraded in place
    other = tmp_path / "bin" / "c++"
    other.parent.mkdir()
    shutil.copy(world["wrapper"], other)
    monkeypatch.setenv("CXX", str(other))
    at_other_path = key()
    assert at_other_path not in (gelu_key, image_key)
    other.write_text('#!/bin/sh\necho "g++ (mindcv test) 99.1"\n')
    assert key() != at_other_path
    # the same version line from the compiler on PATH under its name: the key follows the resolved file
    monkeypatch.setenv("PATH", f"{other.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CXX", "c++")
    assert _build.compiler_identity("c++") == (str(other), str(other), "g++ (mindcv test) 99.1")
    assert _build.library_name("gelu_cpu.cc", key()) != _build.library_name("gelu_cpu.cc", gelu_key)


# ---------------------------------------------------------------------------------------------------------
# (c) libraries that another user could have planted


def test_a_cache_folder_others_can_write_is_refused(world, tmp_path, monkeypatch):
    """MINDCV_OPS_CACHE at a shared folder holding planted libraries, valid names and seals: nothing from it is
    loaded; the kernels are built in the user's own cache, with a warning, and give the right results."""
    image_key, gelu_key = keys(world, monkeypatch)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    marker = tmp_path / "planted-code-ran"
    plant(shared / _build.library_name("image_cpu.cc", image_key), image_key, marker)
    plant(shared / _build.library_name("gelu_cpu.cc", gelu_key), gelu_key, marker)
    report, stderr = run(world, shared, "image op")
    assert not marker.exists()
    private = world["base"] / "home" / ".cache" / "mindcv" / "ops"
    assert f"not loading kernels from the cache folder {shared}: it can be written by group or others" in stderr
    assert f"building them in {private} instead" in stderr
    assert stderr.count("UserWarning: mindcv.ops: not loading kernels") == 1  # once per process
    assert report["image_library"] == str(private / _build.library_name("image_cpu.cc", image_key))
    assert report["op_library"] == str(private / _build.library_name("gelu_cpu.cc", gelu_key))
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700


def test_library_files_others_can_write_or_own_are_rebuilt(world, tmp_path, monkeypatch):
    image_key, gelu_key = keys(world, monkeypatch)
    cache = copy_primed(world, tmp_path)
    marker = tmp_path / "planted-code-ran"
    image = cache / _build.library_name("image_cpu.cc", image_key)
    plant(image, image_key, marker)
    image.chmod(0o666)
    gelu = cache / _build.library_name("gelu_cpu.cc", gelu_key)
    foreign = os.geteuid() == 0  # only root can give a file away: elsewhere the GELU library stays as built
    if foreign:
        plant(gelu, gelu_key, marker)
        os.chown(gelu, 65534, 65534)
    report, stderr = run(world, cache, "image op")
    assert not marker.exists()
    assert f"the cached kernel library {image} can be written by group or others (mode 666); rebuilding it" in stderr
    if foreign:
        assert f"the cached kernel library {gelu} is owned by uid 65534, not by this user" in stderr
        assert os.stat(gelu).st_uid == os.geteuid()
    assert report["image_library"] == str(image) and report["op_library"] == str(gelu)
    assert stat.S_IMODE(os.stat(image).st_mode) == 0o700


def test_which_folders_are_safe(tmp_path, monkeypatch):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert directory_problem(str(private)) is None
    private.chmod(0o770)
    assert "can be written by group or others (mode 770)" in directory_problem(str(private))
    # a private folder inside one that others can write to (and rename it away) is not safe; under a sticky
    # folder (as in /tmp) it is
    parent = tmp_path / "open"
    (parent / "cache").mkdir(parents=True, mode=0o700)
    parent.chmod(0o777)
    assert f"lies in {parent}, which group or others can write to" in directory_problem(str(parent / "cache"))
    parent.chmod(0o1777)
    assert directory_problem(str(parent / "cache")) is None
    # a symbolic link is judged by the folder it leads to
    (tmp_path / "link").symlink_to(private)
    assert "mode 770" in directory_problem(str(tmp_path / "link"))
    if os.geteuid() == 0:
        os.chown(private, 65534, 65534)
        private.chmod(0o700)
        assert "is owned by uid 65534, not by this user" in directory_problem(str(private))


def test_an_unsafe_default_cache_falls_back_to_a_fresh_private_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".cache" / "mindcv" / "ops").mkdir(parents=True)
    (home / ".cache" / "mindcv" / "ops").chmod(0o777)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MINDCV_OPS_CACHE", raising=False)
    monkeypatch.setattr(_build, "_directories", {})
    with pytest.warns(UserWarning, match="not loading kernels from the cache folder .* can be written by group"):
        chosen = _build.library_dir()
    assert os.path.basename(chosen).startswith("mindcv-ops-") and not chosen.startswith(str(home))
    assert stat.S_IMODE(os.stat(chosen).st_mode) == 0o700 and os.listdir(chosen) == []
    assert _build.library_dir() == chosen  # decided once per process
    shutil.rmtree(chosen)
