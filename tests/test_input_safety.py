"""Hostile and mistaken input: crafted or damaged weight files, interrupted saves, malicious recipes.
Each must end in a one-line error that names the problem, never a crash, a traceback or silently wrong weights."""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading

import mindspore as ms
import numpy as np
import pytest
from mindspore.train import checkpoint_pb2
from mindspore.train.serialization import tensor_to_ms_type

from conftest import DEMO_DATA, ROOT
from mindcv.models.weights import read_state
from mindcv.io import checkpoint as checkpoint_module
from mindcv.io import ckpt_check
from mindcv.io.checkpoint import load_checkpoint_checked, save_checkpoint_atomic
from mindcv.io.ckpt_check import validate_checkpoint_file
from mindcv.config.schema import ConfigError, load_yaml

FLOATS = np.arange(8, dtype=np.float32).tobytes()  # 8 float32 values
DAMAGED = "; the file is damaged or not a MindSpore checkpoint"


def write_checkpoint(path, entries, trailer=b"") -> str:
    """A .ckpt holding `entries`, (tag, dims, tensor_type, content) each, serialized as MindSpore does:
    one Checkpoint message per entry, concatenated."""
    with open(path, "wb") as f:
        for tag, dims, tensor_type, content in entries:
            message = checkpoint_pb2.Checkpoint()
            value = message.value.add()
            value.tag = tag
            value.tensor.dims.extend(dims)
            value.tensor.tensor_type = tensor_type
            value.tensor.tensor_content = content
            f.write(message.SerializeToString())
        f.write(trailer)
    return str(path)


def protobuf_view(path) -> dict:
    """{tag: (type, dims, data bytes)} as MindSpore's protobuf parser sees the file (slices joined)."""
    message = checkpoint_pb2.Checkpoint()
    with open(path, "rb") as f:
        message.ParseFromString(f.read())
    view = {}
    for value in message.value:
        joined = view.get(value.tag, (None, None, 0))[2] + len(value.tensor.tensor_content)
        view[value.tag] = (value.tensor.tensor_type, tuple(value.tensor.dims), joined)
    return view


# ---------------------------------------------------------------------------------------------------------
# .ckpt validation


def test_validator_reads_the_installed_mindspore_schema():
    value = checkpoint_pb2.Checkpoint.Value.DESCRIPTOR.fields_by_name
    tensor = checkpoint_pb2.TensorProto.DESCRIPTOR.fields_by_name
    assert checkpoint_pb2.Checkpoint.DESCRIPTOR.fields_by_name["value"].number == ckpt_check.CHECKPOINT_VALUE
    assert (value["tag"].number, value["tensor"].number, value["maptensor"].number) == (
        ckpt_check.VALUE_TAG, ckpt_check.VALUE_TENSOR, ckpt_check.VALUE_MAPTENSOR)
    assert (tensor["dims"].number, tensor["tensor_type"].number, tensor["tensor_content"].number) == (
        ckpt_check.TENSOR_DIMS, ckpt_check.TENSOR_TYPE, ckpt_check.TENSOR_CONTENT)
    assert {name: tensor_to_ms_type[name].itemsize for name in ckpt_check.ITEMSIZE} == ckpt_check.ITEMSIZE
    assert set(tensor_to_ms_type) - set(ckpt_check.ITEMSIZE) == {ckpt_check.STRING_TYPE, "Int4"}


def test_checkpoints_mindspore_writes_are_accepted_as_mindspore_reads_them(tmp_path):
    path = str(tmp_path / "net.ckpt")
    ms.save_checkpoint(ms.nn.Dense(3, 2), path, append_dict={"epoch_num": 3, "lr": 0.5, "note": "text",
                                                             "flag": True})
    tensors = validate_checkpoint_file(path)
    assert tensors == {tag: (kind, dims) for tag, (kind, dims, _) in protobuf_view(path).items()}
    assert tensors["weight"] == ("Float32", (2, 3)) and tensors["epoch_num"] == ("Int64", ())
    assert tensors["note"] == ("str", (0,))
    # the checked loader hands back what MindSpore loads, text entries included
    assert load_checkpoint_checked(path)["note"] == "text"
    assert "note" not in read_state(path)


def test_a_tensor_written_in_slices_counts_once(tmp_path):
    path = write_checkpoint(tmp_path / "sliced.ckpt", [("w", [4, 2], "Float32", FLOATS[:16]),
                                                       ("w", [4, 2], "Float32", FLOATS[16:]),
                                                       ("b", [2], "Float32", FLOATS[:8])])
    assert validate_checkpoint_file(path) == {"w": ("Float32", (4, 2)), "b": ("Float32", (2,))}
    assert np.array_equal(load_checkpoint_checked(path)["w"].asnumpy().ravel(), np.arange(8))


CRAFTED = {
    "negative dims": ([("conv.weight", [-1, 4], "Float32", bytes(4096))], r"'conv.weight' has dims \[-1, 4\]"),
    "data shorter than dims": ([("w", [2, 4], "Float32", FLOATS[:8])],
                               r"'w' has dims \[2, 4\] of Float32 \(32 bytes\) but 8 bytes of data"),
    "data longer than dims": ([("w", [1], "Float32", FLOATS)], "'w' has dims .* but 32 bytes of data"),
    "empty data for a scalar": ([("w", [0], "Float32", b"")], r"'w' has dims \[0\] of Float32 \(4 bytes\)"),
    "unknown type": ([("w", [2], "Float128", FLOATS)], "'w' has the unknown type 'Float128'"),
    "repeated name": ([("w", [2], "Float32", FLOATS[:8]), ("b", [2], "Float32", FLOATS[:8]),
                       ("w", [2], "Float32", FLOATS[:8])], "'w' appears twice"),
    "slices that disagree": ([("w", [2], "Float32", FLOATS[:4]), ("w", [4], "Float32", FLOATS[:4])],
                             "'w' is split into slices of different dims"),
    "too many dims": ([("w", [1] * 33, "Float32", FLOATS[:4])], r"'w' has more than 32 dims"),
    "text of a partial character": ([("note", [0], "str", b"abc")], "'note' is text of 3 bytes"),
    "a name with a line break": ([("a\nb", [-1], "Float32", b"")], r"'a\\nb' has dims"),
}


@pytest.mark.parametrize("case", CRAFTED, ids=list(CRAFTED))
def test_crafted_tensors_are_refused_naming_file_and_tensor(tmp_path, case):
    entries, message = CRAFTED[case]
    path = write_checkpoint(tmp_path / "crafted.ckpt", entries)
    with pytest.raises(ValueError, match=f"^{re.escape(path)}: tensor {message}.*{DAMAGED}$") as error:
        validate_checkpoint_file(path)
    assert "\n" not in str(error.value)


def test_zero_padded_weights_never_reach_the_model(tmp_path):
    """MindSpore alone loads a tensor with half its data, zero-padded; read_state (every script's loader)
    must refuse it."""
    path = write_checkpoint(tmp_path / "short.ckpt", [("w", [2, 4], "Float32", FLOATS[:16])])
    assert np.count_nonzero(ms.load_checkpoint(path)["w"].asnumpy()) == 3  # the silent failure
    with pytest.raises(ValueError, match="'w' has dims"):
        read_state(path)


def entry_bytes(tag="w", tensor: bytes = None) -> bytes:
    """One serialized Checkpoint.Value entry; `tensor` replaces the TensorProto bytes when given."""
    message = checkpoint_pb2.Checkpoint()
    value = message.value.add()
    value.tag = tag
    value.tensor.dims.extend([2])
    value.tensor.tensor_type = "Float32"
    value.tensor.tensor_content = FLOATS[:8]
    data = message.SerializeToString()
    if tensor is None:
        return data
    tag_field = value.tag.encode()
    body = bytes([0x0A, len(tag_field)]) + tag_field + bytes([0x12, len(tensor)]) + tensor
    return bytes([0x0A, len(body)]) + body


NOT_CHECKPOINTS = {
    "random bytes": (np.random.default_rng(0).bytes(256), ""),
    "text": (b"model: convnext_tiny\n" * 4, ""),
    "empty": (b"", "it is empty"),
    "cut in a tensor's data": (entry_bytes()[:-3], "runs past the end of its message"),
    # protobuf's Python parser would skip the second entry, under a key padded to two bytes
    "padded field key": (entry_bytes() + bytes([0x8A, 0x00]) + entry_bytes("v")[1:], "padded number"),
    "no tensor": (bytes([0x0A, 0x03, 0x0A, 0x01]) + b"w", "entry 'w' holds no tensor"),
    "a MapParameter": (bytes([0x0A, 0x05, 0x0A, 0x01]) + b"w" + bytes([0x1A, 0x00]), "is a MapParameter"),
    "no data field": (entry_bytes(tensor=bytes([0x08, 0x02, 0x12, 0x07]) + b"Float32"), "'w' lacks its type or data"),
    "only unknown fields": (bytes([0x10, 0x01]), "holds no tensors"),
}


@pytest.mark.parametrize("case", NOT_CHECKPOINTS, ids=list(NOT_CHECKPOINTS))
def test_files_that_are_not_checkpoints_are_refused(tmp_path, case):
    data, message = NOT_CHECKPOINTS[case]
    path = tmp_path / "model.ckpt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{message}.*{DAMAGED}$") as error:
        validate_checkpoint_file(str(path))
    assert "\n" not in str(error.value)


def test_packed_dims_and_a_checksum_trailer_are_read_as_mindspore_reads_them(tmp_path):
    packed = bytes([0x0A, 0x02, 0x02, 0x01, 0x12, 0x07]) + b"Float32" + bytes([0x1A, 0x08]) + FLOATS[:8]
    path = tmp_path / "packed.ckpt"
    path.write_bytes(entry_bytes(tensor=packed) + b"crc_num" + bytes(10))
    assert validate_checkpoint_file(str(path)) == {"w": ("Float32", (2, 1))}
    assert load_checkpoint_checked(str(path))["w"].shape == (2, 1)


def test_validator_never_accepts_what_protobuf_reads_differently(tmp_path):
    """Every truncation, single-bit and single-byte changes, and random two-byte changes of a small checkpoint:
    where the validator accepts the file, MindSpore's parser must see the same tensors with the same dims,
    types and data sizes."""
    original = open(write_checkpoint(tmp_path / "a.ckpt", [("w", [2, 4], "Float32", FLOATS),
                                                           ("b", [], "Int64", FLOATS[:8])]), "rb").read()
    variants = [original[:cut] for cut in range(1, len(original))]
    variants += [original[:i] + bytes([original[i] ^ mask]) + original[i + 1:]
                 for i in range(len(original)) for mask in (0x01, 0x08, 0x80, 0xFF)]
    rng = np.random.default_rng(0)  # and two bytes at random, each replaced by a random one
    for i, j in rng.integers(0, len(original), (600, 2)):
        variant = bytearray(original)
        variant[i], variant[j] = rng.integers(0, 256, 2)
        variants.append(bytes(variant))
    path, accepted = str(tmp_path / "variant.ckpt"), 0
    for variant in variants:
        with open(path, "wb") as f:
            f.write(variant)
        try:
            tensors = validate_checkpoint_file(path)
        except ValueError:
            continue
        accepted += 1
        view = protobuf_view(path)
        assert tensors == {tag: (kind, dims) for tag, (kind, dims, _) in view.items()}, variant
        # MindSpore reads dims [] and [0] as a scalar
        assert all(size == ckpt_check.ITEMSIZE[kind] * (1 if dims in ((), (0,)) else int(np.prod(dims)))
                   for kind, dims, size in view.values()), variant
    assert 0 < accepted < len(variants)


def test_a_crafted_checkpoint_ends_validate_py_with_a_one_line_error(tmp_path):
    """Before the check, MindSpore corrupted the heap on this file and the process died with SIGABRT."""
    path = write_checkpoint(tmp_path / "crafted.ckpt", [("feature.0.0.weight", [-1, 4], "Float32", bytes(4096))])
    result = subprocess.run([sys.executable, "validate.py", "--data_dir", DEMO_DATA, "--model", "convnext_atto",
                             "--depths", "1", "1", "1", "1", "--dims", "16", "32", "64", "128", "--image_resize", "32",
                             "--num_samples", "16", "--ckpt_path", path], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr  # not killed by a signal (negative)
    lines = result.stderr.splitlines()  # the script's log lines, then the error
    assert lines[-1].startswith("error: ") and "dims [-1, 4]" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr and "CRITICAL" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------------------
# files that cannot be read


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_a_directory_given_as_weights_is_a_clear_error(tmp_path, suffix):
    folder = tmp_path / f"run{suffix}"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"^{folder} is a directory; pass the checkpoint file inside it$"):
        read_state(str(folder))


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "w.ckpt", [("w", [2], "Float32", FLOATS[:8])])

    def denied(name, *args, **kwargs):  # what open() raises without read permission (root would read it)
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(ckpt_check, "open", denied, raising=False)
    with pytest.raises(ValueError, match=f"^cannot read {path}: Permission denied$"):
        read_state(path)


def test_a_damaged_or_unreadable_safetensors_file_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match=f"^cannot read {path} as a safetensors file: .*header"):
        read_state(str(path))

    def denied(name, *args, **kwargs):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr("safetensors.numpy.load_file", denied)
    with pytest.raises(ValueError, match=f"^cannot read {path}: Permission denied$"):
        read_state(str(path))


# ---------------------------------------------------------------------------------------------------------
# interrupted saves


def test_an_interrupted_save_leaves_only_the_previous_checkpoint(tmp_path, monkeypatch):
    net = ms.nn.Dense(3, 2)
    path = save_checkpoint_atomic(net, str(tmp_path / "net.ckpt"))
    good = open(path, "rb").read()
    from mindspore.train import serialization
    written = []

    def interrupting(write):  # Ctrl-C after MindSpore has written a tensor into its own temporary file
        def wrapper(*args, **kwargs):
            if written:
                raise KeyboardInterrupt
            written.append(args[0])
            return write(*args, **kwargs)
        return wrapper

    for name in ("_write_parameter_data", "_write_parameter_bytes_data"):  # for numpy arrays, for tensors
        monkeypatch.setattr(serialization, name, interrupting(getattr(serialization, name)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_atomic(net, path, append_dict={"epoch_num": 2})
    assert written and os.listdir(tmp_path) == ["net.ckpt"]
    assert open(path, "rb").read() == good


def test_processes_saving_one_path_use_different_temporary_files(tmp_path, monkeypatch):
    """The ranks of a distributed run may save the same path on a shared file system at once."""
    names = []
    monkeypatch.setattr(checkpoint_module.ms, "save_checkpoint", lambda obj, name, **kwargs: names.append(name))
    monkeypatch.setattr(checkpoint_module.os, "replace", lambda *args: None)
    monkeypatch.setattr(checkpoint_module.os, "chmod", lambda *args: None)  # no file was written
    for pid in (101, 102):
        monkeypatch.setattr(checkpoint_module.os, "getpid", lambda: pid)
        save_checkpoint_atomic([], str(tmp_path / "net.ckpt"))
    assert len(set(names)) == 2 and all(socket.gethostname() in name for name in names)


# ---------------------------------------------------------------------------------------------------------
# recipes


def billion_laughs(levels: int, fan_out: int = 9) -> str:
    """A recipe of nested sections (whose keys recipes may hold) where each level aliases the one below
    `fan_out` times: a few hundred bytes that expand to fan_out ** levels values."""
    lines = ["l0: &l0 {lr: 0.1}"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(fan_out)) + "}")
    return "\n".join(lines) + "\n"


RECIPES = {
    "repeated key": ("lr: 0.1\nbatch_size: 8\nlr: 0.2\n", r"key 'lr' appears twice, on lines 1 and 3; keep one"),
    "repeated key in a section": ("optim:\n  lr: 0.1\n  lr: 0.2\n", r"key 'lr' appears twice, on lines 2 and 3"),
    "recursive alias in a list": ("scale: &a [0.1, *a]\n", "the value on line 1 contains itself through an alias"),
    "recursive alias in a section": ("optim: &s {lr: 0.1, inner: *s}\n", "contains itself through an alias"),
    "alias bomb": (billion_laughs(8), "expands to more than 10000 values through its aliases"),
    "deep nesting": ("scale: " + "[" * 5000 + "]" * 5000 + "\n", "nests values more than 50 levels deep"),
}


@pytest.mark.parametrize("case", RECIPES, ids=list(RECIPES))
def test_malicious_or_mistaken_recipes_are_refused_quickly(tmp_path, case):
    text, message = RECIPES[case]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(recipe))}.*{message}"):
        load_yaml(str(recipe))


def test_recipes_may_still_share_values_through_aliases_and_merges(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base: &base {lr: 0.1, batch_size: 8}\ntrain:\n  <<: *base\n  lr: 0.2\n"
                      "scale: &range [0.2, 1.0]\nre_scale: *range\n")
    assert load_yaml(str(recipe)) == dict(lr=0.2, batch_size=8, scale=[0.2, 1.0], re_scale=[0.2, 1.0])


# ---------------------------------------------------------------------------------------------------------
# issue 22: limits on what a file or a value may make the toolkit do


def test_a_tensor_of_millions_of_dims_is_refused_at_the_33rd(tmp_path, monkeypatch):
    """Item 13: a 40 MB file of 20M dims took 18 s to refuse: every dim was read before the 32-dim limit."""
    path = write_checkpoint(tmp_path / "dims.ckpt", [("w", [1] * 200_000, "Float32", FLOATS[:4])])
    numbers_read = []
    varint = ckpt_check._varint

    def counting(*args):
        numbers_read.append(1)
        return varint(*args)

    monkeypatch.setattr(ckpt_check, "_varint", counting)
    with pytest.raises(ValueError, match="tensor 'w' has more than 32 dims"):
        validate_checkpoint_file(path)
    assert len(numbers_read) < 100


@pytest.mark.parametrize("argv, key", [
    (["--depths", "1e309", "1", "1", "1"], "depths"),
    (["--dims", "inf", "8", "8", "8"], "dims"),
    (["--multi_step_decay_milestones", "1e400"], "multi_step_decay_milestones"),
    (["--image_resize", "1e309"], "image_resize"),
])
def test_numbers_too_large_for_an_integer_are_one_line_errors(argv, key):
    """Item 11: an OverflowError traceback (int(inf)) for each."""
    from mindcv.config.schema import parse_config
    with pytest.raises(ConfigError, match=f"^{key}: .* is not a valid"):
        parse_config(argv)


def test_infinities_in_a_recipe_are_one_line_errors(tmp_path):
    from mindcv.config.schema import parse_config
    for line in ("depths: [.inf, 1, 1, 1]", "dims: [8, 8, .inf, 8]", "multi_step_decay_milestones: [.inf]"):
        (tmp_path / "r.yaml").write_text(line + "\n")
        with pytest.raises(ConfigError, match="is not a valid list"):
            parse_config(["-c", str(tmp_path / "r.yaml")])


@pytest.mark.parametrize("argv, message", [
    (["--image_resize", "100000"], r"image_resize must be in \[1, 4096\], got 100000"),
    (["--crop_pct", "1.0e-320"], r"crop_pct must be in \(0, 1\], got 1e-320"),
    (["--scale", "5e-324", "1"], r"scale must be .*got \[5e-324, 1.0\]"),
    (["--batch_size", "100000000"], r"batch_size must be in \[1, 1048576\]"),
    (["--dims", "8", "8", "8", "1000000"], r"dims must be 4 numbers, each in \[1, 16384\]"),
])
def test_sizes_have_upper_bounds_and_fractions_are_not_subnormal(argv, message):
    """Item 10: image_resize 100000 made 9.3 GiB per image; crop_pct 1e-320 passed the range check, then
    image_resize / crop_pct overflowed."""
    from mindcv.config.schema import parse_config
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_a_run_folders_recipe_never_turns_on_a_download(tmp_path):
    """Item 10: validate.py took dataset_download True from the config.yaml beside a checkpoint and tried to write
    a 170 MB download into the user's data folder. Only the user's own command line or recipe may ask for it."""
    from mindcv.config.schema import parse_config
    (tmp_path / "config.yaml").write_text("dataset: cifar10\ndataset_download: true\nimage_resize: 32\n")
    beside = ["--ckpt_path", str(tmp_path / "m-1_1.ckpt")]
    config = parse_config(beside, recipe_beside_checkpoint=True, script="validate")
    assert config.run_folder_recipe and config.image_resize == 32 and config.dataset_download is False
    assert parse_config([*beside, "--dataset_download", "True"], recipe_beside_checkpoint=True,
                        script="validate").dataset_download is True
    assert parse_config(["-c", str(tmp_path / "config.yaml")], script="validate").dataset_download is True


def safetensors_bytes(dtype: str, size: int) -> bytes:
    header = json.dumps({"w": {"dtype": dtype, "shape": [2], "data_offsets": [0, size]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(size)


def test_weights_numpy_cannot_hold_are_a_one_line_error(tmp_path):
    """Item 11: a safetensors tensor of dtype F8_E4M3 was an AttributeError."""
    for dtype, size in (("F8_E4M3", 2), ("F8_E5M2", 2)):
        (tmp_path / "w.safetensors").write_bytes(safetensors_bytes(dtype, size))
        with pytest.raises(ValueError, match=f"^cannot read {tmp_path / 'w.safetensors'}: it holds tensors of a "
                                             "type numpy cannot hold .*float32 or float16$"):
            read_state(str(tmp_path / "w.safetensors"))


@pytest.mark.parametrize("content, message", [
    ({"epoch": 5, "w": "tensor"}, r"entry 'epoch' is a int, not a tensor"),
    ([1, 2], r"holds a list, not a mapping of parameter names to tensors"),
    ({"a": {"b": "tensor"}}, r"entry 'a' is a dict, not a tensor"),
])
def test_a_pth_of_anything_but_tensors_is_a_one_line_error(tmp_path, content, message):
    """Item 11: non-tensor entries, a list or nested dicts in a .pth were AttributeErrors."""
    import torch

    def tensors(value):
        if isinstance(value, dict):
            return {k: tensors(v) for k, v in value.items()}
        return torch.zeros(2) if value == "tensor" else value

    torch.save(tensors(content), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=message):
        read_state(str(tmp_path / "w.pth"))


def test_infer_reads_regular_files_only_within_a_size(tmp_path, monkeypatch):
    """Item 12: a FIFO named b.jpg hung infer.py, and a link to /dev/zero exhausted the memory."""
    import infer
    folder = tmp_path / "images"
    folder.mkdir()
    os.mkfifo(folder / "b.jpg")
    (folder / "z.jpg").symlink_to("/dev/zero")
    (folder / "big.jpg").write_bytes(bytes(2048))
    monkeypatch.setattr(infer, "MAX_IMAGE_BYTES", 1024)
    paths = infer.find_images([str(folder)])
    results = []
    reader = threading.Thread(target=lambda: results.extend(infer.predict(None, lambda data: data, paths, 4)),
                              daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "infer.predict hangs on a FIFO"
    assert {os.path.basename(p): m for p, m in results} == {
        "b.jpg": f"cannot read image: {folder / 'b.jpg'} is not a regular file",
        "z.jpg": f"cannot read image: {folder / 'z.jpg'} is not a regular file",
        "big.jpg": f"cannot read image: {folder / 'big.jpg'} is larger than the 1024 bytes allowed"}
