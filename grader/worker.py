"""The untrusted side: a zygote that forks workers, and the worker loop that runs student code.

    grading process ──exec (clean environment)──> zygote: fresh interpreter, torch imported and warmed,
                                                  1 thread, holds nothing of the grading process
    grading process ──host request + 3 fds──> zygote ──fork──> monitor (root ns: sweeps the slot's uid)
                                                                 └─fork─> init (pid 1 of a new pid ns,
                                                                           new net ns; one per slot, lives
                                                                           as long as the slot)
    grading process ──spawn request + 3 fds──> init ──fork──> worker (confined), one per submission (and
                                                              per crash/timeout); as root the init
                                                              mounts its private dir first
    grading process ──end──> init: kills every process of its namespace but itself, reaps them, says "done"
    grading process <──wire messages (arrays only)──> worker
    grading process <──status lines──────────────── monitor / init / worker (before student code runs)

The zygote is a new interpreter started with exec, not a fork of the grading process: it never held a
reference, the secret, expected outputs or the grading process's environment, whenever it is started.
A worker receives only a submission's files (copied into its private directory) and the inputs of each
call, confines itself (grader.sandbox) before any student code runs, and answers with plain arrays
(grader.wire); everything it says is judged in the grading process.

A slot's monitor and init outlive one submission so that a submission costs one fork, not three: when a
worker is ended, the init (pid 1 of the slot's namespace) kills every other process of the namespace in
one kill(-1) — nothing can fork past it — and reaps until none is left, before it says "done". Where the
machine gives no pid namespace, the init is a child subreaper instead: it kills the worker and every
descendant reparented to it, and sweeps the slot's uid (root), before "done".

Status lines (text, one per line, on pipes the student's code never holds):
    host pipe (monitor):
        init <pid>            the slot's init (killing it ends every worker process of the slot)
        done                  the init is gone, the slot's uid swept
    worker pipe (worker, then init):
        protections <json>    the worker's active protections, written before student code runs
        fatal <text>          the worker could not confine itself (our fault: grading stops)
        exit <status>         the worker's wait status, as the init saw it
        done                  every process of the worker is gone (namespace emptied, uid swept)

Requests to the init (JSON on a SOCK_SEQPACKET socket): {"op": "spawn", "workdir", "config"} + 3 fds (the
worker's socket, its stdout/stderr pipe, its status pipe); {"op": "end"}. Closing the socket ends the slot.

The slot's calls are preloaded: the host request carries a file with the case set's calls (wire messages,
JSON {"calls": [{"function", "grad_wrt", "banned"}, ...]} + tree [{"args", "projection"}, ...]); the init
decodes them once, and makes each call's copies of its tensors (those the student's function gets, and
leaves that require grad where a gradient is checked); every worker it forks inherits both, so a request
names calls by their index, and a worker's in-place check compares the copies with the preloaded tensors.
A worker thus holds the inputs of the case set it is graded on (it is sent them all anyway), never outputs.

Requests to the worker (wire messages, JSON part):
    {"op": "import", "module": "rnn"}             -> {"ok", "functions" | "error"}
    {"op": "calls", "calls": [3, 4, 5, ...]}      -> one reply per call, in order, each as soon as it is
                                                     computed: {"ok", "error", "mutated", "banned", "seconds"}
                                                     + tree {"value", "grads"}; "seconds" is the student's
                                                     computation: the call, and for a gradient check the
                                                     backward pass through the graph it built
    {"op": "calls", "calls": [[4, 1], ...]}       -> a gradient call whose inputs equal the forward call's
                                                     before it (a pair): one call with inputs requiring grad,
                                                     two replies: the forward check's {"value"} first, then
                                                     the gradient check's {"grads"} ("seconds": the backward
                                                     pass only). If that call raises: {"ok": false,
                                                     "retry": true}, the gradient check's failure, then the
                                                     reply of the forward call made on its own (three).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grader import banned, wire

# Modules students legitimately use, imported in the zygote: once a worker has dropped to its own uid it
# may be unable to read the interpreter's files (e.g. a pyenv Python under a 0700 /root). The last line is
# what torch._dynamo needs from the standard library: torch.optim imports it on first use (0.8 s, 70 MB), so
# the zygote imports it only when a worker could not (see _warm).
# fmt: off
PREIMPORT = (
    "abc", "argparse", "array", "base64", "bisect", "cmath", "collections", "collections.abc", "contextlib",
    "copy", "copyreg", "csv", "dataclasses", "datetime", "decimal", "enum", "fractions", "functools", "glob",
    "gzip", "hashlib", "heapq", "inspect", "io", "itertools", "json", "logging", "math", "numbers",
    "operator", "os.path", "pathlib", "pickle", "pprint", "random", "re", "shutil", "socket", "statistics",
    "string", "struct", "subprocess", "tempfile", "textwrap", "threading", "time", "traceback", "types",
    "typing", "typing_extensions", "unittest", "unittest.mock", "uuid", "warnings", "weakref", "zipfile",
    "zlib", "encodings.idna", "encodings.ascii", "encodings.latin_1", "encodings.utf_16", "encodings.utf_32",
    "encodings.unicode_escape", "encodings.raw_unicode_escape", "encodings.cp1252",
    "numpy", "numpy.linalg", "numpy.random", "numpy.fft",
    "torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.utils", "torch.nn.utils.rnn",
    "torch.nn.utils.parametrize", "torch.autograd", "torch.autograd.functional", "torch.linalg", "torch.fft",
    "torch.special", "torch.distributions", "torch.optim", "torch.utils.data", "torch.func",
    "cProfile", "colorsys", "ctypes.util", "ctypes.wintypes", "getpass", "profile", "pstats", "shlex",
    "sysconfig", "termios",
)
# fmt: on


# ----------------------------------------------------------------------------------------------- zygote


class Zygote:
    """A warmed, single-threaded interpreter that forks one slot host (monitor + init) per request.

    `start` returns at once; the zygote imports torch concurrently with the caller's own work and the
    first `host` waits for it to be ready.
    """

    _count = 0

    def __init__(self) -> None:
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()  # one request at a time on the control socket
        self.ready = False
        self.protections: list[str] = []  # of the latest worker (set by grader.runner)
        self.closers: list[Any] = []  # slot hosts started from this zygote (grader.runner), closed by stop()
        Zygote._count += 1
        self.token = f"{os.getpid()}:{Zygote._count}"  # tells one zygote's slot hosts from another's

    def start(self) -> Zygote:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = str(Path(__file__).resolve().parent.parent)
        code = (
            f"import sys; sys.path.insert(0, {root!r}); import grader.worker as w; "
            f"w.zygote_entry({child.fileno()}, {root!r})"
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            # malloc's heap in transparent huge pages (where the kernel allows them): cheaper forks and exits
            "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        }
        sys.stdout.flush()
        sys.stderr.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-c", code],
            pass_fds=[child.fileno()],
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        child.close()
        self.pid, self.sock = self.proc.pid, parent
        return self

    def _wait_ready(self) -> None:
        if self.ready:
            return
        assert self.sock is not None, "zygote not started"
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("the zygote process died while starting (see its output above)")
            buf += chunk
        hello = json.loads(buf.decode())
        if not hello.get("ready"):
            raise RuntimeError(f"the zygote could not start: {hello.get('error')}")
        self.ready = True

    def host(self, config: dict[str, Any], preload_fd: int) -> tuple[int, socket.socket, int]:
        """Fork a slot host (monitor + init in new namespaces) that preloads the calls in `preload_fd`.
        Returns (monitor pid, SOCK_SEQPACKET socket to the init, read end of the monitor's status pipe)."""
        assert self.sock is not None, "zygote not started"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        st_r, st_w = os.pipe()
        request = json.dumps({"config": config}).encode()
        try:
            with self.lock:
                self._wait_ready()
                socket.send_fds(self.sock, [request], [theirs.fileno(), st_w, preload_fd])
                data = self.sock.recv(64)
        except BaseException:
            ours.close()
            os.close(st_r)
            raise
        finally:
            theirs.close()
            os.close(st_w)
        if not data:
            ours.close()
            os.close(st_r)
            raise RuntimeError("the zygote process died")
        return int(data.decode()), ours, st_r

    def stop(self) -> None:
        for close in list(self.closers):  # every slot host ends its workers and sweeps its uid
            try:
                close()
            except Exception:  # noqa: BLE001 - stopping must not fail; the chain of parent-death signals ends them
                pass
        self.closers.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)  # it exits on the control socket's end
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self.pid = None


def zygote_entry(fd: int, root: str) -> None:
    """The zygote's main (a fresh interpreter): warm up, hide the grader's own trees, serve host requests."""
    from grader import sandbox

    control = socket.socket(fileno=fd)
    # No parent-death signal here: it would follow the grading process's *thread* that started us. When the
    # grading process dies its end of `control` closes and the loop below returns; monitors die with us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the grading process's to handle
    try:
        _warm()
        _hide_grader(root)
        sandbox.prepare()  # what every worker's confinement and mount namespace need, computed once
        # Torch's unwind tables stay mapped here, so in the page cache while the zygote lives: a machine that
        # reclaims page-cache pages no process maps (the VM this was measured on pages them out after a
        # minute unused, DAMON) would make a student's first C++ exception read 50 to 75 MB from disk, 0.1
        # to 2 s, which is a timeout under a short --timeout instead of the error message. The read began in
        # _warm.
        _advise_unwind_tables(MADV_POPULATE_READ)
        gc.collect()
        gc.freeze()  # workers never scan (and so never copy) the zygote's objects in their collections
        _huge_pages()
    except BaseException as e:  # noqa: BLE001
        control.sendall(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}).encode() + b"\n")
        os._exit(1)
    try:
        control.sendall(json.dumps({"ready": True}).encode() + b"\n")
    except OSError:  # stopped before it was needed
        os._exit(0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped automatically
    try:
        _zygote_loop(control)
    finally:
        os._exit(0)


def _warm() -> None:
    """Import what students use and run a little of everything once, so lazy imports happen here."""
    import importlib

    import torch

    torch.set_num_threads(1)  # before the first op: a forked multi-threaded torch hangs
    _advise_unwind_tables(MADV_WILLNEED)  # torch's: read ahead now, mapped at the end of the zygote's start
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    for name in PREIMPORT:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import numpy as np
    import torch.nn.functional as F  # noqa: N812

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for cell in (torch.nn.RNN(4, 5), torch.nn.LSTM(4, 5), torch.nn.GRU(4, 5)):
        cell.double()(x)[0].sum().backward()
    mha = torch.nn.MultiheadAttention(4, 2, batch_first=True).double()
    y = mha(x, x, x, need_weights=True)[0]
    y = F.scaled_dot_product_attention(x, x, x, is_causal=True) + y
    y = F.layer_norm(y, (4,)) + torch.einsum("btd,btd->bt", y, y)[..., None]
    loss = F.cross_entropy(y.reshape(-1, 4), torch.zeros(6, dtype=torch.long)) + F.mse_loss(y, y.detach())
    loss = loss + torch.linalg.vector_norm(y) + y.softmax(-1).log_softmax(-1).sum() + torch.tanh(y).sum()
    torch.autograd.grad(loss, x, create_graph=True)
    torch.multinomial(torch.ones(4), 2, generator=g)
    torch.topk(torch.arange(5.0), 2)
    torch.nn.utils.rnn.pack_padded_sequence(x.detach(), torch.tensor([3, 2]), batch_first=True)
    if not _workers_can_import("torch._dynamo", "sympy", "mpmath"):  # else a worker imports them on use
        opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)])
        opt.step()
    import sysconfig

    sysconfig.get_config_vars()  # its platform data module, imported on first use
    list(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 2)), batch_size=2))
    np.linalg.norm(np.ones(3))
    np.random.default_rng(0).normal(size=3)
    try:
        raise ZeroDivisionError
    except ZeroDivisionError as e:  # traceback formatting imports linecache & co.
        traceback.extract_tb(e.__traceback__)
    for fails in (
        lambda: torch.zeros(2, 3) @ torch.zeros(4, 5),
        lambda: torch.empty(1 << 60, dtype=torch.uint8),
    ):
        try:  # torch's C++ exceptions (a shape error, a failed allocation): their code is mapped here
            fails()
        except Exception:  # noqa: BLE001 - RuntimeError here; another torch may raise another kind
            pass


def _huge_pages() -> None:
    """Back the zygote's anonymous memory (Python's object arenas; malloc's heap already asks for it via
    GLIBC_TUNABLES) with transparent huge pages where the kernel allows: a fork then copies one page-table
    entry per 2 MiB instead of 512, and an exit frees as few. A worker's first write to such a page splits
    only its own mapping of it. Nothing changes where THP is off (madvise refuses; ignored)."""
    madvise = _madvise()
    madv_hugepage, madv_collapse, huge = 14, 25, 1 << 21
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    deadline = time.monotonic() + 1.0  # collapsing compacts memory: on a crowded machine it may be slow
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[5] != "[heap]":
            continue  # a file's mapping, the stack, vdso...: only anonymous memory and the heap
        start, end = (int(x, 16) for x in fields[0].split("-"))
        start, end = (start + huge - 1) & ~(huge - 1), end & ~(huge - 1)
        if end - start >= huge and "w" in fields[1]:
            madvise(start, end - start, madv_hugepage)
            if time.monotonic() < deadline:  # now, not whenever khugepaged gets to it (about 165 ms here)
                madvise(start, end - start, madv_collapse)


def _madvise() -> Any:
    """libc's madvise(address, length, advice) -> 0 or -1."""
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


UNWIND_SECTIONS = (b".eh_frame_hdr", b".eh_frame", b".gcc_except_table")
MADV_WILLNEED, MADV_POPULATE_READ = 3, 22
_SECTIONS: dict[bytes, list[tuple[str, int, int, int]]] = {}  # library -> its (section, addr, size, offset)


def _unwind_tables(maps: str = "/proc/self/maps") -> list[tuple[str, str, int, int, int]]:
    """(library, section, address, size, file offset) of the unwind tables of every shared library in
    `maps` (a process's /proc/PID/maps: the addresses are that process's).

    A C++ exception (torch's shape errors, a failed allocation) reads them: the unwinder binary-searches
    .eh_frame_hdr and reads the FDEs and .gcc_except_table entries of every frame, pages all over 26 MB in
    libtorch_cpu. A library whose ELF headers we cannot read (or that lies in them) is left out; nothing
    here raises."""
    try:
        with open(maps, "rb") as f:  # bytes: a library's path need not be UTF-8
            lines = f.read().splitlines()
    except OSError:
        return []
    bases: dict[bytes, int] = {}  # library -> its load address (the mapping of file offset 0)
    for line in lines:
        fields = line.split(maxsplit=5)
        try:
            if len(fields) == 6 and fields[5][:1] == b"/" and b".so" in fields[5] and int(fields[2], 16) == 0:
                bases.setdefault(fields[5], int(fields[0].split(b"-")[0], 16))
        except ValueError:
            continue
    tables = []
    for path, base in bases.items():
        if path not in _SECTIONS:
            _SECTIONS[path] = _elf_sections(path)
        name = os.fsdecode(path)
        tables += [
            (name, section, base + addr, size, offset) for section, addr, size, offset in _SECTIONS[path]
        ]
    return tables


def _elf_sections(path: bytes) -> list[tuple[str, int, int, int]]:
    """(section, address in the library, size, file offset) of its unwind tables; [] if it is not a
    readable little-endian ELF64 file (the loader ignores section headers, so they may be anything)."""
    import struct

    found = []
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return []
            (shoff,) = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
            if shentsize != 64 or not 0 < shnum or shstrndx >= shnum:
                return []
            f.seek(shoff)
            table = f.read(64 * shnum)
            names_off, names_size = struct.unpack_from("<QQ", table, 64 * shstrndx + 0x18)
            f.seek(names_off)
            names = f.read(min(names_size, 1 << 20))
        for i in range(shnum):
            name_at, _, _, addr, offset, size = struct.unpack_from("<IIQQQQ", table, 64 * i)
            name = names[name_at : names.find(b"\0", name_at)]
            if addr and size and name in UNWIND_SECTIONS:
                found.append((name.decode(), addr, size, offset))
    except (OSError, ValueError, OverflowError, struct.error):  # ValueError: an offset past 2**63
        return []
    return found


def _advise(tables: list[tuple[str, str, int, int, int]], advice: int) -> int:
    """madvise the pages of each (library, section, address, size, offset); returns the bytes it was
    accepted for (0 where the kernel lacks the advice)."""
    madvise, page, done = _madvise(), os.sysconf("SC_PAGE_SIZE"), 0
    for _, _, address, size, _ in tables:
        start = address & ~(page - 1)
        if madvise(start, address + size - start, advice) == 0:
            done += size
    return done


def _advise_unwind_tables(advice: int) -> None:
    """_advise every loaded library's unwind tables; an optimisation, so it never stops the zygote."""
    try:
        _advise(_unwind_tables(), advice)
    except Exception:  # noqa: BLE001
        pass


def _workers_can_import(*packages: str) -> bool:
    """Whether a worker can import these installed packages itself: as a normal user it keeps our uid (and
    Landlock lets it read the import path); as root it drops to a uid that reads only what anyone may."""
    import importlib.util
    import stat

    if os.geteuid() != 0:
        return True
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return False
        if spec is None or not spec.origin or not os.path.isfile(spec.origin):
            return False
        path = Path(spec.origin).resolve()
        try:
            if not all(os.stat(d).st_mode & stat.S_IXOTH for d in path.parents):
                return False
            if not os.stat(path.parent).st_mode & stat.S_IROTH or not os.stat(path).st_mode & stat.S_IROTH:
                return False
        except OSError:
            return False
    return True


def _hide_grader(root: str) -> None:
    """Take the grader's checkout off the import machinery (an editable install maps `reference` to it)."""
    for finder in list(sys.meta_path):
        if type(finder).__module__.startswith("__editable__") or getattr(finder, "__module__", "").startswith(
            "__editable__"
        ):
            sys.meta_path.remove(finder)
    sys.path_hooks[:] = [
        h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")
    ]
    sys.path[:] = [p for p in sys.path if p and p != root and not p.startswith("__editable__")]
    sys.path_importer_cache.clear()
    for name in list(sys.modules):
        if name.split(".")[0] in ("reference", "assignments", "student_template"):
            del sys.modules[name]


def _zygote_loop(control: socket.socket) -> None:
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
        except OSError:
            return
        if not msg:
            return
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            control.sendall(b"0")
            continue
        req = json.loads(msg.decode())
        pid = os.fork()
        if pid == 0:  # monitor
            try:
                control.close()
                _monitor(fds[0], fds[1], fds[2], req.get("config", {}))
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        control.sendall(str(pid).encode())


def _status(fd: int, line: str) -> None:
    try:
        os.write(fd, (line.replace("\n", " ")[:3000] + "\n").encode())
    except OSError:
        pass


def _monitor(ctrl_fd: int, st_fd: int, preload_fd: int, config: dict[str, Any]) -> None:
    """Root-namespace side of one slot: new namespaces, the init, then the sweep and the last word."""
    from grader import sandbox

    sandbox.set_pdeathsig()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    uid = config.get("uid")
    if uid is not None and os.geteuid() == 0:
        sandbox.sweep_uid(int(uid))  # leftovers of a grader that was killed
    sandbox.set_child_subreaper()  # without a pid namespace, orphans come back to us
    namespaces = sandbox.enter_namespaces(config)
    init = os.fork()
    if init == 0:
        try:
            os.close(st_fd)
            _init(ctrl_fd, preload_fd, dict(config, namespaces=namespaces))
        finally:
            os._exit(0)
    os.close(ctrl_fd)
    os.close(preload_fd)
    _status(st_fd, f"init {init}")
    os.waitpid(init, 0)
    if uid is not None and os.geteuid() == 0:
        try:
            sandbox.sweep_uid(int(uid))
        except OSError:  # fork refused: nothing is left to sweep in a pid namespace that ended
            pass
    sandbox.kill_children()
    _status(st_fd, "done")
    os.close(st_fd)


class _Current:
    """The init's record of the worker it runs: pid, status pipe, wait status once reaped, its directory."""

    def __init__(self, pid: int, st_fd: int, workdir: str) -> None:
        self.pid, self.st_fd, self.workdir = pid, st_fd, workdir
        self.status: int | None = None


def _init(ctrl_fd: int, preload_fd: int, config: dict[str, Any]) -> None:
    """The slot's init: pid 1 of its namespaces when the machine allows them. Forks one worker per spawn
    request, reaps everything, reports each worker's end; "end" (or the socket's end) empties the slot."""
    from grader import sandbox

    sandbox.set_pdeathsig()
    preloaded = _read_preload(preload_fd)
    for meta, tree in preloaded:  # each call's copies, made once here rather than in every worker: 2.5 ms
        tree["ready"] = _ready(meta, tree)  # of a gated submission's 15 ms of the worker's own work
    tracer = Tracer()  # installed once here, for every worker forked from this init (1.3 ms less each)
    tracer.install(sorted({str(b) for meta, _ in preloaded for b in meta.get("banned", [])}))
    gc.collect()
    gc.freeze()  # like the zygote's: the workers' collections skip (and so do not copy) the calls' objects
    mounts = sandbox.MountNamespace(config)  # root: the slot's own mount namespace
    pid1 = os.getpid() == 1
    if not pid1:
        sandbox.set_child_subreaper()  # the worker's orphans come back here, not to the monitor
    control = socket.socket(fileno=ctrl_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    uid = config.get("uid")
    current: _Current | None = None
    spare: tuple[int, socket.socket] | None = None  # a child forked ahead, waiting for its spawn request
    closing = False

    def fork_spare() -> None:
        """Fork the next worker now, while the grading process is busy elsewhere: it waits (root, not yet
        confined, running nothing of a student) for its request, then confines itself like any worker."""
        nonlocal spare
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                sandbox.set_pdeathsig()  # it dies with the init
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                control.close()
                ours.close()
                msg, fds, _, _ = socket.recv_fds(theirs, 1 << 16, 3)
                if msg and len(fds) == 3:
                    req = json.loads(msg.decode())
                    code = _worker_main(*fds, req["workdir"], req["config"], preloaded, tracer)
            finally:
                os._exit(code)
        theirs.close()
        spare = (pid, ours)

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if current is not None and pid == current.pid and current.status is None:
                current.status = status
                _status(current.st_fd, f"exit {status}")

    def end(cur: _Current) -> None:
        if cur.status is None:
            try:
                os.kill(cur.pid, signal.SIGKILL)
                _, cur.status = os.waitpid(cur.pid, 0)
                _status(cur.st_fd, f"exit {cur.status}")
            except (ProcessLookupError, ChildProcessError):
                pass
        if pid1:  # every other process of the namespace, in one pass that no fork can outrun
            sandbox.kill_namespace()
        else:
            sandbox.kill_children()
            if uid is not None and os.geteuid() == 0 and "uid" not in sandbox.disabled(config):
                sandbox.sweep_uid(int(uid))
        mounts.release(cur.workdir)
        _status(cur.st_fd, "done")
        os.close(cur.st_fd)
        if not closing:
            fork_spare()

    try:
        fork_spare()
        while True:
            ready, _, _ = select.select([control, wake_r], [], [])
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except OSError:
                    pass
                reap()
            if control not in ready:
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
            except OSError:
                msg, fds = b"", []
            if not msg:
                return
            req = json.loads(msg.decode())
            if current is not None:  # a spawn ends the previous worker too
                end(current)
                current = None
            if req.get("op") != "spawn" or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                continue
            sock_fd, out_fd, st_fd = fds
            workdir, wconfig = req["workdir"], dict(config, **req["config"])
            try:
                wconfig["mounts"] = mounts.prepare(workdir, wconfig)
            except OSError as e:  # the worker reports it before any student code runs
                wconfig["mounts_error"] = f"{type(e).__name__}: {e}"
            request = json.dumps({"workdir": workdir, "config": wconfig}).encode()
            for _ in range(2):  # a spare that died meanwhile is replaced once
                if spare is None:
                    fork_spare()
                assert spare is not None
                (pid, handoff), spare = spare, None
                try:
                    socket.send_fds(handoff, [request], fds)
                    handed = True
                except OSError:
                    handed = False
                handoff.close()
                if handed:
                    break
            else:
                _status(st_fd, "fatal could not start a worker process")
            os.close(sock_fd)
            os.close(out_fd)
            current = _Current(pid, st_fd, workdir)
            # the next spare is forked once this worker has ended (the namespace is emptied in between)
    finally:
        closing = True
        if spare is not None:
            spare[1].close()  # it exits on its socket's end
        if current is not None:
            end(current)


# ----------------------------------------------------------------------------------------------- worker


def _read_preload(fd: int) -> list[tuple[dict[str, Any], Any]]:
    """The slot's calls from the grading process: [(meta, {"args", "projection"} as torch tensors)]."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    data = b"".join(chunks)
    calls: list[tuple[dict[str, Any], Any]] = []
    pos = 0
    while pos < len(data):
        jlen, plen = wire.HEADER.unpack_from(data, pos)
        start = pos + wire.HEADER.size
        msg, trees = wire.decode(data[start : start + jlen], data[start + jlen : start + jlen + plen])
        calls += [(meta, _to_torch(tree)) for meta, tree in zip(msg["calls"], trees, strict=True)]
        pos = start + jlen + plen
    return calls


def _to_torch(tree: Any) -> Any:
    """Received arrays -> torch tensors (sharing their memory), structure kept."""
    import torch

    return _map_leaves(tree, lambda x: torch.from_numpy(x.array) if isinstance(x, wire.Received) else x)


def _map_leaves(tree: Any, f: Any) -> Any:
    """`tree` with f applied to each leaf (what is not a tuple, list or dict), structure kept."""
    if isinstance(tree, tuple):
        return tuple(_map_leaves(x, f) for x in tree)
    if isinstance(tree, list):
        return [_map_leaves(x, f) for x in tree]
    if isinstance(tree, dict):
        return {k: _map_leaves(v, f) for k, v in tree.items()}
    return f(tree)


def _worker_main(
    sock_fd: int,
    out_fd: int,
    st_fd: int,
    workdir: str,
    config: dict[str, Any],
    preloaded: list[tuple[dict[str, Any], Any]],
    tracer: Tracer | None = None,
) -> int:
    from grader import sandbox

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setsid()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    keep = sorted({0, 1, 2, sock_fd, st_fd})
    for lo, hi in zip(keep, keep[1:] + [1 << 16], strict=True):
        os.closerange(lo + 1, hi)
    try:
        if config.get("mounts_error"):
            raise RuntimeError(f"could not prepare the worker's directory: {config['mounts_error']}")
        active = config.get("mounts", []) + config.get("namespaces", []) + sandbox.confine(workdir, config)
    except BaseException as e:  # noqa: BLE001 - a half-confined worker must not run student code
        _status(st_fd, f"fatal {type(e).__name__}: {e}")
        return 71
    _status(st_fd, "protections " + json.dumps(active))
    os.close(st_fd)
    sock = socket.socket(fileno=sock_fd)
    os.chdir(workdir)
    sys.path.insert(0, workdir)
    sys.argv = [os.path.join(workdir, "submission")]
    sys.dont_write_bytecode = True
    if tracer is None or tracer.installed != sorted(config.get("banned", [])):
        tracer = Tracer()
        tracer.install(config.get("banned", []))
    worker = Worker(sock, tracer, preloaded)
    worker.loop()
    return 0


class Worker:
    def __init__(self, sock: socket.socket, tracer: Tracer, preloaded: list[tuple[dict[str, Any], Any]]):
        import torch

        self.preloaded = preloaded
        self.sock = sock
        self.tracer = tracer
        self.module: Any = None
        # Keep our own handles: the student's code may monkeypatch the public ones.
        self.torch = torch
        self._grad = torch.autograd.grad
        self._equal = torch.equal

    def loop(self) -> None:
        while True:
            try:
                msg, tree = wire.recv_trusting(self.sock)
            except Exception:
                return
            op = msg.get("op")
            if op == "import":
                self.reply(self.do_import(msg["module"]))
            elif op == "calls":
                for entry in msg["calls"]:
                    paired = isinstance(entry, list) and len(entry) == 2 and entry[1] == 1
                    j = entry[0] if paired else entry
                    if not (isinstance(j, int) and 0 <= j < len(self.preloaded)):
                        return
                    forward = self.preloaded[j - 1] if paired and j >= 1 else None
                    if paired and not (
                        forward is not None
                        and self.preloaded[j][0].get("grad_wrt")
                        and not forward[0].get("grad_wrt")
                        and forward[0].get("function") == self.preloaded[j][0].get("function")
                    ):
                        return  # a pair is a gradient call and the forward call before it
                    for body, out in self.do_call(*self.preloaded[j], forward=forward):
                        self.reply(body, out)  # a pair's forward reply goes before its backward pass runs
            else:
                return

    def reply(self, body: dict[str, Any], tree: Any = None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            data = wire.encode(body, tree)
        except Exception as e:  # a value we cannot encode is the student's problem, reported as such
            data = wire.encode(
                {"ok": False, "error": f"could not send the result back: {e.__class__.__name__}"}
            )
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

    def do_call(
        self, msg: dict[str, Any], tree: Any, *, forward: tuple[dict[str, Any], Any] | None = None
    ) -> Iterator[tuple[dict[str, Any], Any]]:
        """Call the student's function on a preloaded call's inputs: yields its reply. With `forward` (the
        preloaded forward call whose inputs equal this gradient call's: a pair), yields the forward check's
        reply (the value) and then the gradient check's (the gradients); if the call raises: a retry
        marker, the gradient check's failure, then the reply of the forward call made on its own."""
        paired = forward is not None
        torch = self.torch
        name = msg["function"]
        fn = getattr(self.module, name, None)
        if not callable(fn):
            missing = {"ok": False, "error": f"{name} is not defined"}
            yield from [(missing, None)] * (2 if paired else 1)
            return
        grad_wrt = [int(i) for i in msg.get("grad_wrt", [])]
        # copies the init made before it forked this worker (this worker's copy-on-write pages); a call made
        # a second time (or a Worker outside an init) makes its own
        args, snapshot, leaves_in = tree.pop("ready", None) or _ready(msg, tree)
        self.tracer.reset(msg.get("banned", []))
        start = time.perf_counter()
        try:
            with self.tracer.attributed(name):
                value = fn(*args)
        except BaseException as e:  # noqa: BLE001
            body = {"ok": False, "error": _format_exc(e, None), "banned": sorted(self.tracer.hits)}
            if forward is None:
                yield body, None
                return
            # code that fails on inputs requiring grad may still compute the right values: the forward
            # check gets a call of its own, on its own (untouched) preloaded inputs, after the gradient's
            yield {"ok": False, "retry": True}, None
            yield body, None
            yield from self.do_call(*forward)
            return
        seconds = time.perf_counter() - start
        mutated = []
        with torch.no_grad():
            for i, before in snapshot:
                after = self.arg_tensor(args, i)
                if after.shape != before.shape or not self._equal(after, before):
                    mutated.append(i)
        body = {"ok": True, "seconds": seconds, "mutated": mutated, "banned": sorted(self.tracer.hits)}
        if not grad_wrt:
            yield body, {"value": value, "grads": None}
            return
        if paired:
            yield body, {"value": value, "grads": None}
            body, seconds = dict(body), 0.0  # the gradient check's reply counts only the backward pass
        try:
            start = time.perf_counter()
            flat = iter(self.gradients(value, tree["projection"], leaves_in))
            body["seconds"] = seconds + time.perf_counter() - start  # autograd through the student's graph
            grads = [self.regroup(args[i], flat) for i in grad_wrt]
        except BaseException as e:  # noqa: BLE001
            body["ok"] = False
            body["error"] = f"could not differentiate the outputs: {_format_exc(e, None)}"
            yield body, None
            return
        yield body, {"value": None, "grads": grads}  # the forward check compares values; here only gradients

    def is_grad_leaf(self, t: Any) -> bool:
        return isinstance(t, self.torch.Tensor) and t.requires_grad and t.is_leaf

    def regroup(self, tree: Any, grads: Any) -> Any:
        """The gradients in the shape of the argument they belong to (None for non-float leaves)."""
        if isinstance(tree, (tuple, list)):
            return type(tree)(self.regroup(x, grads) for x in tree)
        if isinstance(tree, dict):
            return {k: self.regroup(v, grads) for k, v in tree.items()}
        return next(grads) if self.is_grad_leaf(tree) else None

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

    def arg_tensor(self, args: list[Any], key: tuple[int, int]) -> Any:
        return _flatten(args[key[0]])[key[1]]


def _ready(meta: dict[str, Any], tree: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """A preloaded call's arguments as the student's function gets them: a copy of every tensor in them
    (structure kept; the float tensors of the arguments in grad_wrt become leaves that require grad), the
    preloaded tensors the in-place check compares the copies with afterwards, keyed by [argument, position
    in it], and the leaves the gradients are taken with respect to."""
    import torch

    def copy(t: Any, grad: bool) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        c = t.detach().clone()
        return c.requires_grad_(True) if grad and c.is_floating_point() else c

    grad_wrt = [int(i) for i in meta.get("grad_wrt", [])]
    args = [_map_leaves(a, lambda t, g=i in grad_wrt: copy(t, g)) for i, a in enumerate(tree["args"])]
    before = [
        ([i, j], t)
        for i, a in enumerate(tree["args"])
        for j, t in enumerate(_flatten(a))
        if isinstance(t, torch.Tensor)
    ]
    leaves = [
        t for i in grad_wrt for t in _flatten(args[i]) if isinstance(t, torch.Tensor) and t.requires_grad
    ]
    return args, before, leaves


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
    torch._VF by a proxy recording access to its RNN kernels. The other routes to a banned op, every op of
    the bans' families (grader.banned.family), are wrapped where Python reaches them: torch.<op>,
    torch.nn.functional.<op>, torch._C._nn.<op> (and _linalg, _special, _fft), torch._C._VariableFunctions
    (a proxy: its type is immutable; it holds the real one in a closure) and torch.ops.aten.<op>[.<overload>]
    (their class swapped in place for a recording subclass: torch's tables keyed by these objects still find
    them). Names built at run time reach the same objects. Only calls of these ops pay anything: a
    TorchFunctionMode that saw every torch call cost 1.3 us on each (4 to 8 ms of a gated submission). A
    determined student can undo all this in their own process, so the grading process also scans the source
    (grader.banned), and reports the ways around these wrappers it can see (__wrapped__, ._op, ...).
    """

    VF_KERNELS = banned.KERNELS["_VF"]

    def __init__(self) -> None:
        self.hits: set[str] = set()
        self.active: set[str] = set()
        self.order: tuple[str, ...] = ()  # the active bans in the plan's order
        self.current: str | None = None
        self.ops: frozenset[str] = frozenset()  # op names of the installed bans' families
        self.wrapped: dict[Any, Any] = {}  # our recording wrapper -> the function it wraps
        self.installed: list[str] | None = None  # the bans install() was given, sorted

    def reset(self, active: list[str]) -> None:
        self.hits = set()
        self.active = set(active)
        self.order = tuple(active)

    def attributed(self, name: str | None) -> _Attributed:
        return _Attributed(self, name)

    def record(self, api: str) -> None:
        if self.current is not None and api in self.active:
            self.hits.add(api)

    def record_op(self, op: str) -> None:
        """A torch op was called: record the ban it breaks, unless the banned API that called it is recorded."""
        if self.current is None or any(op in banned.family(h) for h in self.hits):
            return
        ban = banned.ban_of_ops((op,), self.order)
        if ban is not None:
            self.hits.add(ban)

    def install(self, names: list[str]) -> None:
        import importlib

        self.installed = sorted(names)
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
        self._install_ops(names)

    def _wrap(self, dotted: str, original: Any) -> Any:
        tracer = self
        if isinstance(original, type):

            def __init__(self_inner, *a, **k):  # noqa: N807
                tracer.record(dotted)
                original.__init__(self_inner, *a, **k)

            return type(
                original.__name__, (original,), {"__init__": __init__, "__module__": original.__module__}
            )

        return self._recording(original, self.record, dotted)

    def _recording(self, original: Any, record: Any, name: str) -> Any:
        """A wrapper of function `original` that calls record(name) first (kept in self.wrapped)."""
        import functools

        @functools.wraps(original)
        def wrapper(*a, **k):
            record(name)
            return original(*a, **k)

        del wrapper.__wrapped__  # no handle on the original for the student's code
        self.wrapped[wrapper] = original
        return wrapper

    def _install_vf(self) -> None:
        import torch

        _torch_vf_module()  # torch's own, kept before the proxy stands in for it
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

    def _install_ops(self, names: list[str]) -> None:
        """Wrap the routes to the ops of the bans' families (after the named bans: their wrappers stay)."""
        import torch

        self.ops = frozenset().union(*(banned.family(n) for n in names))
        if not self.ops:
            return
        ops = sorted(self.ops)

        def wrap(op: str, original: Any) -> Any:
            return self._recording(original, self.record_op, op)

        spaces = [torch, torch.nn.functional, torch.functional]
        spaces += [
            getattr(torch._C, n) for n in ("_nn", "_linalg", "_special", "_fft") if hasattr(torch._C, n)
        ]
        for space in spaces:
            for op in ops:
                original = getattr(space, op, None)
                if callable(original) and not isinstance(original, type) and original not in self.wrapped:
                    setattr(space, op, wrap(op, original))

        def functions_proxy(real: Any) -> Any:  # the real object only in a closure, not as an attribute
            recording = {op: wrap(op, getattr(real, op)) for op in ops if hasattr(real, op)}

            class _FunctionsProxy:
                def __getattr__(self_inner, item: str) -> Any:
                    hit = recording.get(item)
                    return hit if hit is not None else getattr(real, item)

                def __dir__(self_inner) -> list[str]:
                    return dir(real)

            return _FunctionsProxy()

        for name in ("_VariableFunctions", "_VariableFunctionsClass"):
            if hasattr(torch._C, name):
                setattr(torch._C, name, functions_proxy(getattr(torch._C, name)))
        vf_module = _torch_vf_module()  # torch._VF.<op> reads through its .vf
        if vf_module is not None:
            vf_module.vf = torch._C._VariableFunctions

        aten = torch.ops.aten
        for op in ops:
            try:
                packet = getattr(aten, op)
            except (AttributeError, RuntimeError):
                continue
            self._recording_packet(op, packet)

    def _recording_packet(self, op: str, packet: Any) -> None:
        """Make torch.ops.aten.<op>, and each of its overloads, record the op when called: their class is
        swapped for a recording subclass in place, so torch's own tables (decompositions, vmap's and
        grad's rules), keyed by these very objects, still find them."""
        packet.__class__ = self._recording_class(type(packet), op)
        for name in packet.overloads():
            try:
                overload = getattr(packet, name)
            except AttributeError:
                continue
            overload.__class__ = self._recording_class(type(overload), op)

    def _recording_class(self, base: type, op: str) -> type:
        record = self.record_op

        def __call__(self_inner: Any, /, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
            record(op)
            return base.__call__(self_inner, *args, **kwargs)

        return type(base.__name__, (base,), {"__call__": __call__, "__module__": base.__module__})


_VF_MODULE: list[Any] = []  # torch's own torch._VF module, found before any proxy replaced it


def _torch_vf_module() -> Any:
    if not _VF_MODULE:
        import torch

        vf = sys.modules.get("torch._VF", getattr(torch, "_VF", None))
        if isinstance(vf, types.ModuleType) and hasattr(vf, "vf"):
            _VF_MODULE.append(vf)
    return _VF_MODULE[0] if _VF_MODULE else None


class _Attributed:
    """Banned-API calls made inside this block are attributed to function `name` (None: not recorded)."""

    def __init__(self, tracer: Tracer, name: str | None) -> None:
        self.tracer, self.name = tracer, name

    def __enter__(self) -> None:
        self.tracer.current = self.name

    def __exit__(self, *exc: object) -> bool:
        self.tracer.current = None
        return False
