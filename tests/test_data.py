"""Animal MNIST loading: the split, and the pickle-free parser that refuses anything but an array.

Streams are built by hand (opcode bytes) or by editing the shipped label stream; nothing here
unpickles either."""
import gzip
import os
import pickletools
import struct

import numpy as np
import pytest

from litetrain.apps.demo import data
from litetrain.apps.demo.data import DataError, parse_pickled_array


def _installed():
    try:
        data.animal_mnist_dir()
    except DataError:
        return False
    return True


needs_data = pytest.mark.skipif(not _installed(), reason=f"Animal MNIST is not installed ({data.INSTALL_HINT})")


@pytest.fixture(scope="module")
def split():
    return data.load_animal_mnist()


@pytest.fixture(scope="module")
def label_stream():
    return gzip.decompress(open(os.path.join(data.animal_mnist_dir(), "animal_label_version_3.gz"), "rb").read())


# -- the split -----------------------------------------------------------------------------------
@needs_data
def test_shapes_and_dtypes(split):
    train_x, train_y, test_x, test_y = split
    assert train_x.shape == (8000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (2000, 28, 28) and test_x.dtype == np.uint8
    assert train_y.shape == (8000,) and test_y.shape == (2000,)
    assert np.issubdtype(train_y.dtype, np.integer) and np.issubdtype(test_y.dtype, np.integer)
    assert train_x.max() == 255 and train_x.min() == 0  # real images, not a zeroed buffer


@needs_data
def test_classes_are_balanced(split):
    _, train_y, _, test_y = split
    assert np.bincount(train_y, minlength=10).tolist() == [800] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [200] * 10


@needs_data
def test_split_is_disjoint_and_complete():
    _, labels = data.load_animal_mnist_arrays()
    train, test = data.stratified_split(labels)
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.union1d(train, test), np.arange(10000))


@needs_data
def test_split_is_fixed(split):
    images, labels = data.load_animal_mnist_arrays()
    train, test = data.stratified_split(labels)
    assert np.array_equal(images[test], split[2]) and np.array_equal(labels[train], split[1])
    # a different seed gives a different split: the seed, not the file order, decides it
    assert not np.array_equal(data.stratified_split(labels, seed=1)[1], test)


@needs_data
def test_arrays_match_the_raw_bytes(label_stream):
    """The parsed labels are exactly the BINBYTES operand, little-endian int64."""
    raw = next(arg for op, arg, _ in pickletools.genops(label_stream) if op.name == "BINBYTES")
    labels = parse_pickled_array(label_stream, np.int64, (10000,))
    assert np.array_equal(labels, np.frombuffer(raw, "<i8"))


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps animal-mnist==0.4"):
        data.load_animal_mnist()


# -- refusing tampered streams ------------------------------------------------------------------
def _unicode(s):
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _array_stream(shape=(2, 3), code="<i4", data_bytes=None, module="numpy.core.multiarray", name="_reconstruct"):
    """The protocol-4 opcodes NumPy writes for a C-ordered array, built by hand."""
    order, kind = code[0], code[1:]
    if data_bytes is None:
        data_bytes = np.arange(int(np.prod(shape)), dtype=code).tobytes()
    shape_ops = b"(" + b"".join(b"J" + struct.pack("<i", d) for d in shape) + b"t"
    return (b"\x80\x04" + _unicode(module) + _unicode(name) + b"\x93" + _unicode("numpy") + _unicode("ndarray")
            + b"\x93" + b"K\x00\x85" + b"C\x01b" + b"\x87" + b"R"
            + b"(K\x01" + shape_ops + _unicode("numpy") + _unicode("dtype") + b"\x93" + _unicode(kind)
            + b"\x89\x88\x87R" + b"(K\x03" + _unicode(order) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            + b"\x89" + b"B" + struct.pack("<I", len(data_bytes)) + data_bytes + b"tb.")


def test_hand_built_stream_parses():
    assert parse_pickled_array(_array_stream(), np.int32, (2, 3)).tolist() == [[0, 1, 2], [3, 4, 5]]
    big = parse_pickled_array(_array_stream(code=">i4"), np.int32, (2, 3))
    assert big.tolist() == [[0, 1, 2], [3, 4, 5]] and big.dtype == np.dtype("int32")


@pytest.mark.parametrize("stream, message", [
    (b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.", "os.system"),
    (b"\x80\x02cbuiltins\neval\n.", "builtins.eval"),
    (_array_stream(module="os", name="system"), "os.system"),
    (_array_stream(module="numpy", name="load"), "numpy.load"),
    (b"\x80\x04(cos\nsystem\nX\x02\x00\x00\x00ido.", "os.system"),
    (b"\x80\x04}\x94.", "EMPTY_DICT"),
    (b"\x80\x04K\x01K\x02\x93.", "malformed"),
    (b"\x80\x04K\x01h\x05.", "before it is stored"),
    (b"\x80\x04K\x01K\x02.", "2 values at STOP"),
    (b"\x80\x04K\x01", "STOP"),
    (b"\x80\x04B\xff\xff\x00\x00ab.", "malformed"),
], ids=["GLOBAL os.system", "GLOBAL eval", "STACK_GLOBAL os.system", "STACK_GLOBAL numpy.load",
        "OBJ", "dict", "STACK_GLOBAL of ints", "BINGET unset", "two values", "no STOP", "truncated"])
def test_foreign_streams_are_refused(stream, message):
    with pytest.raises(DataError, match=message):
        parse_pickled_array(stream, np.int32, (2, 3))


@pytest.mark.parametrize("kwargs, want, message", [
    ({"data_bytes": b"\x00" * 23}, ((2, 3), np.int32), "expected 24 data bytes .* found 23"),
    ({"data_bytes": b"\x00" * 25}, ((2, 3), np.int32), "expected 24 data bytes .* found 25"),
    ({"code": "<f4"}, ((2, 3), np.int32), "expected dtype int32, found float32"),
    ({"code": "|O8"}, ((2, 3), np.int32), "dtype"),
    ({"shape": (3, 2)}, ((2, 3), np.int32), r"expected shape \[2, 3\], found \[3, 2\]"),
    ({"shape": (6,)}, ((2, 3), np.int32), r"expected shape \[2, 3\], found \[6\]"),
], ids=["short data", "long data", "float dtype", "object dtype", "transposed shape", "flat shape"])
def test_wrong_arrays_are_refused(kwargs, want, message):
    shape, dtype = want
    if kwargs.get("code") == "|O8":  # an object array's pickle carries no raw bytes; only its dtype says so
        stream = _array_stream(code="<i4").replace(_unicode("i4"), _unicode("O8"))
    else:
        stream = _array_stream(**kwargs)
    with pytest.raises(DataError, match=message):
        parse_pickled_array(stream, dtype, shape)


@needs_data
def test_tampered_label_stream_is_refused(label_stream):
    ops = {op.name: (arg, pos) for op, arg, pos in pickletools.genops(label_stream)}
    raw, pos = ops["BINBYTES"]
    # one byte fewer, with a consistent length field: a well-formed stream of the wrong size
    short = label_stream[:pos + 1] + struct.pack("<I", len(raw) - 1) + raw[:-1] + label_stream[pos + 5 + len(raw):]
    with pytest.raises(DataError, match="expected 80000 data bytes"):
        parse_pickled_array(short, np.int64, (10000,))
    # the length field alone changed: the stream no longer decodes
    with pytest.raises(DataError, match="malformed"):
        parse_pickled_array(label_stream[:pos + 1] + struct.pack("<I", len(raw) + 1) + label_stream[pos + 5:],
                            np.int64, (10000,))
    # the dtype swapped for float64 (same length code)
    with pytest.raises(DataError, match="expected dtype int64, found float64"):
        parse_pickled_array(label_stream.replace(_unicode("i8"), _unicode("f8"), 1), np.int64, (10000,))
    # the reconstruct callable swapped for one of the same length
    evil = label_stream.replace(_unicode("numpy.core.multiarray"), _unicode("subprocess.getoutputX"), 1)
    with pytest.raises(DataError, match="subprocess.getoutputX"):
        parse_pickled_array(evil, np.int64, (10000,))


def test_gzip_bomb_is_refused(tmp_path):
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(b"\x00" * 4096))
    with pytest.raises(DataError, match="inflates past"):
        data._read_gzip(str(path), limit=1024)
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read"):
        data._read_gzip(str(path))
