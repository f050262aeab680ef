"""The untrusted side: a zygote that forks workers, and the worker loop that runs student code.

    grading process ──fork (before any secret/reference is loaded)──> zygote (torch imported, 1 thread)
    grading process ──spawn request + socketpair fd──> zygote ──fork──> worker (one per submission)
    grading process <──wire messages (arrays only)──> worker

The zygote holds no reference, secret or expected output, so neither do the workers it forks. A worker
receives only a submission's files (copied into its private directory) and the inputs of each call.
It answers with plain arrays (grader.wire); everything it says is judged in the grading process.

Requests (wire messages, JSON part):
    {"op": "import", "module": "rnn"}                            -> {"ok", "functions" | "error"}
    {"op": "call", "function", "grad_wrt", "banned"} + tree {"args", "projection"}
                                                                 -> {"ok", "error", "mutated", "banned", "seconds"}
                                                                    + tree {"value", "grads"}
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
import types
from typing import Any

from grader import wire


# ----------------------------------------------------------------------------------------------- zygote


class Zygote:
    """A warmed, single-threaded process that forks one worker per request."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()  # one spawn request at a time on the control socket

    def start(self) -> Zygote:
        import numpy  # noqa: F401  (warm: the workers inherit these imports)
        import torch

        torch.set_num_threads(1)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # zygote
            try:
                parent.close()
                _zygote_main(child)
            finally:
                os._exit(0)
        child.close()
        self.pid, self.sock = pid, parent
        return self

    def spawn(self, workdir: str, config: dict[str, Any]) -> tuple[int, socket.socket, int]:
        """Fork a worker in `workdir`; returns (pid, socket to it, read end of its stdout/stderr pipe)."""
        assert self.sock is not None, "zygote not started"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        request = json.dumps({"workdir": workdir, "config": config}).encode()
        try:
            with self.lock:
                socket.send_fds(self.sock, [request], [theirs.fileno(), out_w])
                data = self.sock.recv(64)
        finally:
            theirs.close()
            os.close(out_w)
        if not data:
            raise RuntimeError("the zygote process died")
        return int(data.decode()), ours, out_r

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None


def _zygote_main(control: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped automatically
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the grading process's to handle
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, 1 << 16, 2)
        except OSError:
            return
        if not msg:
            return
        req = json.loads(msg.decode())
        pid = os.fork()
        if pid == 0:  # worker
            code = 70
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.setsid()
                code = _worker_main(fds[0], fds[1], req["workdir"], req.get("config", {}))
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        control.sendall(str(pid).encode())


# ----------------------------------------------------------------------------------------------- worker


def _worker_main(sock_fd: int, out_fd: int, workdir: str, config: dict[str, Any]) -> int:
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    sock = socket.socket(fileno=sock_fd)
    from grader import sandbox

    sandbox.confine(workdir, config)
    os.chdir(workdir)
    sys.path.insert(0, workdir)
    sys.argv = [os.path.join(workdir, "submission")]
    tracer = Tracer()
    tracer.install(config.get("banned", []))
    worker = Worker(sock, tracer)
    worker.loop()
    return 0


class Worker:
    def __init__(self, sock: socket.socket, tracer: Tracer):
        import torch

        self.sock = sock
        self.tracer = tracer
        self.module: Any = None
        # Keep our own handles: the student's code may monkeypatch the public ones.
        self.torch = torch
        self._grad = torch.autograd.grad
        self._equal = torch.equal
        self._from_numpy = torch.from_numpy

    def loop(self) -> None:
        while True:
            try:
                msg, tree = wire.recv_trusting(self.sock)
            except Exception:
                return
            op = msg.get("op")
            if op == "import":
                self.reply(self.do_import(msg["module"]))
            elif op == "call":
                body, out = self.do_call(msg, tree)
                self.reply(body, out)
            else:
                return

    def reply(self, body: dict[str, Any], tree: Any = None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            data = wire.encode(body, tree)
        except Exception as e:  # a value we cannot encode is the student's problem, reported as such
            data = wire.encode({"ok": False, "error": f"could not send the result back: {e.__class__.__name__}"})
        wire.send(self.sock, data)

    def do_import(self, module: str) -> dict[str, Any]:
        path = os.path.join(os.getcwd(), module + ".py")
        try:
            spec = importlib.util.spec_from_file_location(module, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[module] = mod
            with self.tracer.attributed(None):
                spec.loader.exec_module(mod)
        except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt in student code too
            return {"ok": False, "error": _format_exc(e, path)}
        self.module = mod
        functions = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("__")]
        return {"ok": True, "functions": functions}

    def do_call(self, msg: dict[str, Any], tree: Any) -> tuple[dict[str, Any], Any]:
        torch = self.torch
        name = msg["function"]
        fn = getattr(self.module, name, None)
        if not callable(fn):
            return {"ok": False, "error": f"{name} is not defined"}, None
        args = list(self.to_torch(tree["args"]))
        grad_wrt = [int(i) for i in msg.get("grad_wrt", [])]
        for i in grad_wrt:
            args[i] = args[i].detach().clone().requires_grad_(True)
        snapshot = [(i, t.detach().clone()) for i, t in self.tensor_args(args)]
        leaves_in = [a for i, a in enumerate(args) if i in grad_wrt]
        self.tracer.reset(msg.get("banned", []))
        start = time.perf_counter()
        try:
            with self.tracer.attributed(name):
                value = fn(*args)
        except BaseException as e:  # noqa: BLE001
            body = {"ok": False, "error": _format_exc(e, None), "banned": sorted(self.tracer.hits)}
            return body, None
        seconds = time.perf_counter() - start
        mutated = []
        for i, before in snapshot:
            after = self.arg_tensor(args, i)
            with torch.no_grad():
                if after.shape != before.shape or not self._equal(after.detach(), before):
                    mutated.append(i)
        body = {"ok": True, "seconds": seconds, "mutated": mutated, "banned": sorted(self.tracer.hits)}
        grads: Any = None
        if grad_wrt:
            try:
                grads = self.gradients(value, self.to_torch(tree["projection"]), leaves_in)
            except BaseException as e:  # noqa: BLE001
                body["ok"] = False
                body["error"] = f"could not differentiate the outputs: {_format_exc(e, None)}"
                return body, None
            value = None  # the forward check compares values; here only gradients travel back
        return body, {"value": value, "grads": grads}

    def gradients(self, value: Any, projection: Any, leaves_in: list[Any]) -> list[Any]:
        torch = self.torch
        outs = _flatten(value)
        projs = _flatten(projection)
        if len(outs) != len(projs):
            raise ValueError(f"the function returned {len(outs)} outputs, expected {len(projs)}")
        terms = []
        for o, p in zip(outs, projs, strict=True):
            if p is None:
                continue
            if not isinstance(o, torch.Tensor):
                raise TypeError(f"an output is a {type(o).__name__}, not a tensor")
            if tuple(o.shape) != tuple(p.shape):
                raise ValueError(f"an output has shape {tuple(o.shape)}, expected {tuple(p.shape)}")
            if o.requires_grad:
                terms.append((o * p.to(o.dtype)).sum())
        if not terms:
            return [None] * len(leaves_in)
        loss = terms[0]
        for t in terms[1:]:
            loss = loss + t
        grads = self._grad(loss, leaves_in, allow_unused=True)
        return [None if g is None else g.detach() for g in grads]

    def to_torch(self, tree: Any) -> Any:
        if isinstance(tree, wire.Received):
            return self._from_numpy(tree.array)
        if isinstance(tree, tuple):
            return tuple(self.to_torch(x) for x in tree)
        if isinstance(tree, list):
            return [self.to_torch(x) for x in tree]
        if isinstance(tree, dict):
            return {k: self.to_torch(v) for k, v in tree.items()}
        return tree

    def tensor_args(self, args: list[Any]) -> list[tuple[Any, Any]]:
        out = []
        for i, a in enumerate(args):
            for j, t in enumerate(_flatten(a)):
                if isinstance(t, self.torch.Tensor):
                    out.append(([i, j], t))
        return out

    def arg_tensor(self, args: list[Any], key: tuple[int, int]) -> Any:
        return _flatten(args[key[0]])[key[1]]


def _flatten(tree: Any) -> list[Any]:
    if isinstance(tree, (tuple, list)):
        return [x for t in tree for x in _flatten(t)]
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _flatten(v)]
    return [tree]


def _format_exc(e: BaseException, path: str | None) -> str:
    """'ValueError: ... (rnn.py, line 12, in rnn_step)': the innermost frame in the student's files."""
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    cwd = os.getcwd()
    for frame in reversed(tb):
        if frame.filename.startswith(cwd) or (path and frame.filename == path):
            where = f" ({os.path.basename(frame.filename)}, line {frame.lineno}, in {frame.name})"
            break
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} ({os.path.basename(e.filename or '?')}, line {e.lineno})"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text[:300]
    return f"{type(e).__name__}: {text}{where}" if text else f"{type(e).__name__}{where}"


# ----------------------------------------------------------------------------------------------- banned APIs


class Tracer:
    """Records calls of banned APIs made while a student's function runs (attributed to that function).

    The names are dotted paths (torch.nn.LSTM, torch.autograd.grad, torch._VF, torch.Tensor.backward).
    Classes are replaced by subclasses whose constructor records; functions by recording wrappers;
    torch._VF by a proxy recording access to its RNN kernels. A determined student can undo this in
    their own process, so the grading process also scans the source (grader.banned).
    """

    VF_KERNELS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "rnn_tanh_cell", "rnn_relu_cell", "lstm_cell", "gru_cell")

    def __init__(self) -> None:
        self.hits: set[str] = set()
        self.active: set[str] = set()
        self.current: str | None = None

    def reset(self, active: list[str]) -> None:
        self.hits = set()
        self.active = set(active)

    def attributed(self, name: str | None):
        tracer = self

        class _Ctx:
            def __enter__(self_inner):
                tracer.current = name

            def __exit__(self_inner, *exc):
                tracer.current = None
                return False

        return _Ctx()

    def record(self, api: str) -> None:
        if self.current is not None and api in self.active:
            self.hits.add(api)

    def install(self, names: list[str]) -> None:
        import importlib

        for dotted in names:
            if dotted == "torch._VF":
                self._install_vf()
                continue
            mod_path, _, attr = dotted.rpartition(".")
            owner = None
            parts = mod_path.split(".")
            try:
                owner = importlib.import_module(parts[0])
                for p in parts[1:]:
                    owner = getattr(owner, p)
                original = getattr(owner, attr)
            except (ImportError, AttributeError):
                continue
            if isinstance(original, types.ModuleType):
                continue  # a whole module (torch.autograd.functional): the source scan covers it
            try:
                setattr(owner, attr, self._wrap(dotted, original))
            except (AttributeError, TypeError):
                continue

    def _wrap(self, dotted: str, original: Any) -> Any:
        tracer = self
        if isinstance(original, type):
            def __init__(self_inner, *a, **k):  # noqa: N807
                tracer.record(dotted)
                original.__init__(self_inner, *a, **k)

            return type(original.__name__, (original,), {"__init__": __init__, "__module__": original.__module__})

        import functools

        @functools.wraps(original)
        def wrapper(*a, **k):
            tracer.record(dotted)
            return original(*a, **k)

        return wrapper

    def _install_vf(self) -> None:
        import torch

        vf = torch._VF
        tracer = self
        kernels = self.VF_KERNELS

        class _VFProxy:
            def __getattr__(self_inner, item):
                if item in kernels:
                    tracer.record("torch._VF")
                return getattr(vf, item)

        proxy = _VFProxy()
        torch._VF = proxy  # type: ignore[attr-defined]
        sys.modules["torch._VF"] = proxy  # type: ignore[assignment]
