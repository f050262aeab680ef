"""The wire format: arrays and plain structures only, and a decoder that refuses anything else."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import torch

from grader import wire
from grader.errors import BadReply, TimedOut


def roundtrip(tree):
    data = wire.encode({"ok": True}, tree)
    jlen, plen = wire.HEADER.unpack(data[: wire.HEADER.size])
    js = data[wire.HEADER.size : wire.HEADER.size + jlen]
    return wire.decode(js, data[wire.HEADER.size + jlen :])


def test_roundtrip_keeps_structure_dtypes_and_values():
    tree = {
        "a": (torch.arange(6, dtype=torch.float32).reshape(2, 3), [1, 2.5, None, True, "s"]),
        "b": np.ones((0, 4)),
        "c": torch.tensor(3, dtype=torch.int64),
    }
    body, out = roundtrip(tree)
    assert body == {"ok": True}
    arr = out["a"][0]
    assert isinstance(arr, wire.Received) and arr.kind == "tensor" and arr.array.dtype == np.float32
    assert arr.array.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert out["a"][1] == [1, 2.5, None, True, "s"]
    assert out["b"].kind == "ndarray" and out["b"].array.shape == (0, 4)
    assert out["c"].array.shape == () and int(out["c"].array) == 3


def test_tensor_subclass_cannot_lie_through_torch_function():
    class Liar(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return torch.zeros(2)  # every operation "returns" zeros

        def __eq__(self, other):
            return True

    liar = torch.Tensor._make_subclass(Liar, torch.tensor([5.0, 6.0]))
    _, out = roundtrip(liar)
    assert out.array.tolist() == [5.0, 6.0]


def test_a_torch_function_mode_left_on_cannot_change_what_is_sent():
    """A student's function may leave a TorchFunctionMode on: plain tensors are still sent as they are."""
    from torch.overrides import TorchFunctionMode

    class Zeros(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return torch.zeros(2).numpy() if func is torch.Tensor.numpy else func(*args, **(kwargs or {}))

    real = torch.tensor([5.0, 6.0])
    with Zeros():
        assert real.numpy().tolist() == [0.0, 0.0]  # what the mode makes of a plain call
        _, out = roundtrip({"value": real, "grads": [real.double()]})
    assert out["value"].array.tolist() == [5.0, 6.0] and out["grads"][0].array.tolist() == [5.0, 6.0]


def test_a_tensor_whose_bytes_cannot_be_copied_raises_rather_than_sending_a_name():
    """Under the worker's memory limit, copying a large result's bytes may fail: encode raises (the worker
    then says it could not send the result back) instead of sending an "o" node in its place."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import resource, torch\n"
        "from grader import wire\n"
        "t = torch.zeros(64 << 20, dtype=torch.float64)\n"  # 512 MiB
        "vm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize')) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))\n"
        "try:\n"
        "    wire.encode({'ok': True}, {'value': t})\n"
        "    print('sent')\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.stdout.strip() == "MemoryError", (out.stdout, out.stderr[-500:])


def test_non_data_objects_are_named_not_executed():
    class Weird:
        pass

    _, out = roundtrip([Weird(), {1: 2}])
    assert isinstance(out[0], wire.Other) and out[0].type_name == "Weird"
    assert isinstance(out[1], wire.Other)


def _msg(tree_json, payload=b""):
    return json.dumps({"tree": tree_json}).encode(), payload


@pytest.mark.parametrize(
    "node,payload",
    [
        ({"a": [0, 8], "dt": "object", "sh": [1], "k": "tensor"}, b"\0" * 8),  # dtype not allowed
        ({"a": [0, 16], "dt": "float64", "sh": [1], "k": "tensor"}, b"\0" * 16),  # bytes != shape
        ({"a": [0, 8], "dt": "float64", "sh": [1], "k": "tensor"}, b"\0" * 4),  # payload too short
        ({"a": [0, 8], "dt": "float64", "sh": [-1], "k": "tensor"}, b"\0" * 8),  # negative dim
        ({"a": [0, 8], "dt": "float64", "sh": [True], "k": "tensor"}, b"\0" * 8),  # a bool for a dim
        ({"a": [0, 8], "dt": "float64", "sh": [1.0], "k": "tensor"}, b"\0" * 8),  # a float for a dim
        ({"a": [-8, 8], "dt": "float64", "sh": [1], "k": "tensor"}, b"\0" * 16),  # offset before the payload
        ({"a": [0, 8, 0], "dt": "float64", "sh": [1], "k": "tensor"}, b"\0" * 8),  # a malformed reference
        ({"a": [0, 8], "dt": ["float64"], "sh": [1], "k": "tensor"}, b"\0" * 8),  # an unhashable dtype
        ({"a": [0, 8], "dt": "float64", "sh": "1", "k": "tensor"}, b"\0" * 8),  # a shape that is no list
        ({"a": [0, 0], "dt": "float64", "sh": [0, 2**70], "k": "tensor"}, b""),  # numpy refuses the dim
        ({"a": [0, 0], "dt": "float64", "sh": [0, 2**62, 2**62], "k": "tensor"}, b""),  # dims overflow
        ({"a": [0, 8], "dt": "float64", "sh": [1] * 65, "k": "tensor"}, b"\0" * 8),  # over numpy's 64 dims
        ({"a": [0, 8], "dt": "float64", "sh": [1] * 33, "k": "tensor"}, b"\0" * 8),  # over MAX_DIMS
        ({"zz": 1}, b""),
        ({"i": "3"}, b""),
        ({"d": [[1, {"n": None}]]}, b""),
    ],
)
def test_decoder_refuses_malformed_nodes(node, payload):
    with pytest.raises(BadReply):
        wire.decode(*_msg(node, payload))


def test_decoder_refuses_deep_trees():
    node = {"n": None}
    for _ in range(wire.MAX_DEPTH + 5):
        node = {"l": [node]}
    with pytest.raises(BadReply):
        wire.decode(*_msg(node))


def test_recv_enforces_size_limit_and_deadline():
    a, b = socket.socketpair()
    try:
        a.sendall(wire.HEADER.pack(10, 1 << 40))
        with pytest.raises(BadReply, match="exceeds"):
            wire.recv(b, deadline=time.monotonic() + 1, max_bytes=1 << 20)
        with pytest.raises(TimedOut):
            wire.recv(b, deadline=time.monotonic() + 0.05, max_bytes=1 << 20)
    finally:
        a.close()
        b.close()


def _handle(sock: socket.socket):
    """The grading process's end of a worker, on a bare socket (no worker behind it)."""
    from grader import runner

    h = runner.WorkerHandle.__new__(runner.WorkerHandle)
    h.sock, h.out, h.buf, h.sink, h.alive = sock, None, bytearray(), runner.OutputSink(), True
    return h


def test_receive_gathers_replies_and_never_times_out_one_that_arrived(monkeypatch):
    """A slot naps before a reply nobody waits for (more=True), so the replies sent meanwhile come with one
    read; a reply that is here when the nap ends counts even if its deadline passed during the nap."""
    from grader import runner

    a, b = socket.socketpair()
    naps = []

    def nap(seconds):  # the worker sends its next two replies while the slot naps
        naps.append(seconds)
        if len(naps) == 1:
            a.sendall(wire.encode({"ok": True, "n": 1}, 1.5) + wire.encode({"ok": True, "n": 2}, 2.5))

    monkeypatch.setattr(runner.time, "sleep", nap)
    try:
        h = _handle(b)
        body, value = h.receive(time.monotonic() + 0.0005, 1 << 20, more=True)  # the nap outlasts it
        assert (body["n"], value) == (1, 1.5) and len(naps) == 1
        assert len(h.buf) > 0  # the second reply came with the first read
        body, value = h.receive(time.monotonic() - 1e-3, 1 << 20, more=True)  # already here: no nap
        assert (body["n"], value) == (2, 2.5) and len(naps) == 1
        a.sendall(wire.encode({"ok": True, "n": 3}))
        body, _ = h.receive(time.monotonic() + 5, 1 << 20)  # the last reply: nobody naps
        assert body["n"] == 3 and len(naps) == 1
        t = time.monotonic()
        with pytest.raises(TimedOut):
            h.receive(t + 0.05, 1 << 20, more=True)
        assert time.monotonic() - t < 1.0
        a.sendall(wire.encode({"ok": True, "n": 4})[:5])  # half a header: no reply, so still a timeout
        with pytest.raises(TimedOut):
            h.receive(time.monotonic() + 0.01, 1 << 20, more=True)
    finally:
        a.close()
        b.close()


def test_a_reply_that_trickles_in_after_its_deadline_is_timed_out(monkeypatch):
    """Bytes arriving after the deadline are read for at most COALESCE more, however they keep coming."""
    from grader import runner

    class Trickle:  # a worker whose socket is readable at every look: a huge reply, a few bytes at a time
        def __init__(self):
            self.head, self.start = wire.HEADER.pack(10, 200 << 20), time.monotonic()

        def recv(self, n):
            if time.monotonic() - self.start > 2:
                raise AssertionError("still reading 2 s after the deadline")
            out, self.head = (self.head, b"") if self.head else (b"\0" * 16, b"")
            return out

    sock = Trickle()
    monkeypatch.setattr(runner.select, "select", lambda r, w, x, t=None: (list(r), [], []))
    h = _handle(sock)
    t = time.monotonic()
    with pytest.raises(TimedOut):
        h.receive(t + 0.05, 256 << 20, more=True)
    late = time.monotonic() - t - 0.05
    assert late < runner.COALESCE + 0.1, late
