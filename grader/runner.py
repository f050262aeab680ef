"""Run one submission's calls in a worker: import, call each function on each case, survive anything.

The runner is trusted. It copies the submission's files into a private directory, asks the zygote for a
worker, and sends it one Call at a time with a deadline. A function that times out loses its remaining
calls (at most one --timeout per function); a worker that crashes or times out is killed and replaced,
and grading goes on with the next function. Output the worker prints is kept up to a cap.
Calls whose function is "file:<name>" are answered here, from the submission's files, without a worker.
"""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader import wire
from grader.cases import CaseSet, Prepared
from grader.errors import BadReply, TimedOut, WorkerCrashed
from grader.loader import Submission
from grader.plan import Call, Plan, Reply
from grader.worker import Zygote

OUTPUT_CAP = 16 << 10  # bytes of worker output kept for the report
OUTPUT_FLOOD = 64 << 20  # bytes after which a worker is stopped for flooding
MAX_REPLY_BYTES = 256 << 20
MAX_RESTARTS = 100


@dataclass
class RunOptions:
    timeout: float = 10.0
    memory_mb: int = 4096
    max_reply_bytes: int = MAX_REPLY_BYTES


@dataclass
class RunResult:
    """What happened to one submission: a reply list per Prepared item, plus the import verdict."""

    replies: dict[int, list[Reply]] = field(default_factory=dict)  # index in CaseSet.items -> replies
    import_error: str = ""
    output: str = ""
    output_truncated: bool = False
    restarts: int = 0
    seconds: float = 0.0


class WorkerHandle:
    """The grading process's end of one worker: a socket, an output pipe, a pid."""

    def __init__(self, zygote: Zygote, workdir: str, config: dict[str, Any], sink: OutputSink):
        self.pid, self.sock, self.out = zygote.spawn(workdir, config)
        self.sink = sink
        self.alive = True

    def request(self, body: dict[str, Any], tree: Any, *, timeout: float, max_bytes: int) -> tuple[dict, Any]:
        deadline = time.monotonic() + timeout
        try:
            wire.send(self.sock, wire.encode(body, tree))
        except OSError:
            raise WorkerCrashed("the worker process died") from None
        return self._receive(deadline, max_bytes)

    def _receive(self, deadline: float, max_bytes: int) -> tuple[dict, Any]:
        buf = bytearray()
        need = wire.HEADER.size
        header: tuple[int, int] | None = None
        while True:
            if header is None and len(buf) >= wire.HEADER.size:
                jlen, plen = wire.HEADER.unpack(bytes(buf[: wire.HEADER.size]))
                if jlen > wire.MAX_JSON:
                    raise BadReply("reply header too large")
                if plen > max_bytes:
                    raise BadReply(f"the result is {plen / 2**20:.0f} MiB, over the {max_bytes >> 20} MiB limit")
                header = (jlen, plen)
                need = wire.HEADER.size + jlen + plen
            if header is not None and len(buf) >= need:
                js = bytes(buf[wire.HEADER.size : wire.HEADER.size + header[0]])
                return wire.decode(js, bytes(buf[wire.HEADER.size + header[0] : need]))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimedOut("timed out")
            fds = [self.sock] + ([self.out] if self.out is not None else [])
            ready, _, _ = select.select(fds, [], [], left)
            if self.out is not None and self.out in ready:
                chunk = _read_some(self.out)
                if not chunk:
                    os.close(self.out)
                    self.out = None
                elif not self.sink.add(chunk):
                    raise WorkerCrashed(f"stopped: printed more than {OUTPUT_FLOOD >> 20} MiB of output")
            if self.sock in ready:
                try:
                    chunk = self.sock.recv(min(max(need - len(buf), 1 << 16), 8 << 20))
                except OSError:
                    chunk = b""
                if not chunk:
                    self.drain()
                    raise WorkerCrashed("the worker process died")
                buf += chunk

    def drain(self) -> None:
        """Collect what the worker printed before it died (bounded)."""
        if self.out is None:
            return
        for _ in range(64):
            r, _, _ = select.select([self.out], [], [], 0.05)
            if not r:
                break
            chunk = _read_some(self.out)
            if not chunk or not self.sink.add(chunk):
                break

    def kill(self) -> None:
        if not self.alive:
            return
        self.alive = False
        for target in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: os.kill(self.pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        self.drain()
        try:
            self.sock.close()
        except OSError:
            pass
        if self.out is not None:
            os.close(self.out)
            self.out = None


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""


class OutputSink:
    """Keeps the first OUTPUT_CAP bytes of a worker's output, counts the rest, flags a flood."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> bool:
        self.total += len(chunk)
        if len(self.kept) < OUTPUT_CAP:
            self.kept += chunk[: OUTPUT_CAP - len(self.kept)]
        return self.total <= OUTPUT_FLOOD

    def text(self) -> str:
        return self.kept.decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------------- one submission


def run_submission(
    zygote: Zygote, plan: Plan, cases: CaseSet, sub: Submission, options: RunOptions
) -> RunResult:
    start = time.monotonic()
    result = RunResult()
    if sub.problem:
        result.import_error = sub.problem
        _fail_all(cases, result, "missing", sub.problem)
        return result
    workdir = tempfile.mkdtemp(prefix="seqgrade-w-")
    sink = OutputSink()
    try:
        _write_files(Path(workdir), sub.files)
        config = {"memory_mb": options.memory_mb, "banned": _all_banned(plan)}
        session = _Session(zygote, workdir, config, sink, plan, options)
        err = session.start()
        if err:
            result.import_error = err
            _fail_all(cases, result, "missing", f"the submission could not be imported: {err}")
        else:
            for fn in plan.functions:
                items = [(i, p) for i, p in enumerate(cases.items) if p.function == fn.name]
                session.run_function(fn.name, fn.banned + plan.banned, items, sub, result)
        session.close()
        result.restarts = session.restarts
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.output = sink.text()
    result.output_truncated = sink.total > len(sink.kept)
    result.seconds = time.monotonic() - start
    return result


def _fail_all(cases: CaseSet, result: RunResult, failure: str, error: str) -> None:
    for i, p in enumerate(cases.items):
        result.replies[i] = [Reply(failure=failure, error=error) for _ in p.calls]


def _all_banned(plan: Plan) -> list[str]:
    names = set(plan.banned)
    for fn in plan.functions:
        names.update(fn.banned)
    return sorted(names)


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = (root / rel).resolve()
        if not target.is_relative_to(root.resolve()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class _Session:
    """A worker with the submission imported, replaced whenever it dies or hangs."""

    def __init__(self, zygote, workdir, config, sink, plan, options):
        self.zygote, self.workdir, self.config, self.sink = zygote, workdir, config, sink
        self.plan, self.options = plan, options
        self.handle: WorkerHandle | None = None
        self.functions: set[str] = set()
        self.restarts = 0

    def start(self) -> str:
        """Fork a worker and import the module; '' on success, else the reason."""
        self.handle = WorkerHandle(self.zygote, self.workdir, self.config, self.sink)
        try:
            body, _ = self.handle.request({"op": "import", "module": self.plan.module}, None,
                                          timeout=self.options.timeout, max_bytes=1 << 20)
        except TimedOut:
            self.handle.kill()
            return f"importing the module took longer than {self.options.timeout:g} s"
        except (WorkerCrashed, BadReply) as e:
            self.handle.kill()
            return f"the worker died while importing the module ({e})"
        if not body.get("ok"):
            self.handle.kill()
            return str(body.get("error", "import failed"))[:500]
        self.functions = {str(f) for f in body.get("functions", [])}
        return ""

    def restart(self) -> bool:
        if self.handle is not None:
            self.handle.kill()
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            return False
        return self.start() == ""

    def run_function(self, name, banned, items, sub: Submission, result: RunResult) -> None:
        dead_reason = ""
        if name not in self.functions and not all(c.function.startswith("file:") for _, p in items for c in p.calls):
            dead_reason = f"{name} is not defined in {self.plan.module}.py"
            failure = "missing"
        for i, p in items:
            replies = []
            for call in p.calls:
                if call.function.startswith("file:"):
                    replies.append(answer_file_call(call, sub))
                elif dead_reason:
                    replies.append(Reply(failure=failure, error=dead_reason))
                else:
                    r = self.call(call, banned)
                    replies.append(r)
                    if r.failure == "timeout":
                        dead_reason = f"skipped: {name} already timed out (limit {self.options.timeout:g} s)"
                        failure = "skipped"
                    elif r.failure in ("crash", "bad-reply") and self.handle is None:
                        dead_reason, failure = "skipped: the worker could not be restarted", "skipped"
            result.replies[i] = replies

    def call(self, call: Call, banned: tuple[str, ...]) -> Reply:
        if self.handle is None or not self.handle.alive:
            if not self.restart():
                self.handle = None
                return Reply(failure="crash", error="the worker could not be restarted")
        body = {"op": "call", "function": call.function, "grad_wrt": list(call.grad_wrt), "banned": list(banned)}
        tree = {"args": call.args, "projection": call.projection}
        start = time.monotonic()
        try:
            resp, value = self.handle.request(body, tree, timeout=self.options.timeout,
                                              max_bytes=self.options.max_reply_bytes)
        except TimedOut:
            self.handle.kill()
            return Reply(failure="timeout", error=f"timed out after {self.options.timeout:g} s",
                         seconds=time.monotonic() - start)
        except WorkerCrashed as e:
            self.handle.kill()
            return Reply(failure="crash", error=f"crashed: {e}")
        except BadReply as e:
            self.handle.kill()
            return Reply(failure="bad-reply", error=f"unusable result: {e}")
        mutated = tuple(_arg_name(call, m) for m in resp.get("mutated", []) if isinstance(m, list))
        banned_hits = tuple(str(b) for b in resp.get("banned", []) if isinstance(b, str))
        if not resp.get("ok"):
            return Reply(failure="exception", error=str(resp.get("error", "raised an exception"))[:500],
                         banned=banned_hits)
        value = value if isinstance(value, dict) else {}
        grads = value.get("grads")
        return Reply(
            value=value.get("value"),
            grads=tuple(grads) if isinstance(grads, (list, tuple)) else None,
            mutated=mutated, banned=banned_hits,
            seconds=float(resp.get("seconds", 0.0)) if isinstance(resp.get("seconds"), (int, float)) else 0.0,
        )

    def close(self) -> None:
        if self.handle is not None:
            self.handle.kill()


def _arg_name(call: Call, m: list) -> str:
    """'2' for the third argument, '0.1' for element 1 of a list argument (translated to names when scored)."""
    return ".".join(str(int(x)) for x in m[:2] if isinstance(x, int))


# ----------------------------------------------------------------------------------------------- weight files

MAX_WEIGHTS_BYTES = 20 << 20


def answer_file_call(call: Call, sub: Submission) -> Reply:
    """Answer Call("file:<name>") from the submission's files, trusted: arrays only, nothing executed."""
    name = call.function.removeprefix("file:")
    data = sub.files.get(name)
    if data is None:
        candidates = [k for k in sub.files if Path(k).name == name]
        data = sub.files.get(candidates[0]) if candidates else None
    if data is None:
        return Reply(failure="missing", error=f"the submission has no file {name}")
    if len(data) > MAX_WEIGHTS_BYTES:
        return Reply(failure="bad-reply", error=f"{name} is {len(data) >> 20} MiB, over the "
                                                f"{MAX_WEIGHTS_BYTES >> 20} MiB limit")
    try:
        if name.endswith(".npz"):
            arrays = _load_npz(data)
        elif name.endswith((".pt", ".pth")):
            arrays = _load_torch(data)
        else:
            return Reply(failure="bad-reply", error=f"{name}: weights must be .npz or .pt")
    except Exception as e:  # a malformed file is the student's failure, described
        return Reply(failure="bad-reply", error=f"{name} could not be read as weights ({e.__class__.__name__}: "
                                                f"{str(e)[:200]})")
    return Reply(value={k: wire.Received(v, "tensor") for k, v in arrays.items()})


def _load_npz(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        if sum(i.file_size for i in zf.infolist()) > 4 * MAX_WEIGHTS_BYTES:
            raise ValueError("unpacks too large")
    out = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for k in npz.files:
            arr = npz[k]
            if str(arr.dtype) not in wire.ALLOWED_DTYPES:
                raise ValueError(f"array {k!r} has dtype {arr.dtype}")
            out[k] = np.ascontiguousarray(arr)
    return out


def _load_torch(data: bytes) -> dict[str, np.ndarray]:
    import torch

    obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(obj, dict):
        raise ValueError("expected a state dict (a dict of tensors)")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ValueError("expected a dict of name -> tensor")
        out[k] = v.detach().to(torch.float64 if v.is_floating_point() else v.dtype).numpy().copy()
    return out
