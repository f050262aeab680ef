"""Run one submission's calls in a worker: import, call each function on each case, survive anything.

The runner is trusted. It copies the submission's files into a private directory, asks the zygote for a
worker, and sends it one Call at a time with a deadline. A function that times out loses its remaining
calls (at most one --timeout per function); a worker that crashes or times out is killed and replaced,
and grading goes on with the next function. Output the worker prints is kept up to a cap.
Calls whose function is "file:<name>" are answered here, from the submission's files, without a worker.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import select
import shutil
import signal
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader import sandbox, wire
from grader.cases import CaseSet
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
    cpu_seconds: int = 0  # per worker process; 0: max(60, 10 x timeout)
    fsize_mb: int = 64  # largest file a worker may write
    disk_mb: int = 256  # all files a worker may write (root: its directory is a tmpfs of this size)
    sandbox_off: tuple[str, ...] = ()  # layers to leave out (tests of the degraded path)


class SlotPool:
    """Worker slots of this grading process, each with its own uid when running as root.

    A uid is used by one worker at a time across every seqgrade process on the machine (a lock file in
    /run/seqgrade), owns no passwd/group entry, and is swept (all its processes killed) before and after use.
    """

    LOCK_DIR = Path("/run/seqgrade")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: list[tuple[int, int | None, Any]] = []  # (slot, uid, lock file)
        self.next = 0

    def acquire(self) -> tuple[int, int | None, Any]:
        with self.lock:
            if self.free:
                return self.free.pop()
            if os.geteuid() != 0:
                self.next += 1
                return (self.next, None, None)
            self.LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            while self.next < sandbox.MAX_SLOTS * 4:
                slot = self.next
                self.next += 1
                uid = sandbox.slot_uid(slot)
                if not sandbox.uid_is_free(uid):
                    continue
                f = open(self.LOCK_DIR / f"uid-{uid}.lock", "a+")  # noqa: SIM115 - held while the slot lives
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    f.close()
                    continue
                return (slot, uid, f)
            raise RuntimeError("no free worker uid (see SEQGRADE_UID_BASE)")

    def release(self, slot: tuple[int, int | None, Any]) -> None:
        with self.lock:
            self.free.append(slot)


SLOTS = SlotPool()


@dataclass
class RunResult:
    """What happened to one submission: a reply list per Prepared item, plus the import verdict."""

    replies: dict[int, list[Reply]] = field(default_factory=dict)  # index in CaseSet.items -> replies
    import_error: str = ""
    output: str = ""
    output_truncated: bool = False
    restarts: int = 0
    seconds: float = 0.0
    protections: list[str] = field(default_factory=list)  # confinement layers active in the worker


class StatusReader:
    """The status lines of one worker (see grader.worker): init pid, protections, exit status, done."""

    def __init__(self, fd: int):
        self.fd: int | None = fd
        self.buf = b""
        self.lines: list[str] = []

    def read(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False at end of file (every process of the worker gone)."""
        if self.fd is None:
            return False
        r, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not r:
            return True
        chunk = _read_some(self.fd)
        if not chunk:
            os.close(self.fd)
            self.fd = None
            return False
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        self.lines += [d.decode("utf-8", "replace") for d in done]
        return True

    def get(self, key: str) -> str | None:
        for line in self.lines:
            if line == key or line.startswith(key + " "):
                return line[len(key) + 1 :]
        return None

    def wait_for(self, key: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while self.get(key) is None and time.monotonic() < deadline:
            if not self.read(deadline - time.monotonic()):
                break
        return self.get(key)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class WorkerHandle:
    """The grading process's end of one worker: a socket, an output pipe, a status pipe, the init's pid."""

    def __init__(self, zygote: Zygote, workdir: str, config: dict[str, Any], sink: OutputSink):
        self.monitor, self.sock, self.out, st = zygote.spawn(workdir, config)
        self.status = StatusReader(st)
        self.sink = sink
        self.alive = True
        init = self.status.wait_for("init", 30.0)
        self.pid = int(init) if init and init.isdigit() else None
        if self.pid is None:
            self.kill()
            raise RuntimeError("the worker's monitor did not start")

    def protections(self, timeout: float = 10.0) -> list[str]:
        """What the worker reported before any student code ran; RuntimeError if it could not confine."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fatal = self.status.get("fatal")
            if fatal is not None:
                raise RuntimeError(f"the worker could not confine itself: {fatal}")
            got = self.status.get("protections")
            if got is not None:
                try:
                    names = json.loads(got)
                except ValueError:
                    names = []
                return [str(n) for n in names if isinstance(n, str)]
            if not self.status.read(deadline - time.monotonic()):
                break
        return []

    def exit_reason(self) -> str:
        """How the worker ended, from its init (a few hundred ms at most after its death)."""
        status = self.status.wait_for("exit", 1.0)
        if status is None or not status.lstrip("-").isdigit():
            return ""
        code = int(status)
        if os.WIFSIGNALED(code):
            sig = os.WTERMSIG(code)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            what = {
                "SIGSEGV": "segmentation fault",
                "SIGXCPU": "CPU time limit",
                "SIGXFSZ": "file size limit",
                "SIGABRT": "aborted",
                "SIGBUS": "bus error",
                "SIGILL": "illegal instruction",
                "SIGFPE": "arithmetic fault",
                "SIGKILL": "killed (memory, CPU or process limit)",
            }.get(name)
            return f"killed by {name}" + (f", {what}" if what else "")
        if os.WIFEXITED(code):
            return f"exited with code {os.WEXITSTATUS(code)}"
        return ""

    def request(self, body: dict[str, Any], tree: Any, *, timeout: float, max_bytes: int) -> tuple[dict, Any]:
        deadline = time.monotonic() + timeout
        try:
            wire.send(self.sock, wire.encode(body, tree))
        except OSError:
            raise WorkerCrashed(self._died()) from None
        return self._receive(deadline, max_bytes)

    def _died(self) -> str:
        self.drain()
        reason = self.exit_reason()
        return "the worker process died" + (f" ({reason})" if reason else "")

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
                    raise BadReply(
                        f"the result is {plen / 2**20:.0f} MiB, over the {max_bytes >> 20} MiB limit"
                    )
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
                    raise WorkerCrashed(self._died())
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
        """End the worker and everything it started; returns once its monitor says all are gone."""
        if not self.alive:
            return
        self.alive = False
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)  # the init: with a pid namespace, the whole tree goes
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
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and self.status.read(deadline - time.monotonic()):
            pass
        self.status.close()


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


# ------------------------------------------------------------------------------------------ one submission


def run_submission(
    zygote: Zygote, plan: Plan, cases: CaseSet, sub: Submission, options: RunOptions
) -> RunResult:
    start = time.monotonic()
    result = RunResult()
    if sub.problem:
        result.import_error = sub.problem
        _fail_all(cases, result, "missing", sub.problem)
        return result
    slot = SLOTS.acquire()
    workdir = tempfile.mkdtemp(prefix="seqgrade-w-")
    sink = OutputSink()
    try:
        _write_files(Path(workdir), sub.files)
        config = {
            "memory_mb": options.memory_mb,
            "banned": _all_banned(plan),
            "uid": slot[1],
            "cpu_seconds": options.cpu_seconds or int(max(60, 10 * options.timeout)),
            "fsize_mb": options.fsize_mb,
            "off": sorted(set(options.sandbox_off) | sandbox.disabled()),  # + $SEQGRADE_SANDBOX_OFF
            "hide": _folders_to_hide(sub),
            "disk_mb": options.disk_mb,
        }
        session = _Session(zygote, workdir, config, sink, plan, options)
        try:
            err = session.start()
            if err:
                result.import_error = err
                _fail_all(cases, result, "missing", f"the submission could not be imported: {err}")
            else:
                for fn in plan.functions:
                    items = [(i, p) for i, p in enumerate(cases.items) if p.function == fn.name]
                    session.run_function(fn.name, fn.banned + plan.banned, items, sub, result)
        finally:
            session.close()
        result.restarts = session.restarts
        result.protections = session.protections
    finally:
        _remove_tree(workdir)
        SLOTS.release(slot)
    result.output = sink.text()
    result.output_truncated = sink.total > len(sink.kept)
    result.seconds = time.monotonic() - start
    return result


def _folders_to_hide(sub: Submission) -> list[str]:
    """The folder the submission came from (it holds other students' files)."""
    if not sub.origin:
        return []
    parent = Path(sub.origin).resolve().parent
    return [str(parent)] if parent != Path("/") else []


def _remove_tree(path: str) -> None:
    """rmtree that also removes what a student made unreadable (chmod 000) in its directory."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            try:
                os.chmod(os.path.join(dirpath, d), 0o700, follow_symlinks=False)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


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
        self.protections: list[str] = []
        self.dead = ""  # set when a replacement worker could not import the module: no more workers

    def start(self) -> str:
        """Fork a worker and import the module; '' on success, else the reason."""
        self.handle = WorkerHandle(self.zygote, self.workdir, self.config, self.sink)
        try:
            self.protections = (
                self.handle.protections()
            )  # RuntimeError: the machine's fault, not the student's
        except BaseException:
            self.handle.kill()
            raise
        self.zygote.protections = self.protections
        try:
            body, _ = self.handle.request(
                {"op": "import", "module": self.plan.module},
                None,
                timeout=self.options.timeout,
                max_bytes=1 << 20,
            )
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
        if self.dead:
            return False
        if self.handle is not None:
            self.handle.kill()
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            self.dead = f"the worker was replaced {MAX_RESTARTS} times"
            return False
        err = self.start()
        if err:
            self.dead = f"a replacement worker could not import the module: {err}"
        return not err

    def run_function(self, name, banned, items, sub: Submission, result: RunResult) -> None:
        dead_reason = ""
        if name not in self.functions and not all(
            c.function.startswith("file:") for _, p in items for c in p.calls
        ):
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
                    elif r.failure == "crash" and _hit_a_limit(r.error):  # one strike, like a timeout
                        dead_reason, failure = f"skipped: {name} already {_hit_a_limit(r.error)}", "skipped"
                    elif r.failure in ("crash", "bad-reply") and self.handle is None:
                        dead_reason, failure = (
                            f"skipped: the worker could not be restarted ({self.dead})",
                            "skipped",
                        )
            result.replies[i] = replies

    def call(self, call: Call, banned: tuple[str, ...]) -> Reply:
        if self.handle is None or not self.handle.alive:
            if not self.restart():
                self.handle = None
                return Reply(failure="crash", error=f"the worker could not be restarted ({self.dead})")
        body = {
            "op": "call",
            "function": call.function,
            "grad_wrt": list(call.grad_wrt),
            "banned": list(banned),
        }
        tree = {"args": call.args, "projection": call.projection}
        start = time.monotonic()
        try:
            resp, value = self.handle.request(
                body, tree, timeout=self.options.timeout, max_bytes=self.options.max_reply_bytes
            )
        except TimedOut:
            self.handle.kill()
            return Reply(
                failure="timeout",
                error=f"timed out after {self.options.timeout:g} s",
                seconds=time.monotonic() - start,
            )
        except WorkerCrashed as e:
            self.handle.kill()
            return Reply(failure="crash", error=f"crashed: {e}")
        except BadReply as e:
            self.handle.kill()
            return Reply(failure="bad-reply", error=f"unusable result: {e}")
        mutated = tuple(_arg_name(call, m) for m in resp.get("mutated", []) if isinstance(m, list))
        banned_hits = tuple(str(b) for b in resp.get("banned", []) if isinstance(b, str))
        if not resp.get("ok"):
            return Reply(
                failure="exception",
                error=str(resp.get("error", "raised an exception"))[:500],
                banned=banned_hits,
            )
        value = value if isinstance(value, dict) else {}
        grads = value.get("grads")
        return Reply(
            value=value.get("value"),
            grads=tuple(grads) if isinstance(grads, (list, tuple)) else None,
            mutated=mutated,
            banned=banned_hits,
            seconds=float(resp.get("seconds", 0.0)) if isinstance(resp.get("seconds"), (int, float)) else 0.0,
        )

    def close(self) -> None:
        if self.handle is not None:
            self.handle.kill()


def _hit_a_limit(error: str) -> str:
    """'ran out of CPU time' / 'flooded the output' for a crash that every further call would repeat."""
    if "SIGXCPU" in error:
        return "ran out of CPU time"
    if "printed more than" in error:
        return "flooded the output"
    return ""


def _arg_name(call: Call, m: list) -> str:
    """'2' for the third argument, '0.1' for element 1 of a list argument (named when scored)."""
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
        return Reply(
            failure="bad-reply",
            error=f"{name} is {len(data) >> 20} MiB, over the {MAX_WEIGHTS_BYTES >> 20} MiB limit",
        )
    try:
        if name.endswith(".npz"):
            arrays = _load_npz(data)
        elif name.endswith((".pt", ".pth")):
            arrays = _load_torch(data)
        else:
            return Reply(failure="bad-reply", error=f"{name}: weights must be .npz or .pt")
    except Exception as e:  # a malformed file is the student's failure, described
        return Reply(
            failure="bad-reply",
            error=f"{name} could not be read as weights ({e.__class__.__name__}: {str(e)[:200]})",
        )
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
