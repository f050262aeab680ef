"""Run one submission's calls in a worker: import, call each function on each case, survive anything.

The runner is trusted. It copies the submission's files into a private directory and asks its slot's
host (grader.worker: a monitor and an init that live as long as the slot) for a worker. The host was
given the case set's calls when it started (encoded once per case set, decoded once per host, inherited
by each worker), so one small request names every call of the submission; the worker answers each call
as soon as it is done, and each answer has its own deadline (--timeout), counted from the previous
answer, exactly as if the calls were sent one by one. A function that times out loses its remaining
calls (at most one --timeout per function); a worker that crashes or times out is killed and replaced,
and grading goes on with the calls after the failed one. Output the worker prints is kept up to a cap.

Calls whose function is "file:<name>" are answered here, from the submission's files, without a worker,
whether or not the module imports; a plan that asks only for files never starts a worker.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import io
import json
import os
import queue
import select
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
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
MAX_RESTARTS = 100  # a backstop: a function is skipped after CRASHES_PER_FUNCTION crashes or one timeout
CRASHES_PER_FUNCTION = 3
COALESCE = 0.004  # seconds a slot sleeps before waiting for a reply that nobody waits for (receive)
PRELOAD_BYTES = 8 << 20  # array bytes per message of a preload (a case set's calls, for the slot host)
PRELOAD_NODES = 20_000  # tree nodes per message of a preload (wire.MAX_NODES is the hard limit)


@dataclass
class RunOptions:
    timeout: float = 10.0
    memory_mb: int = 4096
    max_reply_bytes: int = MAX_REPLY_BYTES
    cpu_seconds: int = 0  # per worker process; 0: max(60, 10 x timeout)
    fsize_mb: int = 64  # largest file a worker may write
    disk_mb: int = 256  # all files a worker may write (root: its directory is a tmpfs of this size)
    sandbox_off: tuple[str, ...] = ()  # layers to leave out (tests of the degraded path)
    overlap_end: bool = True  # end the worker while the next submission starts (False: before returning)


class HostGone(Exception):
    """A slot host stopped answering (its zygote was stopped, or it was killed): start another."""


class SlotPool:
    """Worker slots of this grading process, each with its own uid when running as root.

    A uid is used by one slot at a time across every seqgrade process on the machine (a lock file in
    /run/seqgrade), owns no passwd/group entry, and is swept (all its processes killed) when its slot host
    starts and ends; between two workers, the host empties the slot's pid namespace (or, without one,
    kills what the worker left and sweeps the uid).
    """

    LOCK_DIR = Path("/run/seqgrade")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: list[tuple[int, int | None, Any]] = []  # (slot, uid, lock file)
        self.hosts: dict[int, SlotHost] = {}  # slot -> its host (touched only by the slot's holder)
        self.next = 0
        self.made = 0  # slots made
        self.held = 0  # slots acquired and not released

    def acquire(self) -> tuple[int, int | None, Any]:
        """A new slot until there are two per slot in use (a slot's worker is ended while the next submission
        starts in another), then the free slot released first: its worker is the likeliest to be gone (its
        host waits for that before it starts the next). Asking the hosts instead took 5.5 ms per submission
        on a busy machine: each look at a status pipe gives up the GIL, and getting it back waits for the
        scorer thread."""
        with self.lock:
            slot = self._free_slot()
            if slot is None:
                try:
                    slot = self._new_slot()
                except RuntimeError:  # no uid for a further slot: a free one will do (its host waits)
                    if not self.free:
                        raise
                    slot = self.free.pop(0)
                else:
                    self.made += 1
            self.held += 1
            return slot

    def _free_slot(self) -> tuple[int, int | None, Any] | None:
        if self.free and self.made >= 2 * (self.held + 1):
            return self.free.pop(0)
        return None

    def _new_slot(self) -> tuple[int, int | None, Any]:
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
            _sweep_workdirs(uid)
            return (slot, uid, f)
        raise RuntimeError("no free worker uid (see SEQGRADE_UID_BASE)")

    def release(self, slot: tuple[int, int | None, Any]) -> None:
        with self.lock:
            self.free.append(slot)
            self.held -= 1

    def settle(self) -> None:
        """Wait until the workers being ended in free slots are gone (the end of a grading run)."""
        with self.lock:
            hosts = [self.hosts[s[0]] for s in self.free if s[0] in self.hosts]
        for host in hosts:
            host.settle()
        CLEANER.wait()

    def host(
        self,
        slot: tuple[int, int | None, Any],
        zygote: Zygote,
        off: list[str],
        preload: Preload,
        *,
        fresh: bool = False,
    ) -> SlotHost:
        """The slot's host for this zygote, these switched-off layers and these calls, started if needed."""
        key = (zygote.token, slot[1], tuple(off), preload.digest)
        host = self.hosts.get(slot[0])
        if host is not None and (fresh or host.closed or host.key != key):
            host.close()
            host = None
        if host is None:
            host = SlotHost(zygote, key, {"uid": slot[1], "off": list(off)}, preload)
            self.hosts[slot[0]] = host
        return host


SLOTS = SlotPool()


def _workers_parent() -> str:
    """The folder that holds workers' directories (as root, one the slots' uids can reach)."""
    return sandbox.workers_parent(os.geteuid() == 0) or tempfile.gettempdir()


def _sweep_workdirs(uid: int) -> None:
    """Remove worker folders that a killed run (SIGKILL) left for `uid` (named after it, or owned by it): ours now
    (we hold its lock), so no live run uses them, and a later worker of that uid must not find an earlier
    student's files."""
    for d in Path(_workers_parent()).glob("seqgrade-w-*"):
        try:
            ours = d.name.startswith(f"seqgrade-w-{uid}-") or d.lstat().st_uid == uid
            if ours and d.is_dir() and not d.is_symlink():
                _remove_tree(str(d))
        except OSError:
            pass


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
    """The status lines of a slot host or a worker (see grader.worker): init pid, protections, exit, done."""

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

    def wait_eof(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.read(deadline - time.monotonic()):
            pass
        return self.fd is None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SlotHost:
    """The grading process's end of one slot's monitor + init (grader.worker), which outlive a submission:
    each worker is then one fork of the init, and ending it one message."""

    def __init__(self, zygote: Zygote, key: tuple, config: dict[str, Any], preload: Preload):
        self.key = key
        self.zygote = zygote
        self.closed = False
        fd = _memfile(preload.data)
        try:
            self.monitor, self.ctrl, st = zygote.host(config, fd)
        finally:
            os.close(fd)
        self.status = StatusReader(st)
        self.ending: tuple[StatusReader, str] | None = None  # a worker being ended: its status, its folder
        init = self.status.wait_for("init", 30.0)
        self.init = int(init) if init and init.isdigit() else None
        if self.init is None:
            self.close()
            raise RuntimeError("the worker's monitor did not start")
        zygote.closers.append(self.close)

    def settle(self) -> None:
        """Wait until the worker being ended is gone (its init says "done"), then remove its folder. An init
        that does not say it within 10 s is killed, which ends the slot's namespace and all in it."""
        if self.ending is None:
            return
        status, workdir = self.ending
        gone = status.wait_eof(10.0)  # interrupted here (Ctrl-C, SIGTERM): `ending` stays, for close()
        self.ending = None
        try:
            if not gone:
                self.kill()
                self.close()
                status.wait_eof(10.0)
        finally:
            status.close()
            CLEANER.remove(workdir)

    def spawn(self, workdir: str, config: dict[str, Any]) -> tuple[socket.socket, int, int]:
        """Ask the init for a worker. Returns (socket to it, read end of its output, of its status)."""
        self.settle()
        if self.closed:
            raise HostGone
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        st_r, st_w = os.pipe()
        request = json.dumps({"op": "spawn", "workdir": workdir, "config": config}).encode()
        try:
            socket.send_fds(self.ctrl, [request], [theirs.fileno(), out_w, st_w])
        except OSError:
            ours.close()
            os.close(out_r)
            os.close(st_r)
            self.close()
            raise HostGone from None
        finally:
            theirs.close()
            os.close(out_w)
            os.close(st_w)
        return ours, out_r, st_r

    def end(self) -> bool:
        """Ask the init to end the worker (and everything it started); False if the host is gone."""
        try:
            self.ctrl.send(b'{"op": "end"}')
            return True
        except OSError:
            return False

    def kill(self) -> None:
        """The last resort: kill the init, which ends the slot's namespace and all in it."""
        if self.init is not None:
            try:
                os.kill(self.init, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        """End the slot: the init ends its worker and exits, the monitor sweeps the uid and says done."""
        if self.closed:
            return
        self.closed = True
        self.ctrl.close()  # the init ends its worker (if any) and exits
        if self.ending is not None:
            self.settle()
            CLEANER.wait()
        if not self.status.wait_eof(10.0):
            self.kill()
            self.status.wait_eof(10.0)
        self.status.close()
        try:
            self.zygote.closers.remove(self.close)
        except ValueError:
            pass


class WorkerHandle:
    """The grading process's end of one worker: a socket, an output pipe, a status pipe."""

    def __init__(self, host: SlotHost, workdir: str, config: dict[str, Any], sink: OutputSink):
        self.host = host
        self.sock, self.out, st = host.spawn(workdir, config)
        self.status = StatusReader(st)
        self.sink = sink
        self.alive = True
        self.buf = bytearray()  # bytes received from the worker and not yet decoded (the next replies)

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

    def send(self, data: bytes, timeout: float) -> None:
        """Send a request; TimedOut if the worker does not take it within `timeout` (it always reads a
        whole request before it answers, unless its own code broke it)."""
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
        except TimeoutError:
            raise TimedOut("timed out") from None
        except OSError:
            raise WorkerCrashed(self._died()) from None
        finally:
            try:
                self.sock.settimeout(None)
            except OSError:
                pass

    def request(self, body: dict[str, Any], tree: Any, *, timeout: float, max_bytes: int) -> tuple[dict, Any]:
        deadline = time.monotonic() + timeout
        self.send(wire.encode(body, tree), timeout)
        return self.receive(deadline, max_bytes)

    def _died(self) -> str:
        self.drain()
        reason = self.exit_reason()
        return "the worker process died" + (f" ({reason})" if reason else "")

    def receive(self, deadline: float, max_bytes: int, *, more: bool = False) -> tuple[dict, Any]:
        """One reply before `deadline` (time.monotonic()), its size checked from its header.

        `more`: further replies are expected after this one, so nobody waits for it. Then, when no whole
        reply is here yet, the thread first sleeps COALESCE seconds, letting the worker's next replies
        gather in the socket: one wake-up and one read take several (a wake-up per reply cost the grading
        process about a tenth of its time). Bytes that are here when the deadline has passed are still read,
        for at most COALESCE seconds more: a reply that arrived in time is not timed out for the nap, and a
        worker that keeps sending cannot hold a call open past that."""
        buf = self.buf
        need = wire.HEADER.size
        header: tuple[int, int] | None = None
        nap = more
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
                payload = bytes(buf[wire.HEADER.size + header[0] : need])
                del buf[:need]
                return wire.decode(js, payload)
            if nap and header is None:  # not even a whole header here yet
                nap = False
                time.sleep(min(COALESCE, max(0.0, deadline - time.monotonic())))
            left = deadline - time.monotonic()
            fds = [self.sock] + ([self.out] if self.out is not None else [])
            ready, _, _ = select.select(fds, [], [], max(left, 0.0))
            if left <= 0 and (self.sock not in ready or -left > COALESCE):  # what is here, not a trickle
                raise TimedOut("timed out")
            if self.out is not None and self.out in ready:
                chunk = _read_some(self.out)
                if not chunk:
                    os.close(self.out)
                    self.out = None
                elif not self.sink.add(chunk):
                    raise WorkerCrashed(f"stopped: printed more than {OUTPUT_FLOOD >> 20} MiB of output")
            if self.sock in ready:
                try:  # what is there (the next replies too, kept in self.buf), at most what a reply may hold
                    chunk = self.sock.recv(min(max(need - len(buf), 1 << 16), 8 << 20))
                except OSError:
                    chunk = b""
                if not chunk:
                    raise WorkerCrashed(self._died())
                buf += chunk

    def drain(self, wait: float = 0.05) -> None:
        """Collect what the worker printed before it died (bounded), waiting up to `wait` for each chunk."""
        if self.out is None:
            return
        for _ in range(64):
            r, _, _ = select.select([self.out], [], [], wait)
            if not r:
                break
            chunk = _read_some(self.out)
            if not chunk or not self.sink.add(chunk):
                break

    def end_later(self, workdir: str) -> bool:
        """End the worker without waiting: what it printed so far is kept, and the host waits for its end
        (then removes `workdir`) before it starts another worker, or when it closes. False if the init
        could not be asked (the worker is then ended, and the slot with it)."""
        if not self.alive:
            return False
        if not self.host.end():
            self.kill()
            return False
        self.alive = False
        self.drain(0)  # what it printed before its last reply is there already
        self._close_ends()
        self.host.ending = (self.status, workdir)
        return True

    def _close_ends(self) -> None:
        """Close our ends of the worker's socket and output pipe."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.out is not None:
            os.close(self.out)
            self.out = None

    def kill(self) -> None:
        """End the worker and everything it started; returns once its init says all are gone."""
        if not self.alive:
            return
        self.alive = False
        ended = self.host.end()
        self.drain()
        self._close_ends()
        if not (ended and self.status.wait_eof(10.0)):
            self.host.kill()  # the init did not answer: end the whole slot (its namespace) instead
            self.host.close()
            self.status.wait_eof(10.0)
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
    needs_module = any(not c.function.startswith("file:") for p in cases.items for c in p.calls)
    if sub.problem or not needs_module:
        # a files-only plan grades the files even without the module (the problem becomes a note)
        result.import_error = sub.problem if needs_module else ""
        _answer_without_worker(cases, sub, result, sub.problem)
        result.seconds = time.monotonic() - start
        return result
    parent = _workers_parent()
    slot = SLOTS.acquire()
    tag = f"{slot[1]}-" if slot[1] is not None else ""  # the uid whose lock guards it (see _sweep_workdirs)
    workdir = tempfile.mkdtemp(prefix=f"seqgrade-w-{tag}", dir=parent)
    sink = OutputSink()
    handed = False  # the workdir, to the slot's host: removed once the worker is gone
    try:
        _write_files(Path(workdir), sub.files)
        off = sorted(set(options.sandbox_off) | sandbox.disabled())  # + $SEQGRADE_SANDBOX_OFF
        config = {
            "memory_mb": options.memory_mb,
            "banned": _all_banned(plan),
            "uid": slot[1],
            "cpu_seconds": options.cpu_seconds or int(max(60, 10 * options.timeout)),
            "fsize_mb": options.fsize_mb,
            "off": off,
            "hide": _folders_to_hide(sub),
            "disk_mb": options.disk_mb,
        }
        preload = _preload(cases, plan)
        session = _Session(
            lambda fresh: SLOTS.host(slot, zygote, off, preload, fresh=fresh),
            workdir,
            config,
            sink,
            options,
            preload,
        )
        try:
            result.import_error = session.run(plan, cases, sub, result)
        finally:
            # the worker's end (3 to 5 ms: its exit, the init's reaping) overlaps the next submission's start
            overlap = options.overlap_end and _contained(session.protections)
            handed = session.close(workdir if overlap else None)
        result.restarts = session.restarts
        result.protections = session.protections
        zygote.protections = session.protections
    finally:
        if not handed:
            _remove_tree(workdir)
        SLOTS.release(slot)
    result.output = sink.text()
    result.output_truncated = sink.total > len(sink.kept)
    result.seconds = time.monotonic() - start
    return result


def _contained(protections: list[str]) -> bool:
    """Whether a worker's processes cannot write outside their folder (its own uid, or Landlock): only then
    is a worker ended without waiting, since its report may be written before the end is done."""
    return any(p == "uid" or p.startswith("landlock") for p in protections)


def _folders_to_hide(sub: Submission) -> list[str]:
    """The folder the submission came from (it holds other students' files)."""
    if not sub.origin:
        return []
    parent = Path(sub.origin).resolve().parent
    return [str(parent)] if parent != Path("/") else []


class _Cleaner:
    """Removes ended workers' folders on a thread of its own. As root a folder was a mount point in its slot's
    namespace, and removing it waits for the kernel to detach that mount: 0.3 ms of CPU but 5 to 7 ms of wall
    on a busy machine (0.4 ms on an idle one), which on the slot's thread held its next submission up."""

    def __init__(self) -> None:
        self.todo: queue.Queue[str] = queue.Queue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def remove(self, path: str) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="seqgrade-clean", daemon=True)
                self.thread.start()
        self.todo.put(path)

    def wait(self) -> None:
        """Return once every folder handed over so far is removed."""
        self.todo.join()

    def _run(self) -> None:
        while True:
            path = self.todo.get()
            try:
                _remove_tree(path)
            finally:
                self.todo.task_done()


CLEANER = _Cleaner()
atexit.register(CLEANER.wait)  # before the interpreter stops its daemon threads: no folder is left behind


def _remove_tree(path: str) -> None:
    """rmtree that also removes what a student made unreadable (chmod 000) in its directory."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            try:
                os.chmod(os.path.join(dirpath, d), 0o700, follow_symlinks=False)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _answer_without_worker(cases: CaseSet, sub: Submission, result: RunResult, error: str) -> None:
    """File calls answered from the submission's files; every other call fails with `error`."""
    for i, p in enumerate(cases.items):
        result.replies[i] = [
            answer_file_call(c, sub)
            if c.function.startswith("file:")
            else Reply(failure="missing", error=error)
            for c in p.calls
        ]


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


@dataclass
class _Pending:
    """One call for the worker: where its reply goes (item i, call k), the function it grades, and its
    index in the slot's preload."""

    fn: str
    i: int
    k: int
    call: Call
    j: int


class _Session:
    """A worker with the submission imported, replaced whenever it dies or hangs."""

    def __init__(self, get_host, workdir, config, sink, options, preload):
        self.get_host, self.workdir, self.config, self.sink = get_host, workdir, config, sink
        self.options, self.preload = options, preload
        self.module = ""
        self.handle: WorkerHandle | None = None
        self.functions: set[str] = set()
        self.restarts = 0
        self.crashes: dict[str, int] = {}  # function -> workers it crashed
        self.protections: list[str] = []
        self.dead = ""  # set when a replacement worker could not import the module: no more workers
        self.ready_at = 0.0  # when the worker said the module was imported (its queued calls then start)

    def _spawn(self) -> WorkerHandle:
        try:
            return WorkerHandle(self.get_host(False), self.workdir, self.config, self.sink)
        except HostGone:  # the slot's host went away (its zygote was stopped): a fresh one
            return WorkerHandle(self.get_host(True), self.workdir, self.config, self.sink)

    def start(self, module: str, queue: list[_Pending]) -> str:
        """Fork a worker, import the module and queue `queue`'s calls behind the import (one request, no
        round trip in between); '' on success, else the reason (the worker is then gone)."""
        self.module = module
        self.handle = self._spawn()
        try:
            self.protections = (
                self.handle.protections()
            )  # RuntimeError: the machine's fault, not the student's
        except BaseException:
            self.handle.kill()
            raise
        request = wire.encode({"op": "import", "module": module})
        if queue:
            request += wire.encode({"op": "calls", "calls": self.preload.request(queue)})
        timeout = self.options.timeout
        try:
            start = time.monotonic()
            self.handle.send(request, timeout)
            body, _ = self.handle.receive(start + timeout, 1 << 20)
        except TimedOut:
            self.handle.kill()
            return f"importing the module took longer than {timeout:g} s"
        except (WorkerCrashed, BadReply) as e:
            self.handle.kill()
            return f"the worker died while importing the module ({e})"
        self.ready_at = time.monotonic()
        if not body.get("ok"):
            self.handle.kill()
            return str(body.get("error", "import failed"))[:500]
        self.functions = {str(f) for f in body.get("functions", [])}
        return ""

    def restart(self, queue: list[_Pending]) -> bool:
        if self.dead:
            return False
        if self.handle is not None:
            self.handle.kill()
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            self.dead = f"the worker was replaced {MAX_RESTARTS} times"
            return False
        err = self.start(self.module, queue)
        if err:
            self.dead = f"a replacement worker could not import the module: {err}"
        return not err

    def run(self, plan: Plan, cases: CaseSet, sub: Submission, result: RunResult) -> str:
        """Every call of the submission, function by function in the plan's order; returns why the module
        could not be imported ('' if it was)."""
        replies: dict[int, list[Reply | None]] = {}
        todo: list[_Pending] = []  # functions the module lacks too: the worker answers those at once
        for fn in plan.functions:
            for i, p in enumerate(cases.items):
                if p.function != fn.name:
                    continue
                replies[i] = [None] * len(p.calls)
                for k, call in enumerate(p.calls):
                    if call.function.startswith("file:"):
                        replies[i][k] = answer_file_call(call, sub)
                    else:
                        todo.append(_Pending(fn.name, i, k, call, self.preload.index[i, k]))
        err = self.start(plan.module, todo)
        if err:
            failed = Reply(failure="missing", error=f"the submission could not be imported: {err}")
            for e in todo:
                replies[e.i][e.k] = failed
        else:
            lacking = {e.fn for e in todo if e.fn not in self.functions}
            missing = {
                fn: Reply(failure="missing", error=f"{fn} is not defined in {plan.module}.py")
                for fn in lacking
            }
            self._run_calls(todo, replies, missing)
        for i, rs in replies.items():
            result.replies[i] = [
                r if r is not None else Reply(failure="skipped", error="not run") for r in rs
            ]
        return err

    def _run_calls(self, todo: list[_Pending], replies, missing: dict[str, Reply]) -> None:
        """todo's calls are queued in the current worker; a worker that dies or hangs is replaced and given
        the calls after the failed one."""
        skip: dict[str, Reply] = dict(missing)  # function -> the reply its remaining calls get
        pos, queued = 0, True
        while pos < len(todo):
            e = todo[pos]
            if not queued:  # the worker that had them queued was killed: a new one gets the rest
                if e.fn in skip:
                    replies[e.i][e.k] = skip[e.fn]
                    pos += 1
                    continue
                if not self.restart(todo[pos:]):
                    self.handle = None
                    r = Reply(failure="crash", error=f"the worker could not be restarted ({self.dead})")
                    replies[e.i][e.k] = r
                    self._after_failure(e.fn, r, skip)
                    pos += 1
                    continue
            pos += self._collect(todo[pos:], replies, skip, missing)
            queued = False

    def _collect(self, batch: list[_Pending], replies, skip, missing) -> int:
        """The replies to `batch`, queued in the worker; returns how many calls were settled (all of them,
        or up to the one that timed out / crashed the worker). Each call has its own deadline, from the
        previous reply (the worker starts a call as it sends the previous reply)."""
        handle = self.handle
        assert handle is not None
        start = self.ready_at
        deferred: _Pending | None = None  # a forward call whose pair raised: its own call's reply comes next
        for n, e in enumerate(batch):
            try:
                resp, value = handle.receive(
                    start + self.options.timeout, self.options.max_reply_bytes, more=n + 2 < len(batch)
                )
            except (TimedOut, WorkerCrashed, BadReply) as exc:
                failed = self._failed(exc, start)
                self._settle(e, failed, replies, skip, missing)
                if deferred is not None:  # the worker died between the pair's replies (its own doing)
                    replies[deferred.i][deferred.k] = missing.get(deferred.fn) or failed
                return n + 1
            first_half = self.preload.opens_pair(batch, n)
            if first_half and resp.get("retry") is True:
                deferred = e  # the gradient reply comes first, its deadline from the pair's start
                continue
            replies[e.i][e.k] = missing.get(e.fn) or _reply(e.call, resp, value)
            if first_half:
                continue  # a gradient call's deadline counts its forward pass too, as unpaired
            start = time.monotonic()
            if deferred is not None:  # the forward call on its own, with its own deadline
                f, deferred = deferred, None
                try:
                    resp, value = handle.receive(start + self.options.timeout, self.options.max_reply_bytes)
                except (TimedOut, WorkerCrashed, BadReply) as exc:
                    self._settle(f, self._failed(exc, start), replies, skip, missing)
                    return n + 1
                replies[f.i][f.k] = missing.get(f.fn) or _reply(f.call, resp, value)
                start = time.monotonic()
        return len(batch)

    def _settle(self, e: _Pending, r: Reply, replies, skip, missing) -> None:
        if e.fn in missing:  # a function the module lacks stays missing, whatever the worker did
            replies[e.i][e.k] = missing[e.fn]
        else:
            replies[e.i][e.k] = r
            self._after_failure(e.fn, r, skip)

    def _failed(self, exc: Exception, start: float) -> Reply:
        assert self.handle is not None
        self.handle.kill()
        if isinstance(exc, TimedOut):
            return Reply(
                failure="timeout",
                error=f"timed out after {self.options.timeout:g} s",
                seconds=time.monotonic() - start,
            )
        if isinstance(exc, WorkerCrashed):
            return Reply(failure="crash", error=f"crashed: {exc}")
        return Reply(failure="bad-reply", error=f"unusable result: {exc}")

    def _after_failure(self, name: str, r: Reply, skip: dict[str, Reply]) -> None:
        """A timeout, a limit hit or a worker that cannot be replaced costs the function its other calls."""
        if r.failure == "timeout":
            why = f"skipped: {name} already timed out (limit {self.options.timeout:g} s)"
        elif r.failure == "crash" and _hit_a_limit(r.error):  # one strike, like a timeout
            why = f"skipped: {name} already {_hit_a_limit(r.error)}"
        elif r.failure in ("crash", "bad-reply") and self.handle is None:
            why = f"skipped: the worker could not be restarted ({self.dead})"
        elif r.failure in ("crash", "bad-reply"):
            # a function that kills its worker on every call must not spend the restarts of the functions
            # after it: after a few crashes its remaining calls are skipped
            self.crashes[name] = self.crashes.get(name, 0) + 1
            if self.crashes[name] < CRASHES_PER_FUNCTION:
                return
            why = f"skipped: {name} already crashed the worker {CRASHES_PER_FUNCTION} times"
        else:
            return
        skip[name] = Reply(failure="skipped", error=why)

    def close(self, workdir: str | None = None) -> bool:
        """End the worker; with `workdir`, without waiting: its host removes the folder once the worker is
        gone. Returns whether the host took the folder."""
        handle, self.handle = self.handle, None
        if handle is None:
            return False
        if workdir is not None:
            return handle.end_later(workdir)
        handle.kill()
        return False


def _reply(call: Call, resp: dict[str, Any], value: Any) -> Reply:
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
    seconds = resp.get("seconds")
    return Reply(
        value=value.get("value"),
        grads=tuple(grads) if isinstance(grads, (list, tuple)) else None,
        mutated=mutated,
        banned=banned_hits,
        seconds=float(seconds) if isinstance(seconds, (int, float)) else 0.0,
    )


@dataclass(frozen=True)
class Preload:
    """A case set's calls as the slot host preloads them: wire messages, and (item, call) -> index.

    `pairs` holds the index of every forward call followed by a gradient call of the same function on
    equal inputs: the worker makes them one call (the forward pass with inputs requiring grad, then the
    backward pass), answered by two replies, so the student's forward pass runs once for both checks. If
    that call raises, the forward call is made on its own right after, and answered by a third reply.
    """

    data: bytes
    index: dict[tuple[int, int], int]
    digest: str  # hosts preloaded with equal calls serve each other's case sets
    pairs: frozenset[int] = frozenset()

    def opens_pair(self, queue: list[_Pending], n: int) -> bool:
        """Whether queue[n] is the forward half of a pair whose gradient half follows it in `queue`."""
        j = queue[n].j
        return j in self.pairs and n + 1 < len(queue) and queue[n + 1].j == j + 1

    def request(self, queue: list[_Pending]) -> list[Any]:
        """The worker's list of calls for `queue` (one reply per entry of `queue`, in its order)."""
        calls: list[Any] = []
        n = 0
        while n < len(queue):
            j = queue[n].j
            if self.opens_pair(queue, n):
                calls.append([j + 1, 1])
                n += 2
            else:
                calls.append(j)
                n += 1
        return calls


_PRELOADS: OrderedDict[tuple[int, int], tuple[Any, Any, Preload]] = OrderedDict()
_PRELOADS_LOCK = threading.Lock()


def _preload(cases: CaseSet, plan: Plan) -> Preload:
    """Every worker call of `cases` in the plan's order, encoded once per case set (the cache holds the
    case set and plan, so their ids are not reused while cached)."""
    key = (id(cases), id(plan))
    with _PRELOADS_LOCK:
        hit = _PRELOADS.get(key)
        if hit is not None and hit[0] is cases and hit[1] is plan:
            _PRELOADS.move_to_end(key)
            return hit[2]
    metas: list[dict[str, Any]] = []
    trees: list[Any] = []
    index: dict[tuple[int, int], int] = {}
    for fn in plan.functions:
        banned = list(fn.banned) + list(plan.banned)
        for i, p in enumerate(cases.items):
            if p.function != fn.name:
                continue
            for k, call in enumerate(p.calls):
                if call.function.startswith("file:"):
                    continue
                index[i, k] = len(metas)
                metas.append({"function": call.function, "grad_wrt": list(call.grad_wrt), "banned": banned})
                trees.append({"args": call.args, "projection": call.projection})
    messages, start, nbytes, nodes = [], 0, 0, 0
    for n, tree in enumerate(trees):  # messages within wire's limits on nodes
        b, c = _size(tree)
        if n > start and (nbytes + b > PRELOAD_BYTES or nodes + c > PRELOAD_NODES):
            messages.append(wire.encode({"calls": metas[start:n]}, trees[start:n]))
            start, nbytes, nodes = n, 0, 0
        nbytes, nodes = nbytes + b, nodes + c + 8
    if start < len(trees):
        messages.append(wire.encode({"calls": metas[start:]}, trees[start:]))
    data = b"".join(messages)
    pairs = frozenset(
        j
        for j in range(len(metas) - 1)
        if not metas[j]["grad_wrt"]
        and metas[j + 1]["grad_wrt"]
        and metas[j]["function"] == metas[j + 1]["function"]
        and metas[j]["banned"] == metas[j + 1]["banned"]
        and _same_tree(trees[j]["args"], trees[j + 1]["args"])
    )
    preload = Preload(data, index, hashlib.sha256(data).hexdigest(), pairs)
    with _PRELOADS_LOCK:
        _PRELOADS[key] = (cases, plan, preload)
        while len(_PRELOADS) > 8:
            _PRELOADS.popitem(last=False)
    return preload


def _same_tree(a: Any, b: Any) -> bool:
    """Whether two calls' arguments are equal: structure, types, dtypes, shapes and values."""
    import torch

    if isinstance(a, (tuple, list, dict)):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        if isinstance(a, dict):
            return list(a) == list(b) and all(_same_tree(a[k], b[k]) for k in a)
        return all(_same_tree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (  # the same bytes: -0.0 is not 0.0 (1 / x tells them apart)
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(_bytes_of(a), _bytes_of(b)))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("d", a) == struct.pack("d", b)
    return type(a) is type(b) and bool(a == b)


def _bytes_of(t: Any) -> Any:
    """A tensor's values as bytes (a flat uint8 tensor), whatever its strides, conjugation or shape."""
    import torch

    return t.detach().resolve_conj().resolve_neg().reshape(-1).contiguous().view(torch.uint8)


def _size(tree: Any) -> tuple[int, int]:
    """(array bytes, tree nodes) of a call's arguments, as wire.encode will write them."""
    if isinstance(tree, (tuple, list)):
        sizes = [_size(x) for x in tree]
        return sum(s[0] for s in sizes), 1 + sum(s[1] for s in sizes)
    if isinstance(tree, dict):
        sizes = [_size(x) for x in tree.values()]
        return sum(s[0] for s in sizes), 1 + sum(s[1] for s in sizes)
    return int(getattr(tree, "nbytes", 0) or 0), 1


def _memfile(data: bytes) -> int:
    """A file descriptor reading `data` from its start (an anonymous memory file)."""
    try:
        fd = os.memfd_create("seqgrade-preload", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        f = tempfile.TemporaryFile()  # noqa: SIM115 - its descriptor is what we keep
        fd = os.dup(f.fileno())
        f.close()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


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
