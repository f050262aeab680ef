"""Confinement of a worker: what the machine offers, detected at run time, applied in layers.

Applied in the worker's process tree (grader.worker), never in the grading process, which uses only the
helpers that pick a slot's uid, the switched-off layers and the folder for workers' directories. Every layer
is tried, checked, and named in the list `confine` returns; a layer the machine refuses is left out and the
report says so (see docs/SECURITY.md for the guarantees as root, as a normal user, in a container).

    layer        what it stops                                     needs
    rlimits      memory (AS), file size, open files, CPU, cores,   always
                 processes (NPROC, per uid: only without root)
    namespaces   network (netns), stray processes (pidns: the      root, or unprivileged user namespaces
                 slot's init empties it with kill(-1) after each
                 worker)
    mount ns     disk floods (the worker's directory is a tmpfs,   root
                 --disk-mb), the grader's trees and other
                 students' folders (covered); one per slot
    uid drop     reading root's/the grader's files, signalling or   root (a free uid per worker slot)
                 tracing the grader, writing the report directory
    no_new_privs setuid binaries regaining privileges               always
    landlock     reading/writing outside the worker's directory     Linux >= 5.13 (ABI detected), any user
                 and the interpreter; TCP; signals/abstract sockets
                 outside the worker (ABI >= 6)
    seccomp      execve, ptrace, /proc/<pid>/mem-like syscalls,     x86_64 or aarch64 Linux, any user
                 non-UNIX sockets, new namespaces, io_uring, bpf

Who does what (root case): the slot's monitor unshares the net and pid namespaces for its init
(enter_namespaces); the init makes the slot's mount namespace once (MountNamespace) and mounts each
worker's directory before handing it to the worker, which was forked ahead and waits unconfined. On its
request the worker confines itself (confine): chown the private dir to the slot's uid, a clean environment,
rlimits, drop to the uid, parent-death signal, not dumpable, no_new_privs, Landlock, seccomp. When it ends,
the init kills every other process of its pid namespace (kill_namespace), or, without one, its children and
the slot's uid (kill_children, sweep_uid). Nothing here raises on a refused layer; only a failure that would
leave the worker *more* privileged than reported is fatal.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import resource
import signal
import struct
import sys
from pathlib import Path
from typing import Any

DEFAULT_MEMORY_MB = 4096
DEFAULT_FSIZE_MB = 64
DEFAULT_NOFILE = 256
DEFAULT_NPROC = 256  # counts threads and zombies of the slot's uid
UID_BASE = int(os.environ.get("SEQGRADE_UID_BASE", "61200"))  # read in the grading process only
MAX_SLOTS = 64

# Tests and unusual machines can switch layers off to see the degraded path: SEQGRADE_SANDBOX_OFF=uid,landlock
OFF_ENV = "SEQGRADE_SANDBOX_OFF"
LAYERS = ("rlimits", "netns", "pidns", "uid", "no_new_privs", "landlock", "seccomp")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


def _err() -> str:
    return os.strerror(ctypes.get_errno())


def disabled(config: dict[str, Any] | None = None) -> set[str]:
    """Layers switched off by config["off"] or $SEQGRADE_SANDBOX_OFF (for tests of the degraded path)."""
    names = set((config or {}).get("off", ()))
    names |= {s.strip() for s in os.environ.get(OFF_ENV, "").split(",") if s.strip()}
    return names


# ----------------------------------------------------------------------------------------------- namespaces


def enter_namespaces(config: dict[str, Any]) -> list[str]:
    """Unshare network and pid namespaces for the children of the calling process (the worker's monitor).

    As root CLONE_NEWNET|CLONE_NEWPID is enough; otherwise an unprivileged user namespace is needed
    (refused on some machines, e.g. Ubuntu 24.04 by default). Every return code is checked.
    """
    off = disabled(config)
    want = (0 if "netns" in off else CLONE_NEWNET) | (0 if "pidns" in off else CLONE_NEWPID)
    if not want:
        return []
    # root in a container without CAP_SYS_ADMIN may still be allowed a user namespace
    tries = [want, want | CLONE_NEWUSER] if os.geteuid() == 0 else [want | CLONE_NEWUSER]
    if want & CLONE_NEWPID and want & CLONE_NEWNET:  # one may work without the other
        tries += [t & ~CLONE_NEWPID for t in list(tries)] + [t & ~CLONE_NEWNET for t in list(tries)]
    for flags in tries:
        if _libc.unshare(ctypes.c_int(flags)) == 0:
            got = (["netns"] if flags & CLONE_NEWNET else []) + (["pidns"] if flags & CLONE_NEWPID else [])
            return got + (["userns"] if flags & CLONE_NEWUSER else [])
    return []


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 1 << 14, 1 << 18
DEFAULT_DISK_MB = 256


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> bool:
    return (
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        == 0
    )


MNT_DETACH = 2


class MountNamespace:
    """Root only: a slot's private mount namespace, made once by its init. The grader's own trees and the
    submissions' folders (other students' files) are covered by empty read-only tmpfs; each worker's
    directory is a size-capped tmpfs (a disk flood fills at most DEFAULT_DISK_MB), mounted before the worker
    is forked and detached when it ends. The kernel undoes it all when the slot's processes are gone."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.active = False
        self.hidden: set[str] = set()
        if os.geteuid() != 0 or "mountns" in disabled(config):
            return
        if _libc.unshare(ctypes.c_int(CLONE_NEWNS)) != 0:
            return
        self.active = _mount("none", "/", None, MS_REC | MS_PRIVATE, None)

    def prepare(self, workdir: str, config: dict[str, Any]) -> list[str]:
        """Mount the worker's directory (holding its files) and hide what it must not see; returns the
        layer's name for the report ("mountns+tmpfs:256m+hidden:3"), or [] without a mount namespace."""
        if not self.active or "mountns" in disabled(config):
            return []
        active = ["mountns"]
        files = []
        for dirpath, _, filenames in os.walk(workdir):
            for name in filenames:
                p = os.path.join(dirpath, name)
                with open(p, "rb") as f:
                    files.append((os.path.relpath(p, workdir), f.read()))
        size = int(config.get("disk_mb", DEFAULT_DISK_MB))
        if _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,nr_inodes=4096,mode=0700"):
            for rel, data in files:
                p = os.path.join(workdir, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
            active.append(f"tmpfs:{size}m")
        hidden = 0
        for target in [str(p) for p in protected_dirs()] + list(config.get("hide", [])):
            if target in self.hidden:
                hidden += 1
                continue
            if not os.path.isdir(target) or Path(workdir).resolve().is_relative_to(Path(target).resolve()):
                continue
            if any(
                Path(p).resolve().is_relative_to(Path(target).resolve())
                for p in sys.path
                if p and os.path.isdir(p)
            ):
                continue  # would hide the interpreter's own files
            if _mount(
                "tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0000"
            ):
                self.hidden.add(target)
                hidden += 1
        if hidden:
            active.append(f"hidden:{hidden}")
        return ["+".join(active)]

    def release(self, workdir: str) -> None:
        """Detach a worker's directory once its processes are gone (its files go with it)."""
        if self.active:
            _libc.umount2(workdir.encode(), ctypes.c_int(MNT_DETACH))


# ----------------------------------------------------------------------------------------------- rlimits


def set_rlimits(config: dict[str, Any], *, root_drop: bool) -> list[str]:
    """Soft = hard for every limit, so the worker cannot raise them back."""
    mem = int(config.get("memory_mb", DEFAULT_MEMORY_MB)) << 20
    cpu = int(config.get("cpu_seconds", 0))
    limits = [
        ("as", resource.RLIMIT_AS, mem),
        ("core", resource.RLIMIT_CORE, 0),
        ("fsize", resource.RLIMIT_FSIZE, int(config.get("fsize_mb", DEFAULT_FSIZE_MB)) << 20),
        ("nofile", resource.RLIMIT_NOFILE, int(config.get("nofile", DEFAULT_NOFILE))),
    ]
    if cpu > 0:
        limits.append(("cpu", resource.RLIMIT_CPU, cpu))
    if root_drop or os.geteuid() != 0:  # NPROC does not bind root
        limits.append(("nproc", resource.RLIMIT_NPROC, int(config.get("nproc", DEFAULT_NPROC))))
    active = []
    for name, res, value in limits:
        try:
            _, hard = resource.getrlimit(res)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            if res == resource.RLIMIT_CPU:  # SIGXCPU at the soft limit, SIGKILL one second later
                resource.setrlimit(res, (value, value + 1))
            else:
                resource.setrlimit(res, (value, value))
            active.append(name)
        except (ValueError, OSError):
            pass
    return ["rlimit:" + "+".join(active)] if active else []


# ----------------------------------------------------------------------------------------------- identity


def slot_uid(slot: int) -> int:
    return UID_BASE + slot


def uid_is_free(uid: int) -> bool:
    """Not a user of this machine (no passwd entry) and owning no process (left over from a killed run
    is fine: sweep_uid ends those)."""
    import pwd

    try:
        pwd.getpwuid(uid)
        return False
    except KeyError:
        pass
    try:
        import grp

        grp.getgrgid(uid)
        return False
    except KeyError:
        return True


def drop_privileges(uid: int) -> list[str]:
    """setgroups([]), setresgid, setresuid to `uid`; verified: regaining root must fail."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != uid or os.getgroups():
        raise RuntimeError("privilege drop did not take")  # fatal: never run student code as root
    try:
        os.setuid(0)
    except PermissionError:
        return ["uid"]  # the number differs per slot: reports stay identical across runs
    raise RuntimeError("privilege drop is reversible")


def passable(path: str) -> bool:
    """Every user may pass through `path` and each folder above it (x for others): a worker that has dropped
    to its slot's uid can then reach its directory inside."""
    p = Path(path).resolve()
    try:
        return all(os.stat(q).st_mode & 0o001 for q in (p, *p.parents))
    except OSError:
        return False


@functools.cache
def workers_parent(uid_drop: bool) -> str | None:
    """Where workers' directories go: the usual temporary folder, unless a worker that drops to another uid
    could not reach it (TMPDIR under a private 0700 folder such as /run/user/N or pytest's base) -- then the
    first passable of /tmp, /var/tmp, /dev/shm. None: tempfile's default."""
    import tempfile

    from grader.errors import ConfigError

    default = tempfile.gettempdir()
    if not uid_drop or passable(default):
        return None
    for candidate in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK) and passable(candidate):
            return candidate
    raise ConfigError(
        f"workers run as another user and cannot reach {default} (a folder above it is private): "
        "set TMPDIR to a folder every user may pass through"
    )


def uid_processes(uid: int) -> list[int]:
    """Live (not zombie) processes whose real, effective or saved uid is `uid`, from /proc/<pid>/status."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                text = f.read().decode("ascii", "replace")
        except OSError:
            continue
        state = uids = ""
        for line in text.splitlines():
            if line.startswith("State:"):
                state = line.split()[1] if len(line.split()) > 1 else ""
            elif line.startswith("Uid:"):
                uids = line
        if state not in ("Z", "X") and str(uid) in uids.split()[1:4]:
            out.append(int(entry))
    return out


def sweep_uid(uid: int, *, tries: int = 50) -> bool:
    """Kill every process of `uid` (root only). A child takes the uid and calls kill(-1, SIGKILL), which
    reaches all processes of that uid in one pass (a fork bomb cannot outrun it); repeated until /proc
    shows none. Returns True when no live process of the uid remains."""
    if os.geteuid() != 0:
        return False
    import time

    for _ in range(tries):
        if not uid_processes(uid):
            return True
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                _libc.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.005)
    return not uid_processes(uid)


# ----------------------------------------------------------------------------------------------- prctl


def set_pdeathsig() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> None:
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def kill_children(*, seconds: float = 30.0) -> None:
    """Kill and reap every child of this process (a subreaper: orphans of the worker come back here),
    grandchildren included as they are reparented, until none is left. Used where neither a pid namespace
    nor a uid sweep ends them."""
    import time

    me = os.getpid()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kids = _children(me)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            if kids:
                os.waitpid(-1, 0)  # one dies (they all will); its children are ours from now on
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            if not _children(me):
                return


def kill_namespace() -> None:
    """In the init (pid 1) of a pid namespace: kill every other process of the namespace and reap them all.
    kill(-1) reaches them in one pass that no fork can outrun (the kernel holds the task list while it
    signals, and a fork that a fatal signal reaches fails); orphans are reparented to us, so when wait()
    finds no child, the namespace holds no process but this one."""
    if os.getpid() != 1:
        raise RuntimeError("kill_namespace outside a pid namespace's init")  # kill(-1) would hit the machine
    _libc.kill(-1, signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def set_no_new_privs() -> list[str]:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        return ["no_new_privs"]
    return []


def set_not_dumpable() -> None:
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


# ----------------------------------------------------------------------------------------------- landlock

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unavailable (old kernel, disabled, seccomp'd container)."""
    abi = _libc.syscall(
        SYS_LANDLOCK_CREATE_RULESET,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    return int(abi) if abi > 0 else 0


def _fs_handled(abi: int) -> int:
    handled = FS_ABI1
    if abi >= 2:
        handled |= FS_REFER
    if abi >= 3:
        handled |= FS_TRUNCATE
    if abi >= 5:
        handled |= FS_IOCTL_DEV
    return handled


def protected_dirs() -> list[Path]:
    """The grader's own trees (reference implementations, plans, grader, templates): never readable.
    Computed once per process (in the zygote, before it forks workers)."""
    return list(_protected_dirs())


@functools.lru_cache(maxsize=1)
def _protected_dirs() -> tuple[Path, ...]:
    import importlib.util

    out = []
    for name in ("reference", "assignments", "grader", "student_template"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            out += [Path(p).resolve() for p in spec.submodule_search_locations]
    here = Path(__file__).resolve().parent
    out.append(here)
    out.append(here.parent / "reference")
    return tuple(sorted(set(out)))


def readable_roots(protected: list[Path]) -> list[Path]:
    """Trees the worker may read: the interpreter's import path and system libraries, minus `protected`
    (a tree holding a protected dir is opened up child by child, leaving the protected one out)."""
    candidates = [Path(p) for p in sys.path if p and os.path.isdir(p)]
    candidates += [Path(p) for p in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib")]
    out: list[Path] = []

    def add(root: Path, depth: int) -> None:
        try:
            root = root.resolve()
        except OSError:
            return
        if not root.exists() or any(root == p or root.is_relative_to(p) for p in protected):
            return
        if any(p.is_relative_to(root) for p in protected):
            if depth > 6:
                return
            try:
                children = list(root.iterdir())
            except OSError:
                return
            for child in children:
                add(child, depth + 1)
            return
        out.append(root)

    for c in candidates:
        add(c, 0)
    return sorted(set(out))


@functools.lru_cache(maxsize=1)
def readable_paths() -> tuple[str, ...]:
    """readable_roots(protected_dirs()), computed once (in the zygote, before it forks workers)."""
    return tuple(str(p) for p in readable_roots(protected_dirs()))


def apply_landlock(workdir: str, config: dict[str, Any]) -> list[str]:
    """Reads: the import path, system libraries, a few devices, the worker's own dir. Writes: only its dir.
    TCP bind/connect: none (ABI >= 4). Signals, abstract UNIX sockets: only inside the worker (ABI >= 6)."""
    plan = _landlock_plan()
    if plan is None:
        return []
    abi, handled, attr, fixed, parts = plan
    fd = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if fd < 0:
        return []
    fd = int(fd)
    try:
        for path, allowed in [*fixed, (workdir, handled)]:  # (path, rights) with files' rights already cut
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                _libc.syscall(
                    SYS_LANDLOCK_ADD_RULE, fd, LANDLOCK_RULE_PATH_BENEATH, _RULE.pack(allowed, pfd), 0
                )
            finally:
                os.close(pfd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return []
        if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, 0) != 0:
            return []
    finally:
        os.close(fd)
    return [f"landlock:abi{abi}:" + "+".join(parts)]


_RULE = struct.Struct("=Qi")  # struct landlock_path_beneath_attr: allowed_access, parent_fd (packed)


@functools.lru_cache(maxsize=1)
def _landlock_plan() -> tuple[int, int, bytes, tuple[tuple[str, int], ...], tuple[str, ...]] | None:
    """What every worker's ruleset is made of, worked out once (in the zygote, see prepare(); it took 0.3 ms
    of each worker's start): the ABI, the handled rights, the ruleset attribute, the
    fixed rules as (path, rights) with a file's rights cut to what Landlock accepts on a file, and the
    names of the protections. None when the kernel has no Landlock."""
    abi = landlock_abi()
    if abi <= 0:
        return None
    handled = _fs_handled(abi)
    net = (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL) if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("QQQ", handled, net, scoped)
    elif abi >= 4:
        attr = struct.pack("QQ", handled, net)
    else:
        attr = struct.pack("Q", handled)
    read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    rules: list[tuple[str, int]] = [(p, read) for p in readable_paths()]
    rules += [
        ("/dev/null", FS_READ_FILE | FS_WRITE_FILE),
        ("/dev/zero", FS_READ_FILE),
        ("/dev/urandom", FS_READ_FILE),
        ("/dev/random", FS_READ_FILE),
        ("/sys/devices/system/cpu", FS_READ_FILE | FS_READ_DIR),
        ("/proc/self", FS_READ_FILE | FS_READ_DIR),
    ]
    fixed = tuple(
        (path, access & handled & (~0 if os.path.isdir(path) else FILE_RIGHTS))
        for path, access in rules
        if os.path.exists(path)
    )
    parts = ("fs",) + (("tcp",) if net else ()) + (("signal", "abstract-unix") if scoped else ())
    return abi, handled, attr, fixed, parts


# ----------------------------------------------------------------------------------------------- seccomp

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# syscalls refused with EPERM: running programs, tracing/reading other processes, namespaces, kernel objects
DENY = {
    "x86_64": {
        "execve": 59,
        "execveat": 322,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "pidfd_getfd": 438,
        "mount": 165,
        "umount2": 166,
        "unshare": 272,
        "setns": 308,
        "pivot_root": 155,
        "chroot": 161,
        "bpf": 321,
        "perf_event_open": 298,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "userfaultfd": 323,
        "open_by_handle_at": 304,
        "name_to_handle_at": 303,
        "swapon": 167,
        "reboot": 169,
        "acct": 163,
        "syslog": 103,
    },
    "aarch64": {
        "execve": 221,
        "execveat": 281,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "pidfd_getfd": 438,
        "mount": 40,
        "umount2": 39,
        "unshare": 97,
        "setns": 268,
        "pivot_root": 41,
        "chroot": 51,
        "bpf": 280,
        "perf_event_open": 241,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "userfaultfd": 282,
        "open_by_handle_at": 265,
        "name_to_handle_at": 264,
        "swapon": 224,
        "reboot": 142,
        "acct": 89,
        "syslog": 116,
    },
}
SYS_SOCKET = {"x86_64": 41, "aarch64": 198}
SYS_CLONE = {"x86_64": 56, "aarch64": 220}
SYS_CLONE3 = 435
AF_UNIX = 1
NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06


def seccomp_program(arch: str) -> list[tuple[int, int, int, int]]:
    """A classic-BPF filter (blocklist): see DENY; socket() only for AF_UNIX; clone() without namespace
    flags; clone3 answers ENOSYS (its flags are out of reach of BPF, libc then falls back to clone)."""
    prog = [
        (LD_W_ABS, 0, 0, 4),  # arch
        (JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        (RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),
        (LD_W_ABS, 0, 0, 0),
    ]  # syscall number
    if arch == "x86_64":  # x32 ABI numbers alias the blocked ones
        prog += [(JGE_K, 0, 1, 0x40000000), (RET_K, 0, 0, RET_ERRNO | errno.EPERM)]
    for nr in sorted(DENY[arch].values()):
        prog += [(JEQ_K, 0, 1, nr), (RET_K, 0, 0, RET_ERRNO | errno.EPERM)]
    prog += [(JEQ_K, 0, 1, SYS_CLONE3), (RET_K, 0, 0, RET_ERRNO | errno.ENOSYS)]
    prog += [
        (JEQ_K, 0, 4, SYS_SOCKET[arch]),
        (LD_W_ABS, 0, 0, 16),
        (JEQ_K, 0, 1, AF_UNIX),
        (RET_K, 0, 0, RET_ALLOW),
        (RET_K, 0, 0, RET_ERRNO | errno.EACCES),
    ]
    prog += [
        (JEQ_K, 0, 4, SYS_CLONE[arch]),
        (LD_W_ABS, 0, 0, 16),
        (JSET_K, 0, 1, NS_FLAGS),
        (RET_K, 0, 0, RET_ERRNO | errno.EPERM),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    prog += [(RET_K, 0, 0, RET_ALLOW)]
    return prog


def apply_seccomp() -> list[str]:
    fprog = _seccomp_fprog()
    if fprog is None:
        return []
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return []
    if _libc.prctl(PR_SET_SECCOMP, 2, ctypes.addressof(fprog), 0, 0) != 0:
        return []
    return ["seccomp"]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.lru_cache(maxsize=1)
def _seccomp_fprog() -> _SockFprog | None:
    """The filter in the kernel's struct sock_fprog, built once (in the zygote, see prepare(); it took
    0.35 ms of each worker's start); None where there is no filter for this machine."""
    arch = platform.machine()
    if arch not in AUDIT_ARCH or sys.byteorder != "little":
        return None
    prog = seccomp_program(arch)
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *ins) for ins in prog))
    fprog = _SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    fprog._buf = buf  # type: ignore[attr-defined]  # the program's bytes live as long as the struct
    return fprog


def prepare() -> None:
    """Work out, in the process that forks workers (the zygote), what they would otherwise redo each: the
    trees a worker's mount namespace covers, Landlock's allow-list and its rules' rights, and the seccomp
    program (these last two: 0.65 ms of each worker's start)."""
    protected_dirs()
    readable_paths()
    _landlock_plan()
    _seccomp_fprog()


# ----------------------------------------------------------------------------------------------- the sequence


def prepare_workdir(workdir: str, uid: int | None) -> None:
    """Make the private directory the worker's own (root case): owner uid, mode 0700, recursively."""
    if uid is None:
        os.chmod(workdir, 0o700)
        return
    for dirpath, dirnames, filenames in os.walk(workdir):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)
    os.chown(workdir, uid, uid)
    os.chmod(workdir, 0o700)


def confine(workdir: str, config: dict[str, Any]) -> list[str]:
    """Apply every available layer to the current (worker) process; returns the active ones' names.

    config: memory_mb, cpu_seconds, fsize_mb, nofile, nproc, uid (None: no privilege drop), off (layers
    to skip, for tests).
    """
    off = disabled(config)
    uid = config.get("uid")
    uid = None if (uid is None or "uid" in off or os.geteuid() != 0) else int(uid)
    active: list[str] = []
    prepare_workdir(workdir, uid)
    os.environ.clear()
    os.environ.update(
        {
            "HOME": workdir,
            "TMPDIR": workdir,
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )
    if "rlimits" not in off:
        active += set_rlimits(config, root_drop=uid is not None)
    if uid is not None:
        active += drop_privileges(uid)
    set_pdeathsig()  # after the drop: changing credentials clears it
    set_not_dumpable()
    if "no_new_privs" not in off:
        active += set_no_new_privs()
    if "landlock" not in off:
        active += apply_landlock(workdir, config)
    if "seccomp" not in off:
        active += apply_seccomp()
    return active
