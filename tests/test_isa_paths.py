"""The kernels' AVX2 and generic (non-x86) code paths, which this machine's AVX-512 CPU would not take by
itself: the exactness and stock-operator tests of the image kernels and the fast model kernels, rerun in a
subprocess with MINDCV_CPU_ISA capping the instruction set.

Each kernel library picks its code path once, when it is loaded: a variable `kIsa` (kBase = 0, kAvx2 = 1,
kAvx512 = 2, see mindcv/native/simd.h) that every dispatch reads. A pytest plugin in the subprocess reads that
variable, at the end of the session, from each kernel library the tests loaded, so the test knows which path
the kernels it just checked ran."""
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from conftest import requires_cpu_kernels

pytestmark = requires_cpu_kernels
TESTS = os.path.dirname(os.path.abspath(__file__))
ISA_CODES = {"base": 0, "avx2": 1, "avx512": 2}
# the libraries whose kernels dispatch on the instruction set (residual_cpu has one path only)
DISPATCHING = {"image_cpu", "depthwise_conv_cpu", "finite_cpu", "gelu_cpu", "layer_norm_cpu", "mlp_cpu"}

PROBE = '''
"""pytest plugin: at the end of the session, write the kIsa of every loaded mindcv kernel library to $ISA_REPORT."""
import ctypes
import json
import os
import subprocess

from mindcv.native.build import cache_dir


def loaded_isas():
    """{library name: {kIsa symbol: value}} for the mindcv kernel libraries mapped into this process."""
    cache = os.path.realpath(cache_dir()) + os.sep
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if line.rstrip().endswith(".so")
                        and os.path.realpath(line.split()[-1]).startswith(cache)})
    report = {}
    for path in paths:
        symbols = {}
        for line in subprocess.run(["nm", "--defined-only", path], capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            value, kind, name = line.split()
            symbols[name] = kind, int(value, 16)
        library = ctypes.CDLL(path)  # already loaded: the same handle, no new initialisation
        # where the library sits in memory: an exported function's address less its offset in the file
        exported = next(name for name, (kind, _) in symbols.items() if kind == "T")
        base = ctypes.cast(getattr(library, exported), ctypes.c_void_p).value - symbols[exported][1]
        values = {}
        for name, (kind, value) in symbols.items():
            if name.startswith("_ZN") and name.endswith("4kIsaE"):  # not the guard variables, _ZGV...
                # a unique symbol ("u", of an inline variable in a header) is shared by the libraries that
                # define it: the dynamic linker's copy is the one the code reads
                isa = ctypes.c_int.in_dll(library, name) if kind == "u" else ctypes.c_int.from_address(base + value)
                values[name] = isa.value
        report[os.path.basename(path).rsplit("-", 1)[0]] = values
    return report


def pytest_sessionfinish(session):
    with open(os.environ["ISA_REPORT"], "w") as f:
        json.dump(loaded_isas(), f)
'''


def best_isa():
    """The best instruction set of this CPU by simd.h's rule, from the kernel's CPU flags."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return "base"  # other CPUs run the generic code only
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "base"


def _probe_env(tmp_path, isa):
    (tmp_path / "isa_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "MINDCV_CPU_ISA"}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               ISA_REPORT=str(tmp_path / "isa.json"))
    if isa:
        env["MINDCV_CPU_ISA"] = isa
    return env


@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_kernels_match_on_capped_instruction_sets(isa, tmp_path):
    assert shutil.which("nm"), "nm (binutils, installed with the compiler) reads the kernels' kIsa"
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "isa_probe",
               os.path.join(TESTS, "test_data_kernels.py"), os.path.join(TESTS, "test_fast_ops.py"),
               "-k", "not compiler"]
    result = subprocess.run(command, cwd=os.path.dirname(TESTS), env=_probe_env(tmp_path, isa),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
    # the kernels those tests ran took the capped path: the cap, or the CPU's best where that is lower
    report = json.loads((tmp_path / "isa.json").read_text())
    expected = min(ISA_CODES[isa], ISA_CODES[best_isa()])
    isas = {library: set(values.values()) for library, values in report.items() if values}
    assert set(isas) >= DISPATCHING and all(values == {expected} for values in isas.values()), report


def test_uncapped_kernels_take_the_best_instruction_set(tmp_path):
    """Without MINDCV_CPU_ISA the kernels run the CPU's best path: on an AVX-512 machine the capped runs above
    do test other code."""
    code = ("import json, isa_probe; from mindcv.data import kernels; assert kernels.library() is not None; "
            "print(json.dumps(isa_probe.loaded_isas()))")
    result = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(TESTS),
                            env=_probe_env(tmp_path, None), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(report["image_cpu"].values()) == [ISA_CODES[best_isa()]], report
