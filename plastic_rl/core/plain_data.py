"""Values as plain data, so that reading a file back runs no code.

The suite's files hold only what JSON or ``torch.load(..., weights_only=True)`` reads without calling anything:
dicts, lists, strings, numbers, booleans, ``None`` (and, in torch files, tensors and bytes). Unpickling anything
else imports and calls what the file names. :func:`to_plain` writes the few other values the suite saves as small
tagged dicts of plain values, and :func:`from_plain` reads them back exactly:

- a numpy array: ``{"__ndarray__": <its bytes in base64>, "dtype": "<u4", "shape": [624]}`` (no object arrays);
- a numpy scalar: the Python number it holds;
- a tuple: ``{"__tuple__": [...]}`` (``random.setstate`` needs a tuple back);
- a deque: ``{"__deque__": [...], "maxlen": n}``.
"""

from __future__ import annotations

import base64
import collections
from typing import Any

import numpy as np

ARRAY_TAG, TUPLE_TAG, DEQUE_TAG = "__ndarray__", "__tuple__", "__deque__"


def to_plain(value: Any) -> Any:
    """``value`` with every numpy array and scalar, tuple and deque in it written as plain data."""
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_plain(item) for item in value]
    if isinstance(value, tuple):
        return {TUPLE_TAG: [to_plain(item) for item in value]}
    if isinstance(value, collections.deque):
        return {DEQUE_TAG: [to_plain(item) for item in value], "maxlen": value.maxlen}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise ValueError(f"an array of Python objects (dtype {value.dtype}) has no plain form")
        array = np.ascontiguousarray(value)
        encoded = base64.b64encode(array.tobytes()).decode("ascii")
        return {ARRAY_TAG: encoded, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_plain(value: Any) -> Any:
    """The value that :func:`to_plain` wrote as ``value``."""
    if isinstance(value, list):
        return [from_plain(item) for item in value]
    if not isinstance(value, dict):
        return value
    if ARRAY_TAG in value:
        dtype = np.dtype(value["dtype"])
        if dtype.hasobject:
            raise ValueError(f"refusing an array of Python objects (dtype {dtype})")
        flat = np.frombuffer(base64.b64decode(value[ARRAY_TAG]), dtype=dtype)
        return flat.reshape(value["shape"]).copy()  # a writable array that owns its memory
    if TUPLE_TAG in value:
        return tuple(from_plain(item) for item in value[TUPLE_TAG])
    if DEQUE_TAG in value:
        return collections.deque((from_plain(item) for item in value[DEQUE_TAG]), maxlen=value["maxlen"])
    return {key: from_plain(item) for key, item in value.items()}
