"""python -m mindcv.selftest on this CPU: every row passes on both CPU paths (the sink row skips: no device queue),
a wrong result makes it exit 1 with a FAIL row, and under msrun with 2 workers the data-parallel rows pass too."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mindcv.selftest as selftest
from conftest import ROOT
from mindcv.errors import ConfigError
from test_distributed import MSRUN, free_port, needs_msrun
from test_engine import stand_in_data_sink

SINGLE_ROWS = ["ConvNeXt logits, float32", "ConvNeXt logits, amp_level O2", "AdamW, 3 steps vs PyTorch's rule",
               "fp16 overflow: skipped, scale halves", "fp16 overflow in accumulation window"]
RANK_ROWS = ["initial weights equal on all ranks", "drop-path masks differ across ranks", "gradient mean over ranks"]


def table(output):
    """{check name: (result, detail)} of the printed table."""
    rows = {}
    for line in output.splitlines():
        match = re.match(r"^(\S.*?)\s{2,}(PASS|FAIL|SKIP)  (.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2), match.group(3)
    return rows


@pytest.mark.parametrize("fast_kernels", ["1", "0"], ids=["mindcv_kernels", "device_path"])
def test_every_row_passes_on_the_cpu(fast_kernels):
    result = subprocess.run([sys.executable, "-m", "mindcv.selftest"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "MINDCV_FAST_CPU_OPS": fast_kernels}, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert ("mindcv CPU kernels" if fast_kernels == "1" else "stock operators") in result.stdout
    rows = table(result.stdout)
    assert {name: rows[name][0] for name in SINGLE_ROWS} == dict.fromkeys(SINGLE_ROWS, "PASS")
    assert rows["sink of 4 steps runs 4"] == ("SKIP", "no device queue on the CPU (host-fed runs step once per batch)")
    assert not set(rows) & set(RANK_ROWS)  # one process: no data-parallel rows
    assert "5 passed, 0 failed, 1 skipped" in result.stdout


def test_a_wrong_result_fails_its_row_and_the_exit_status(tmp_path, monkeypatch, capsys):
    """Logits 1 % off the reference (the size of a float16 conversion error): both logits rows fail, the others
    still run, and the status is 1."""
    with open(selftest.REFERENCE) as f:
        shipped = json.load(f)
    shipped["logits"] = (np.array(shipped["logits"]) * 1.01).tolist()
    wrong = tmp_path / "convnext_mini.json"
    wrong.write_text(json.dumps(shipped))
    monkeypatch.setattr(selftest, "REFERENCE", str(wrong))
    assert selftest.main([]) == 1
    rows = table(capsys.readouterr().out)
    assert [rows[name][0] for name in SINGLE_ROWS] == ["FAIL", "FAIL", "PASS", "PASS", "PASS"]
    assert rows["ConvNeXt logits, float32"][1].endswith("of max |logit| (tolerance 1e-04)")


def test_the_sink_row_counts_the_steps_each_sink_ran():
    """The sink row, with a stand-in for mindspore.data_sink (the CPU has no device queue): two sinks of 4 steps
    pass; a second sink that runs 1 step fails the row with the error naming sink_size and jit_level."""
    sinks = []
    assert selftest.check_sink("O2", 4, stand_in_data_sink(sinks)) == (True, "2 sinks of 4 steps ran 8 (jit_level O2)")
    assert [(size, level) for size, level, _ in sinks] == [(4, "O2")]
    assert sinks[0][2].calls == ["stop_send", "release"]
    short = stand_in_data_sink([], lambda index, sink_size: 1 if index else sink_size)
    with pytest.raises(ConfigError, match=r"^a sink of sink_size 4 ran 1 steps on the device \(jit_level O2\)"):
        selftest.check_sink("O2", 4, short)


@needs_msrun
def test_data_parallel_rows_pass_under_msrun(tmp_path):
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    result = subprocess.run([MSRUN, "--worker_num", "2", "--local_worker_num", "2", "--master_addr", "127.0.0.1",
                             "--master_port", str(free_port()), "--log_dir", str(tmp_path), "--join", "True",
                             "--cluster_time_out", "120", "python", "-m", "mindcv.selftest"],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PATH": path}, timeout=600)
    logs = [open(tmp_path / f"worker_{rank}.log").read() for rank in (0, 1)]
    assert result.returncode == 0, logs[0][-3000:]
    for rank, log in enumerate(logs):
        assert f"rank {rank} of 2" in log
        rows = table(log)
        assert {name: rows[name][0] for name in SINGLE_ROWS + RANK_ROWS} == dict.fromkeys(SINGLE_ROWS + RANK_ROWS,
                                                                                         "PASS")
