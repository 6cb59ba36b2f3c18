"""Shared test set-up: paths to the reference fixtures and the shipped demo data."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_DIR = os.path.join(ROOT, "..", "shared", "fixtures", "convnext_reference")
DEMO_DATA = os.path.join(ROOT, "datasets", "mnist5k")
# The fixture's convnext_mini: depths and dims of a ConvNeXt small enough to compile in seconds.
MINI = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), num_classes=10)


class _XdistWorkers:
    """Workers for `-n auto`: one per core, at most 4. A worker holds compiled MindSpore graphs (1-3 GiB) and the
    longest test file takes about 2.5 minutes whatever the number of workers, so more would only use memory."""

    @staticmethod
    def pytest_xdist_auto_num_workers(config):
        return max(1, min(os.cpu_count() or 1, 4))


def pytest_configure(config):
    # an xdist hook is an error where xdist is not loaded (`-p no:xdist`): register it only with xdist
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistWorkers(), "mindcv-xdist-workers")


# MINDCV_FAST_CPU_OPS=0 runs the device path (stock operators, MindSpore's overflow check) on this CPU; tests about
# mindcv's CPU kernels themselves have nothing to test there
requires_cpu_kernels = pytest.mark.skipif(os.environ.get("MINDCV_FAST_CPU_OPS", "1") == "0",
                                          reason="tests mindcv's CPU kernels, off with MINDCV_FAST_CPU_OPS=0")


def reference(name: str) -> str:
    """Path of a reference fixture; a missing one skips the test on a developer's machine but fails it on CI
    (CI=true), where a skip would leave the comparison with the reference unrun while the build stays green."""
    path = os.path.join(REFERENCE_DIR, name)
    if not os.path.exists(path):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"reference fixture {path} is missing (CI=true: the reference tests must run on CI)",
                        pytrace=False)
        pytest.skip(f"reference fixture {path} is not available")
    return path
