"""The message format between the trusted grader and a worker: JSON structure + raw array bytes.

Nothing is pickled, nothing is executed. A message is

    header  struct "!IQ": length of the JSON part, length of the payload
    json    UTF-8 JSON: {"kind": ..., ..., "tree": node}
    payload the arrays' raw bytes, concatenated in the order the nodes name them

A tree node is one of
    {"a": [offset, nbytes], "dt": "float64", "sh": [2, 3], "k": "tensor" | "ndarray"}   an array
    {"f": 1.5} {"i": 3} {"b": true} {"s": "text"} {"n": null}                           a scalar / None
    {"t": [...]} {"l": [...]} {"d": [["key", node], ...]}                              tuple, list, dict
    {"o": "TypeName"}                                                                   something else

The decoder is the trusted side's guard: it refuses messages over the size limits, dtypes outside
ALLOWED_DTYPES, shapes that do not match their bytes, and trees deeper or wider than the limits.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.errors import BadReply, TimedOut, WorkerCrashed

HEADER = struct.Struct("!IQ")
ALLOWED_DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
)
MAX_JSON = 4 << 20
MAX_NODES = 100_000
MAX_DEPTH = 32
MAX_DIMS = 32  # numpy's own limit is 64


@dataclass(frozen=True)
class Other:
    """A value the worker could not express as an array or scalar (its type name only)."""

    type_name: str


@dataclass(frozen=True)
class Received:
    """An array as received, with the kind of object the student returned ("tensor" or "ndarray")."""

    array: np.ndarray
    kind: str


# ----------------------------------------------------------------------------------------------- encoding


def encode(message: dict[str, Any], tree: Any = None) -> bytes:
    """Encode a message dict plus a tree of arrays/scalars into bytes (used by both sides)."""
    chunks: list[bytes] = []
    offset = 0
    torch = _torch()
    tensor = torch.Tensor if torch is not None else None
    bfloat16 = torch.bfloat16 if torch is not None else None

    def array(arr: np.ndarray | None, kind: str, v: Any) -> Any:
        nonlocal offset
        if arr is None:
            return {"o": type(v).__name__}
        dt = _DTYPE_NAMES.get(arr.dtype) or str(arr.dtype)
        if dt not in ALLOWED_DTYPES:
            return {"o": f"array of dtype {dt}"}
        data = arr.tobytes()  # C order whatever the strides
        chunks.append(data)
        ref = [offset, len(data)]
        offset += len(data)
        return {"a": ref, "dt": dt, "sh": list(arr.shape), "k": kind}

    def node(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            return {"o": "too deep"}
        if type(v) is tensor and v.dtype is not bfloat16:  # most nodes: a plain tensor, converted at once
            try:
                arr = v.numpy(force=True)  # detach, cpu, resolve conj/neg, numpy
            except Exception:
                return {"o": type(v).__name__}
            return array(arr, "tensor", v)  # its errors (MemoryError copying the bytes) raise, as before
        if isinstance(v, Received):
            v = v.array
        if isinstance(v, np.ndarray):
            return array(v, "ndarray", v)
        if tensor is not None and isinstance(v, tensor):
            return array(_tensor_to_numpy(v), "tensor", v)
        if v is None:
            return {"n": None}
        if isinstance(v, bool) or isinstance(v, np.bool_):
            return {"b": bool(v)}
        if isinstance(v, int) and not isinstance(v, bool):
            return {"i": int(v)}
        if isinstance(v, float):
            return {"f": float(v)}
        if isinstance(v, np.integer):
            return {"i": int(v)}
        if isinstance(v, np.floating):
            return {"f": float(v)}
        if isinstance(v, str):
            return {"s": str(v)[:10_000]}
        if type(v) is tuple or isinstance(v, tuple):
            return {"t": [node(x, depth + 1) for x in tuple.__iter__(v)]}
        if isinstance(v, list):
            return {"l": [node(x, depth + 1) for x in list.__iter__(v)]}
        if isinstance(v, dict):
            items = []
            for k, x in dict.items(v):
                if not isinstance(k, str):
                    return {"o": "dict with non-string keys"}
                items.append([str(k), node(x, depth + 1)])
            return {"d": items}
        return {"o": type(v).__name__}

    body = dict(message)
    if torch is None:
        body["tree"] = node(tree, 0)
    else:  # one switch for the whole tree: a torch-function mode the student's code left on is not called
        with torch._C.DisableTorchFunction():
            body["tree"] = node(tree, 0)
    js = _JSON.encode(body).encode()
    payload = b"".join(chunks)
    return HEADER.pack(len(js), len(payload)) + js + payload


_JSON = json.JSONEncoder(allow_nan=True)  # json.dumps's own, without its keyword handling per message
_DTYPE_NAMES = {np.dtype(n): n for n in ALLOWED_DTYPES if n != "bfloat16"}  # str(dtype) costs microseconds
_RECEIVED_DTYPES = {n: np.dtype("float32" if n == "bfloat16" else n) for n in ALLOWED_DTYPES}
_TORCH: list[Any] = []  # torch, once imported (an import statement per value costs a lookup each time)


def _torch() -> Any:
    if not _TORCH:
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return None
        _TORCH.append(torch)
    return _TORCH[0]


def _tensor_to_numpy(t: Any) -> np.ndarray | None:
    """A numpy view of a tensor's data (encode copies it at once), bypassing a subclass's overrides (the
    caller has switched torch functions off), bfloat16 as float32."""
    torch = _torch()
    try:
        base = t if type(t) is torch.Tensor else torch.Tensor._make_subclass(torch.Tensor, t.detach())
        if base.dtype == torch.bfloat16:
            base = base.detach().to(torch.float32)
        return base.numpy(force=True)  # detach().cpu().resolve_conj().resolve_neg().numpy() in one
    except Exception:
        return None


def decode(js: bytes, payload: bytes) -> tuple[dict[str, Any], Any]:
    """Decode (trusted side). Raises BadReply on anything malformed."""
    try:
        body = json.loads(js.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise BadReply(f"unreadable reply ({e.__class__.__name__})") from None
    if type(body) is not dict or "tree" not in body:
        raise BadReply("reply without a value")
    count = 0
    end = len(payload)
    frombuffer, dtypes = np.frombuffer, _RECEIVED_DTYPES

    def node(n: Any, depth: int) -> Any:  # json.loads makes exact dicts, lists, strs, ints: type() is
        nonlocal count
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            raise BadReply("reply structure too large or too deep")
        if type(n) is not dict or not n:
            raise BadReply("malformed reply node")
        if "a" in n:
            dt, sh, ref = n.get("dt"), n.get("sh"), n["a"]
            dtype = dtypes.get(dt) if type(dt) is str else None
            if dtype is None:
                raise BadReply(f"array of dtype {dt!r} is not accepted")
            if type(sh) is not list or len(sh) > MAX_DIMS or type(ref) is not list or len(ref) != 2:
                raise BadReply("malformed array node")
            size = 1
            for d in sh:
                if type(d) is not int or d < 0:
                    raise BadReply("malformed array node")
                size *= d
            offset, nbytes = ref
            if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0:
                raise BadReply("malformed array node")
            if size * dtype.itemsize != nbytes or offset + nbytes > end:
                raise BadReply("array bytes do not match its shape")
            try:  # an empty array may still name dimensions numpy refuses ([0, 2**70])
                arr = frombuffer(payload, dtype, size, offset).copy()
                if len(sh) != 1:
                    arr = arr.reshape(sh)
            except (ValueError, OverflowError, MemoryError):
                raise BadReply("malformed array node") from None
            return Received(arr, "ndarray" if n.get("k") == "ndarray" else "tensor")
        key, val = next(iter(n.items()))  # a scalar or container node has one key
        if key == "t" or key == "l":
            if type(val) is not list:
                _bad()
            items = [node(x, depth + 1) for x in val]
            return tuple(items) if key == "t" else items
        if key == "f":
            return float(val) if isinstance(val, (int, float)) else _bad()
        if key == "i":
            return int(val) if isinstance(val, int) and not isinstance(val, bool) else _bad()
        if key == "b":
            return bool(val) if isinstance(val, bool) else _bad()
        if key == "s":
            return str(val)[:10_000] if isinstance(val, str) else _bad()
        if key == "n":
            return None
        if key == "d":
            if type(val) is not list:
                _bad()
            out: dict[str, Any] = {}
            for item in val:
                if not (type(item) is list and len(item) == 2 and type(item[0]) is str):
                    _bad()
                out[item[0]] = node(item[1], depth + 1)
            return out
        if key == "o":
            return Other(str(val)[:200])
        _bad()

    tree = node(body.pop("tree"), 0)
    return body, tree


def _bad() -> Any:
    raise BadReply("malformed reply node")


# ----------------------------------------------------------------------------------------------- transport


def send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)


def recv(sock: socket.socket, *, deadline: float | None, max_bytes: int) -> tuple[dict[str, Any], Any]:
    """Receive one message before `deadline` (time.monotonic()), refusing payloads over max_bytes."""
    head = _recv_exact(sock, HEADER.size, deadline)
    jlen, plen = HEADER.unpack(head)
    if jlen > MAX_JSON:
        raise BadReply("reply header too large")
    if plen > max_bytes:
        raise BadReply(f"reply of {plen / 2**20:.0f} MiB exceeds the {max_bytes / 2**20:.0f} MiB limit")
    js = _recv_exact(sock, jlen, deadline)
    payload = _recv_exact(sock, plen, deadline)
    return decode(js, payload)


def recv_trusting(sock: socket.socket) -> tuple[dict[str, Any], Any]:
    """Worker side: receive a request from the grader (no deadline, generous limits)."""
    head = _recv_exact(sock, HEADER.size, None)
    jlen, plen = HEADER.unpack(head)
    js = _recv_exact(sock, jlen, None)
    payload = _recv_exact(sock, plen, None)
    return decode(js, payload)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimedOut("timed out")
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                raise TimedOut("timed out")
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except (ConnectionResetError, OSError):
            chunk = b""
        if not chunk:
            raise WorkerCrashed("the worker process died")
        buf += chunk
    return bytes(buf)
