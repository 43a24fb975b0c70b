"""Plain data across the sandbox boundary: a tagged JSON codec and length-prefixed frames.

Used on both sides of the wall between the test harness and the candidate's process, so stdlib only.
Only these builtin types cross: None, bool, int, float, complex, str, bytes, list, tuple, dict, set,
frozenset. A subclass (a Counter, a namedtuple, an IntEnum) is sent as its builtin base, as the
program itself could have done. Decoding builds fresh builtin objects only, so nothing the candidate
defined (an `__eq__` that is always true, a `__repr__` that lies) ever reaches the side that
compares. Nothing is pickled.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time

MAX_FRAME = 16 << 20  # bytes of one encoded message
MAX_DEPTH = 64


class WireError(ValueError):
    """A value that is not plain data, or a message that is not a well-formed frame."""


def encode(value, depth: int = 0):
    """A JSON-able tree for `value` (tagged lists); WireError for anything that is not plain data."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH}")
    if value is None or type(value) is bool:
        return value
    if isinstance(value, int):
        value = int.__index__(value)
        return ["i", format(value, "x")] if abs(value) >= 2**53 else value  # hex: no digit limit
    if isinstance(value, float):
        value = float.__float__(value)
        return value if math.isfinite(value) else ["f", repr(value)]
    if isinstance(value, complex):
        return ["c", encode(value.real, depth + 1), encode(value.imag, depth + 1)]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return ["b", bytes(value).hex()]
    for base, tag in ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "z")):
        if isinstance(value, base):
            items = list(base.__iter__(value))
            if base in (set, frozenset):
                items.sort(key=repr)
            return [tag, [encode(v, depth + 1) for v in items]]
    if isinstance(value, dict):
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    raise WireError(f"not plain data: a value of type {type(value).__name__}")


def decode(tree, depth: int = 0):
    """The value `encode` made `tree` from, built from builtin types only."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH}")
    t = type(tree)
    if tree is None or t in (bool, int, float, str):
        return tree
    if t is not list or len(tree) < 2 or type(tree[0]) is not str:
        raise WireError("malformed value")
    tag, body = tree[0], tree[1]
    try:
        if tag == "i":
            return int(body, 16)
        if tag == "f":
            return float({"nan": "nan", "inf": "inf", "-inf": "-inf"}[body])
        if tag == "c":
            return complex(decode(body, depth + 1), decode(tree[2], depth + 1))
        if tag == "b":
            return bytes.fromhex(body)
        if tag in ("l", "t", "s", "z") and type(body) is list:
            items = [decode(v, depth + 1) for v in body]
            return {"l": list, "t": tuple, "s": set, "z": frozenset}[tag](items)
        if tag == "d" and type(body) is list:
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
    except (KeyError, ValueError, TypeError, IndexError, OverflowError) as e:
        raise WireError(f"malformed value ({type(e).__name__})") from None
    raise WireError(f"unknown tag {tag!r}")


def dumps(message: dict) -> bytes:
    data = json.dumps(message).encode()
    if len(data) > MAX_FRAME:
        raise WireError(f"message of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    return data


def send(fd: int, message: dict, deadline: float | None = None) -> None:
    """Writes one frame; with a `deadline`, TimeoutError when the reader stops reading before it."""
    data = dumps(message)
    view = memoryview(struct.pack(">I", len(data)) + data)
    if deadline is not None:
        os.set_blocking(fd, False)
    try:
        while view:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [fd], [], left)[1]:
                    raise TimeoutError
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                pass
    finally:
        if deadline is not None:
            os.set_blocking(fd, True)


def recv(fd: int, deadline: float | None = None) -> dict:
    """One frame from `fd`, waiting until `deadline` (time.monotonic(); None: forever). WireError on
    a short read (the other side died), an oversized or undecodable frame; TimeoutError past the
    deadline, even for a frame that stalls half-way."""
    size = struct.unpack(">I", _read(fd, 4, deadline))[0]
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    try:
        message = json.loads(_read(fd, size, deadline))
    except (ValueError, RecursionError):
        raise WireError("undecodable frame") from None
    if type(message) is not dict:
        raise WireError("a frame that is not an object")
    return message


def _read(fd: int, n: int, deadline: float | None) -> bytes:
    out = b""
    while len(out) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise WireError("the other side closed the channel")
        out += chunk
    return out
