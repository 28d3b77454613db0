"""TensorFlow's tensor lists (the variant values of While loops: Keras's LSTM/GRU and their gradients),
with AddN and ZerosLike, which TensorFlow's gradients apply to lists as well as to tensors.

A list value is a `TensorList`: its items (arrays, or None for a slot reserved but never set, which
reads as zeros), its element dtype, its element shape as TensorFlow's PartialTensorShape (None for
an unknown rank, -1 for an unknown dim) and its maximum length (-1: unbounded). Values are never
changed once made: every op returns a new list (TensorFlow's kernels forward their input list only
when nothing else holds it, which gives the same values). Written from list_ops.cc and
list_kernels.h/.cc; each error names the op and says what TensorFlow's kernel says.
"""
from __future__ import annotations

import numpy as np

from ...core.ir import numpy_dtype
from .._util import sized
from .common import check_t, tf_op

LIST_ATTRS = {"element_dtype": "float32", "shape_type": "int32"}


class TensorList:
    """TensorFlow's TensorList as a value that flows between nodes (dtype "variant")."""
    __slots__ = ("items", "element_dtype", "element_shape", "max_num_elements")

    def __init__(self, items, element_dtype, element_shape, max_num_elements=-1):
        self.items = tuple(items)
        self.element_dtype = element_dtype
        self.element_shape = element_shape
        self.max_num_elements = max_num_elements

    def replace(self, items, element_shape=None):
        shape = self.element_shape if element_shape is None else element_shape
        return TensorList(items, self.element_dtype, shape, self.max_num_elements)

    def __len__(self):
        return len(self.items)

    def __repr__(self):
        return f"TensorList({len(self.items)} x {self.element_dtype}{_text(self.element_shape)})"


# -- PartialTensorShape: None (unknown rank) or a tuple of dims, -1 unknown ---------------------------------
def _text(shape):
    return "<unknown>" if shape is None else "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"


def shape_from_tensor(t, op, what="element_shape"):
    """TensorFlow's TensorShapeFromTensor: a scalar -1 (unknown rank) or a vector of dims."""
    t = np.asarray(t)
    if t.dtype not in (np.int32, np.int64):
        raise ValueError(f"{op}: {what} must be int32 or int64, got {t.dtype}")
    if t.ndim == 0:
        if int(t) != -1:
            raise ValueError(f"{op}: the only valid scalar {what} is -1 (an unknown rank), got {int(t)}")
        return None
    if t.ndim != 1 or (t.size and int(t.min()) < -1):
        raise ValueError(f"{op}: {what} must be a vector of dims >= -1, got {t.tolist()}")
    return tuple(int(d) for d in t)


def compatible(a, b) -> bool:
    return a is None or b is None or (len(a) == len(b) and all(x < 0 or y < 0 or x == y for x, y in zip(a, b)))


def merge(a, b, op, what):
    if not compatible(a, b):
        raise ValueError(f"{op}: {what}: shapes {_text(a)} and {_text(b)} are incompatible")
    if a is None or b is None:
        return b if a is None else a
    return tuple(y if x < 0 else x for x, y in zip(a, b))


def _full(shape):
    return None if shape is None or any(d < 0 for d in shape) else shape


def _the_list(v, op, element_dtype=None) -> TensorList:
    if not isinstance(v, TensorList):
        raise TypeError(f"{op}: the input handle must be a tensor list, got {type(v).__name__}")
    if element_dtype is not None and v.element_dtype != element_dtype:
        raise ValueError(f"{op}: invalid data types; op elements {element_dtype} but list elements {v.element_dtype}")
    return v


def _element(value, dtype, op):
    value = np.asarray(value)
    if value.dtype != numpy_dtype(dtype):
        raise ValueError(f"{op}: invalid data types; list elements {dtype} but the tensor is {value.dtype}")
    return value


def _merged_shape(lst, shape_input, op, what, always_items=False):
    """The element shape `shape_input` merged with the list's, then with the shapes of the items
    that are set (when it is not fully known yet, or `always_items`)."""
    shape = merge(shape_from_tensor(shape_input, op), lst.element_shape, op, "element_shape")
    if always_items or _full(shape) is None:
        for item in lst.items:
            if item is not None:
                shape = merge(shape, item.shape, op, what)
    return shape


def _zeros_for(lst, shape_input, op):
    """What an unset slot reads as: zeros of the element shape (the input merged with the list's,
    else with the shapes of the items that are set), which must then be fully known."""
    shape = _merged_shape(lst, shape_input, op, "element_shape")
    if _full(shape) is None:
        raise ValueError(f"{op}: trying to read an uninitialized tensor but element_shape {_text(shape)} is not "
                         "fully defined and no list element is set")
    return np.zeros(shape, numpy_dtype(lst.element_dtype))


def _index(index, op, size, resize=False):
    index = np.asarray(index)
    if index.dtype != np.int32 or index.ndim != 0:
        raise ValueError(f"{op}: index must be an int32 scalar, got {index.dtype}{list(index.shape)}")
    i = int(index)
    if i < 0 or (i >= size and not resize):
        raise ValueError(f"{op}: trying to access element {i} in a list with {size} elements")
    return i


# -- kernels ------------------------------------------------------------------------------------------------
def _empty(element_shape, max_num_elements, element_dtype="float32", shape_type="int32"):
    op = "EmptyTensorList"
    m = np.asarray(max_num_elements)
    if m.ndim != 0 or int(m) < -1:
        raise ValueError(f"{op}: max_num_elements must be a scalar >= -1, got {m.tolist()}")
    return TensorList((), element_dtype, shape_from_tensor(element_shape, op), int(m))


def _reserve(element_shape, num_elements, element_dtype="float32", shape_type="int32"):
    op = "TensorListReserve"
    n = np.asarray(num_elements)
    if n.ndim != 0 or int(n) < 0:
        raise ValueError(f"{op}: the num_elements to reserve must be a non-negative scalar, got {n.tolist()}")
    return TensorList((None,) * int(n), element_dtype, shape_from_tensor(element_shape, op))


def _from_tensor(tensor, element_shape, element_dtype="float32", shape_type="int32"):
    op = "TensorListFromTensor"
    tensor = _element(tensor, element_dtype, op)
    if tensor.ndim < 1:
        raise ValueError(f"{op}: the tensor must be at least a vector, got shape {list(tensor.shape)}")
    shape = shape_from_tensor(element_shape, op)
    if not compatible(shape, tensor.shape[1:]):
        raise ValueError(f"{op}: specified a list with shape {_text(shape)} from a tensor with shape "
                         f"{list(tensor.shape)}")
    return TensorList([tensor[i].copy() for i in range(tensor.shape[0])], element_dtype, shape)


def _get_item(input_handle, index, element_shape, element_dtype="float32"):
    op = "TensorListGetItem"
    lst = _the_list(input_handle, op, element_dtype)
    item = lst.items[_index(index, op, len(lst))]
    return item if item is not None else _zeros_for(lst, element_shape, op)


def _set_item(input_handle, index, item, element_dtype="float32", resize_if_index_out_of_bounds=False):
    op = "TensorListSetItem"
    lst = _the_list(input_handle, op, element_dtype)
    item = _element(item, element_dtype, op)
    i = _index(index, op, len(lst), resize_if_index_out_of_bounds)
    if not compatible(lst.element_shape, item.shape):
        raise ValueError(f"{op}: tried to set a tensor with incompatible shape {list(item.shape)} at index {i} "
                         f"(the list's element shape is {_text(lst.element_shape)})")
    items = list(lst.items) + [None] * (i + 1 - len(lst))
    items[i] = item
    return lst.replace(items)


def _stack(input_handle, element_shape, element_dtype="float32", num_elements=-1):
    op = "TensorListStack"
    lst = _the_list(input_handle, op, element_dtype)
    if num_elements != -1 and len(lst) != num_elements:
        raise ValueError(f"{op}: expected a list with {num_elements} elements but got a list with {len(lst)}")
    shape = _merged_shape(lst, element_shape, op, "element shape of the list's items", always_items=True)
    if _full(shape) is None:
        raise ValueError(f"{op}: tried to stack a list whose element_shape {_text(shape)} is not fully defined "
                         "and whose items are all unset")
    out = np.zeros((len(lst),) + tuple(shape), numpy_dtype(element_dtype))
    for k, item in enumerate(lst.items):
        if item is not None:
            out[k] = item
    return out


def _push_back(input_handle, tensor, element_dtype="float32"):
    op = "TensorListPushBack"
    lst = _the_list(input_handle, op, element_dtype)
    tensor = _element(tensor, element_dtype, op)
    if not compatible(lst.element_shape, tensor.shape):
        raise ValueError(f"{op}: tried to append a tensor with incompatible shape {list(tensor.shape)} to a list "
                         f"of element shape {_text(lst.element_shape)}")
    if lst.max_num_elements != -1 and len(lst) >= lst.max_num_elements:
        raise ValueError(f"{op}: tried to push an item into a full list (size {len(lst)}, max_num_elements "
                         f"{lst.max_num_elements})")
    return lst.replace(lst.items + (tensor,))


def _pop_back(input_handle, element_shape, element_dtype="float32"):
    op = "TensorListPopBack"
    lst = _the_list(input_handle, op, element_dtype)
    if not lst.items:
        raise ValueError(f"{op}: trying to pop from an empty list")
    last = lst.items[-1]
    if last is None:
        last = np.zeros(_require_full(merge(shape_from_tensor(element_shape, op), lst.element_shape, op,
                                            "element_shape"), op), numpy_dtype(element_dtype))
    return lst.replace(lst.items[:-1]), last


def _require_full(shape, op):
    if _full(shape) is None:
        raise ValueError(f"{op}: trying to read an uninitialized tensor but element_shape {_text(shape)} is not "
                         "fully defined")
    return shape


def _element_shape(input_handle, shape_type="int32"):
    lst = _the_list(input_handle, "TensorListElementShape")
    dtype = numpy_dtype(shape_type)
    return np.asarray(-1, dtype) if lst.element_shape is None else np.asarray(lst.element_shape, dtype)


def _length(input_handle):
    return np.int32(len(_the_list(input_handle, "TensorListLength")))


# -- what the kernels allocate (for the call's memory budget) -------------------------------------------------
def _element_dims(lst, shape_input):
    """The element shape a read of an unset slot would allocate, when it can be told (else None)."""
    try:
        shape = merge(shape_from_tensor(shape_input, "tensor list"), lst.element_shape, "", "")
    except (TypeError, ValueError):
        return None
    if _full(shape) is None:
        shape = next((item.shape for item in lst.items if item is not None), None)
    return _full(shape)


def _reading_allocates(list_position, shape_position, index_position=None):
    """GetItem/PopBack/Stack: zeros for unset slots (Stack: the whole [length, *element] output)."""
    def allocates(*args, element_dtype="float32", **attrs):
        lst, dtype = args[list_position], numpy_dtype(element_dtype)
        if not isinstance(lst, TensorList):
            return dtype, (), 0
        dims = _element_dims(lst, args[shape_position])
        if dims is None:
            return dtype, (), 0
        if index_position is None:  # a stack: every slot
            return sized(dtype, (len(lst),) + tuple(dims), "tensor list")
        try:
            item = lst.items[-1 if index_position < 0 else int(np.asarray(args[index_position]).reshape(()))]
        except (IndexError, TypeError, ValueError):
            return dtype, (), 0
        return (dtype, item.shape, 0) if item is not None else sized(dtype, dims, "tensor list")
    return allocates


def _slots_allocates(count):
    """Reserve and SetItem (when it grows the list): 8 bytes a slot."""
    def allocates(*args, **attrs):
        try:
            n = count(*args, **attrs)
        except (TypeError, ValueError):
            n = 0
        return sized(np.dtype(object), [max(n, 0)], "tensor list")
    return allocates


def _grown_to(input_handle, index, item, resize_if_index_out_of_bounds=False, **attrs):
    i = int(np.asarray(index).reshape(()))
    return i + 1 if resize_if_index_out_of_bounds and isinstance(input_handle, TensorList) and i >= len(
        input_handle) else 0


# -- shape rules -----------------------------------------------------------------------------------------
def _a_list(attrs, inputs):
    return [("variant", ())]


def _shape_input(info, op):
    """A constant element_shape input as dims (None unknown), or None when not known now."""
    if info.dtype not in ("int32", "int64"):
        raise ValueError(f"element_shape must be int32 or int64, got {info.dtype}")
    if info.data is None:
        return None
    shape = shape_from_tensor(info.data, op)
    return None if shape is None else tuple(None if d < 0 else d for d in shape)


def _item_infer(shape_input):
    def infer(attrs, inputs):
        if inputs[0].dtype != "variant":
            raise ValueError(f"the input handle must be a tensor list (variant), got {inputs[0].dtype}")
        dims = _shape_input(inputs[shape_input], "tensor list")
        if dims is None:
            raise ValueError("the element's shape is known when the list is read")
        return [(attrs["element_dtype"], dims)]
    return infer


def _stack_infer(attrs, inputs):
    (dtype, dims), = _item_infer(1)(attrs, inputs)
    n = attrs["num_elements"]
    return [(dtype, (None if n == -1 else n,) + tuple(dims))]


def _pop_infer(attrs, inputs):
    return [("variant", ())] + _item_infer(1)(attrs, inputs)


def _element_shape_infer(attrs, inputs):
    raise ValueError("a list's element shape (and so its rank) is known when the file runs")


def _check_element(attrs, inputs, k):
    if inputs[k].dtype != attrs["element_dtype"]:
        raise ValueError(f"element_dtype is {attrs['element_dtype']} but the tensor is {inputs[k].dtype}")
    return _a_list(attrs, inputs)


LIST_IN = {"element_dtype": "float32"}
tf_op("EmptyTensorList", infer=_a_list, kernel=_empty, num_inputs=(2, 2), attrs=LIST_ATTRS)
tf_op("TensorListReserve", infer=_a_list, kernel=_reserve, num_inputs=(2, 2), attrs=LIST_ATTRS,
      allocates=_slots_allocates(lambda shape, n, **a: int(np.asarray(n).reshape(()))))
tf_op("TensorListFromTensor", infer=lambda a, i: _check_element(a, i, 0), kernel=_from_tensor, num_inputs=(2, 2),
      attrs=LIST_ATTRS)
tf_op("TensorListGetItem", infer=_item_infer(2), kernel=_get_item, num_inputs=(3, 3), attrs=LIST_IN,
      allocates=_reading_allocates(0, 2, index_position=1))
tf_op("TensorListSetItem", infer=lambda a, i: _check_element(a, i, 2), kernel=_set_item, num_inputs=(3, 3),
      attrs={**LIST_IN, "resize_if_index_out_of_bounds": False}, allocates=_slots_allocates(_grown_to))
tf_op("TensorListStack", infer=_stack_infer, kernel=_stack, num_inputs=(2, 2), attrs={**LIST_IN, "num_elements": -1},
      allocates=_reading_allocates(0, 1))
tf_op("TensorListPushBack", infer=lambda a, i: _check_element(a, i, 1), kernel=_push_back, num_inputs=(2, 2),
      attrs=LIST_IN)
tf_op("TensorListPopBack", infer=_pop_infer, kernel=_pop_back, num_inputs=(2, 2), attrs=LIST_IN,
      allocates=_reading_allocates(0, 1, index_position=-1))
tf_op("TensorListElementShape", infer=_element_shape_infer, kernel=_element_shape, num_inputs=(1, 1),
      attrs={"shape_type": "int32"})
tf_op("TensorListLength", infer=lambda a, i: [("int32", ())], kernel=_length, num_inputs=(1, 1), attrs={})


# -- AddN and ZerosLike, of tensors and of lists ------------------------------------------------------------
def _add_lists(a: TensorList, b: TensorList) -> TensorList:
    op = "AddN"
    if a.element_dtype != b.element_dtype:
        raise ValueError(f"{op}: trying to add two lists of different dtypes ({a.element_dtype}, {b.element_dtype})")
    shape = merge(a.element_shape, b.element_shape, op, "the lists' element shapes")
    if len(a) != len(b):
        raise ValueError(f"{op}: trying to add two lists of different lengths ({len(a)}, {len(b)})")
    items = []
    for x, y in zip(a.items, b.items):  # an unset item adds as nothing (TensorFlow's BinaryAddTensors)
        if x is not None and y is not None and x.shape != y.shape:
            raise ValueError(f"{op}: trying to add list items of shapes {list(x.shape)} and {list(y.shape)}")
        items.append(y if x is None else x if y is None else x + y)
    return TensorList(items, a.element_dtype, shape)


def _add_n(*inputs, N=0, T="float32"):
    if len(inputs) != N:
        raise ValueError(f"AddN: N={N} but {len(inputs)} inputs")
    if T == "variant":
        total = _the_list(inputs[0], "AddN")
        for v in inputs[1:]:
            total = _add_lists(total, _the_list(v, "AddN"))
        return total
    if any(np.shape(v) != np.shape(inputs[0]) for v in inputs):
        raise ValueError(f"AddN: inputs must have one shape, got {[list(np.shape(v)) for v in inputs]}")
    total = np.array(inputs[0], copy=True)
    for v in inputs[1:]:
        total += v
    return total


def _add_n_infer(attrs, inputs):
    if len(inputs) != attrs["N"] or not inputs:
        raise ValueError(f"N={attrs['N']} but {len(inputs)} inputs")
    for t in inputs:
        check_t(attrs, t)
    if attrs["T"] == "variant":
        return [("variant", ())]
    shapes = {tuple(t.shape) for t in inputs}
    if len({len(s) for s in shapes}) != 1:
        raise ValueError(f"inputs must have one shape, got {[list(s) for s in shapes]}")
    dims = tuple(next((d for d in col if d is not None), None) for col in zip(*shapes))
    return [(inputs[0].dtype, dims)]


def _zeros_like(x, T="float32"):
    if T == "variant":
        lst = _the_list(x, "ZerosLike")
        return TensorList([None if v is None else np.zeros_like(v) for v in lst.items], lst.element_dtype,
                          lst.element_shape)
    return np.zeros_like(np.asarray(x))


def _zeros_like_infer(attrs, inputs):
    check_t(attrs, inputs[0])
    return [(inputs[0].dtype, inputs[0].shape)]


tf_op("AddN", infer=_add_n_infer, kernel=_add_n, num_inputs=(1, None), attrs={"N": 1, "T": "float32"})
tf_op("ZerosLike", infer=_zeros_like_infer, kernel=_zeros_like, num_inputs=(1, 1), attrs={"T": "float32"})
