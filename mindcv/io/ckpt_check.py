"""Checking weight files before a library parses them.

`mindspore.load_checkpoint` trusts the `.ckpt` file: a tensor with a negative dimension corrupts the heap
(the process dies with SIGSEGV or SIGABRT), and a tensor whose data is shorter than its dimensions loads
zero-padded without a word. `validate_checkpoint_file` reads the file's protobuf structure
(`mindspore.train.checkpoint_pb2.Checkpoint`, proto2) straight from the wire format and refuses anything
that MindSpore would mis-read. It decodes every field but the tensor bytes, which it only measures, from a
memory map: checking a file of hundreds of megabytes takes milliseconds, where a second protobuf parse
would add half of the loading time.

The schema it reads (mindspore/train/checkpoint.proto):

    message Checkpoint { message Value { required string tag = 1;
                                         oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2;
                          required bytes tensor_content = 3; }
"""
import itertools
import math
import mmap
import os
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

# Field numbers of the schema above (tests check them against checkpoint_pb2).
CHECKPOINT_VALUE = 1
VALUE_TAG, VALUE_TENSOR, VALUE_MAPTENSOR = 1, 2, 3
TENSOR_DIMS, TENSOR_TYPE, TENSOR_CONTENT = 1, 2, 3

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5

# Bytes per element of each tensor_type MindSpore writes and reads back as a tensor
# ("str" entries hold UTF-32 text; "Int4", packed 4-bit pairs, is not one mindcv reads).
ITEMSIZE = {"Bool": 1, "Int8": 1, "UInt8": 1, "Int16": 2, "UInt16": 2, "Float16": 2, "BFloat16": 2,
            "Int32": 4, "UInt32": 4, "Float32": 4, "Int64": 8, "UInt64": 8, "Float64": 8}
STRING_TYPE = "str"
MAX_RANK = 32  # numpy's and MindSpore's limit

# MindSpore may end a checkpoint with b"crc_num" and a 10-byte checksum, outside the protobuf message.
_CRC_MARK, _CRC_TRAILER = b"crc_num", 17


class _Damaged(ValueError):
    """What is wrong with the file, where: `validate_checkpoint_file` adds the path and the advice."""


@dataclass
class _Tensor:
    dims: List[int] = field(default_factory=list)
    tensor_type: Optional[bytes] = None
    content: Optional[Tuple[int, int]] = None  # (start, stop) of the data in the file


def require_file(path: str) -> None:
    """Raise FileNotFoundError when `path` does not exist and ValueError when it is a directory or another
    kind of non-regular file (a FIFO would block the reader), each naming the path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path} is a directory; pass the checkpoint file inside it")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file; pass a checkpoint file")


def validate_checkpoint_file(path: str) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
    """Check that `path` is a MindSpore `.ckpt` that `mindspore.load_checkpoint` reads faithfully: a
    well-formed Checkpoint message whose every entry is a tensor of a known type, with non-negative dims,
    exactly as many data bytes as its dims and type need, and a name no other entry has (a tensor larger
    than 512 MB is written as consecutive slices under one name, which count as one tensor).

    Returns {name: (tensor_type, dims)} of the tensors, in file order. Raises FileNotFoundError, or a
    one-line ValueError naming the file and the tensor, e.g. "/x.ckpt: tensor 'conv.weight' has dims
    [-1, 4]; the file is damaged or not a MindSpore checkpoint"."""
    require_file(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise _Damaged("it is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                return _check_checkpoint(buffer)
    except _Damaged as problem:
        raise ValueError(f"{path}: {problem}; the file is damaged or not a MindSpore checkpoint") from None
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None


def _check_checkpoint(buffer) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
    end = len(buffer)
    if end >= _CRC_TRAILER and buffer[end - _CRC_TRAILER:end - _CRC_TRAILER + len(_CRC_MARK)] == _CRC_MARK:
        end -= _CRC_TRAILER  # as load_checkpoint does
    entries = _read_checkpoint(buffer, end)
    if not entries:
        raise _Damaged("it holds no tensors")
    tensors = {}
    for name, slices in itertools.groupby(entries, key=lambda entry: entry[0]):
        if name in tensors:
            raise _Damaged(f"tensor {_quote(name)} appears twice")
        tensors[name] = _check_tensor(name, [tensor for _, tensor in slices])
    return tensors


def _check_tensor(name: str, slices: List[_Tensor]) -> Tuple[str, Tuple[int, ...]]:
    """(tensor_type, dims) of one tensor written as `slices` (usually one); _Damaged if MindSpore would
    mis-read it."""
    first = slices[0]
    if any((s.dims, s.tensor_type) != (first.dims, first.tensor_type) for s in slices):
        problem = "is split into slices of different dims or types"
    elif first.tensor_type is None or any(s.content is None for s in slices):
        problem = "lacks its type or data"
    else:
        problem = _size_problem(first.tensor_type.decode("utf-8", "replace"), first.dims,
                                sum(s.content[1] - s.content[0] for s in slices))
    if problem:
        raise _Damaged(f"tensor {_quote(name)} {problem}")
    return first.tensor_type.decode(), tuple(first.dims)


def _size_problem(tensor_type: str, dims: List[int], size: int) -> Optional[str]:
    """What is wrong with a tensor of `tensor_type` and `dims` holding `size` data bytes, or None."""
    if any(d < 0 for d in dims):
        return f"has dims {dims}"
    if tensor_type == STRING_TYPE:
        return None if size and size % 4 == 0 else f"is text of {size} bytes, not whole UTF-32 characters"
    if tensor_type not in ITEMSIZE:
        return f"has the unknown type {_quote(tensor_type)}"
    # load_checkpoint reads dims [0] as a scalar, like []
    expected = (1 if dims in ([], [0]) else math.prod(dims)) * ITEMSIZE[tensor_type]
    if size != expected:
        return f"has dims {dims} of {tensor_type} ({expected} bytes) but {size} bytes of data"
    return None


def _quote(text: str) -> str:
    """`text` quoted with control characters escaped, and shortened: names come from the file, and the
    error must stay one readable line."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _read_checkpoint(buffer, end: int) -> List[Tuple[str, _Tensor]]:
    """(name, tensor) of each Checkpoint.value entry in buffer[:end]; _Damaged if the bytes are not a
    Checkpoint message, or an entry is not a plain tensor."""
    entries = []
    for number, wire, value in _fields(buffer, 0, end):
        if (number, wire) == (CHECKPOINT_VALUE, _LENGTH_DELIMITED):
            entries.append(_read_entry(buffer, *value))
    return entries


def _read_entry(buffer, start: int, stop: int) -> Tuple[str, _Tensor]:
    """One Checkpoint.Value: its tag and tensor, with protobuf's rules for a field that occurs more than once
    (a string: the last one counts; a message: the occurrences merge; the oneof: the last member set wins)."""
    # a field of another wire type is unknown to protobuf, which skips it
    fields = [(number, value) for number, wire, value in _fields(buffer, start, stop) if wire == _LENGTH_DELIMITED]
    tags = [value for number, value in fields if number == VALUE_TAG]
    if not tags:
        raise _Damaged(f"an entry at byte {start} has no name")
    try:
        name = bytes(buffer[tags[-1][0]:tags[-1][1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Damaged(f"the name of the entry at byte {start} is not UTF-8 text") from None
    tensor, is_map = None, False
    for number, value in fields:
        if number == VALUE_TENSOR:
            if tensor is None:
                tensor = _Tensor()
            _read_tensor(buffer, *value, tensor, name)
            is_map = False
        elif number == VALUE_MAPTENSOR:
            tensor, is_map = None, True
    if is_map:
        raise _Damaged(f"entry {_quote(name)} is a MapParameter, which no mindcv model holds")
    if tensor is None:
        raise _Damaged(f"entry {_quote(name)} holds no tensor")
    return name, tensor


def _read_tensor(buffer, start: int, stop: int, tensor: _Tensor, name: str) -> None:
    """Merge the TensorProto in buffer[start:stop] into `tensor` (of the entry `name`); _Damaged as soon as it has
    more than MAX_RANK dims (a crafted file of millions of dims is refused at the 33rd, not after reading them)."""
    for number, wire, value in _fields(buffer, start, stop):
        if (number, wire) == (TENSOR_DIMS, _VARINT):
            _add_dim(tensor, _signed(value), name)
        elif (number, wire) == (TENSOR_DIMS, _LENGTH_DELIMITED):  # packed: what proto3 writers emit
            position, packed_stop = value
            while position < packed_stop:
                dim, position = _varint(buffer, position, packed_stop)
                _add_dim(tensor, _signed(dim), name)
        elif (number, wire) == (TENSOR_TYPE, _LENGTH_DELIMITED):
            tensor.tensor_type = bytes(buffer[value[0]:value[1]])
        elif (number, wire) == (TENSOR_CONTENT, _LENGTH_DELIMITED):
            tensor.content = value


def _add_dim(tensor: _Tensor, dim: int, name: str) -> None:
    if len(tensor.dims) == MAX_RANK:
        raise _Damaged(f"tensor {_quote(name)} has more than {MAX_RANK} dims (numpy's and MindSpore's limit)")
    tensor.dims.append(dim)


def _fields(buffer, position: int, stop: int):
    """(field number, wire type, value) of each field of the message in buffer[position:stop]. The value
    is the number for a varint, the (start, stop) span for a length-delimited field, None for fixed-size
    ones. Groups (wire types 3 and 4, never written by MindSpore) and invalid wire types are refused."""
    while position < stop:
        key_at = position
        key, position = _varint(buffer, position, stop)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Damaged(f"field number 0 at byte {key_at}")
        if wire == _VARINT:
            value, position = _varint(buffer, position, stop)
        elif wire == _LENGTH_DELIMITED:
            length, position = _varint(buffer, position, stop)
            if length > stop - position:
                raise _Damaged(f"a field at byte {key_at} runs past the end of its message (truncated file?)")
            value, position = (position, position + length), position + length
        elif wire in (_FIXED64, _FIXED32):
            position += 8 if wire == _FIXED64 else 4
            if position > stop:
                raise _Damaged(f"a field at byte {key_at} runs past the end of its message (truncated file?)")
            value = None
        else:
            raise _Damaged(f"wire type {wire} at byte {key_at}")
        yield number, wire, value


def _varint(buffer, position: int, stop: int) -> Tuple[int, int]:
    """(value, next position) of the base-128 varint at `position`. Refuses a truncated one, one beyond 64
    bits, and a padded one (a final 0x00 byte): protobuf's Python parser matches field keys by their exact
    bytes, so it would skip a field under a padded key that a numeric decoder reads."""
    result = 0
    for shift in range(0, 70, 7):
        if position >= stop:
            raise _Damaged(f"a number at byte {position} is cut off (truncated file?)")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise _Damaged(f"a padded number ends at byte {position - 1}")
            if result >> 64:
                raise _Damaged(f"a number beyond 64 bits ends at byte {position - 1}")
            return result, position
    raise _Damaged(f"a number longer than 10 bytes ends at byte {position - 1}")


def _signed(value: int) -> int:
    """An int64 from its varint (two's complement in 64 bits)."""
    return value - (1 << 64) if value >> 63 else value
