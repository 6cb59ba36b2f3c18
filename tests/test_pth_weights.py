"""Official ConvNeXt `.pth` checkpoints (facebookresearch/ConvNeXt: {"model": state_dict} saved by torch.save) load
and reproduce timm's logits. Made here from the reference fixture's official-name tensors; needs torch (a
test-only requirement)."""
import numpy as np
import pytest
from mindspore import Tensor
from safetensors.numpy import load_file

from conftest import MINI, reference
from mindcv.models import create_model

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -r requirements-dev.txt)")


@pytest.mark.parametrize("wrapped", [True, False], ids=["model_key", "bare_state_dict"])
def test_official_pth_reproduces_the_reference_logits(tmp_path, wrapped):
    state = {k: torch.from_numpy(v) for k, v in load_file(reference("convnext_mini.official.safetensors")).items()}
    path = tmp_path / "convnext_mini.pth"
    torch.save({"model": state, "epoch": 299} if wrapped else state, path)
    net = create_model("convnext_atto", checkpoint_path=str(path), **MINI).set_train(False)
    logits = net(Tensor(np.load(reference("convnext_mini.input.npy")))).asnumpy()
    assert np.abs(logits - np.load(reference("convnext_mini.logits.npy"))).max() <= 5e-5


class _RunsCode:
    """A pickle payload that would create a file if unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("content", ["code", "garbage"])
def test_a_pth_that_is_not_tensors_is_refused_without_running_it(tmp_path, content):
    marker, path = tmp_path / "ran", tmp_path / "weights.pth"
    if content == "code":
        torch.save({"model": {"stem.0.weight": _RunsCode(str(marker))}}, path)
    else:
        path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match=f"cannot read {path} as a PyTorch file of tensors"):
        create_model("convnext_atto", checkpoint_path=str(path), **MINI)
    assert not marker.exists()
