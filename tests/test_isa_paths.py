"""The kernels' AVX2 and generic (non-x86) code paths, which this machine's AVX-512 CPU would not take by
itself: the exactness and stock-operator tests of the image kernels and the fast model kernels, rerun in a
subprocess with MINDCV_CPU_ISA capping the instruction set."""
import os
import subprocess
import sys

import pytest

from conftest import requires_cpu_kernels

pytestmark = requires_cpu_kernels
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_kernels_match_on_capped_instruction_sets(isa):
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               os.path.join(TESTS, "test_data_kernels.py"), os.path.join(TESTS, "test_fast_ops.py"),
               "-k", "not compiler"]
    result = subprocess.run(command, cwd=os.path.dirname(TESTS), env={**os.environ, "MINDCV_CPU_ISA": isa},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
