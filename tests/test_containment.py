"""Containment: a hostile or broken submission costs only its own points (issue 3, docs/SECURITY.md).

Every hostile submission in tests/hostile/rnn/ is graded by the real pipeline, together with the honest
ones in tests/hostile/honest/, in one run; the honest ones are also graded alone, twice. The module
fixture records what the attacks could see: a TCP listener on the host, the victim's files, the
processes left over. Hostile files print `LEAK <what>` when an attack works and `BLOCKED <what>` when
it does not; the report keeps that output, so the tests read it from there.

Where the machine does not offer a layer (not root, no Landlock, ...), the tests that depend on it
are skipped with the reason, and test_protections_are_reported shows what was active.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from grader import pipeline, runner, sandbox

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="containment is Linux-only")

HOSTILE = Path(__file__).resolve().parent / "hostile"
ROOT = Path(__file__).resolve().parent.parent
MARKER = "HONEST-SUBMISSION-MARKER-7f3a9c"
TIMEOUT = 1.0  # seconds per call: every hang costs this once per function
MEMORY_MB = 1536
SECRET = "containment-secret-4b1d0e6c"
FUNCTIONS = ("rnn_step", "rnn_forward", "rnn_backward", "clip_grad_norm")
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: separate uid per worker slot")


def _options(secret_path: Path, **kw) -> pipeline.GradeOptions:
    opts = pipeline.GradeOptions(
        workers=2, timeout=TIMEOUT, memory_mb=MEMORY_MB, secret_path=secret_path, fresh=True, **kw
    )
    if any(f.name == "cache" for f in dataclasses.fields(opts)):
        opts.cache = False  # hidden cases are rebuilt: nothing read from or written to ./.seqgrade
    return opts


def _listener() -> tuple[socket.socket, list[bytes], threading.Event]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            got.append(conn.recv(100) or b"connected")
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return srv, got, stop


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def _normalised(path: Path) -> dict:
    """A report without what legitimately differs between runs (timings, where the files were read from)."""
    data = json.loads(path.read_text())
    for key in ("seconds", "student_seconds", "origin"):
        data["extra_data"].pop(key, None)
    return data


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    base = tmp_path_factory.mktemp("containment")
    instructor = base / "instructor"
    instructor.mkdir(mode=0o700)
    secret_file = instructor / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    subs_all, subs_honest, out_all = base / "subs_all", base / "subs_honest", base / "out_all"
    subs_all.mkdir()
    subs_honest.mkdir()
    srv, got, stop = _listener()
    targets = {
        "out": str(out_all),
        "victim": "correct_loops",
        "victim_submission": str(subs_all / "correct_loops.py"),
        "reference_file": str(ROOT / "reference" / "rnn.py"),
        "plan_file": str(ROOT / "assignments" / "rnn" / "plan.py"),
        "repo": str(ROOT),
        "secret_file": str(secret_file),
        "secret_value": SECRET,
        "grader_pid": os.getpid(),
        "port": srv.getsockname()[1],
        "marker": MARKER,
        "submissions": str(subs_all),
    }
    honest = sorted((HOSTILE / "honest").glob("*.py"))
    hostile = sorted((HOSTILE / "rnn").glob("*.py"))
    for f in honest:
        shutil.copy(f, subs_all / f.name)
        shutil.copy(f, subs_honest / f.name)
    for f in hostile:
        (subs_all / f.name).write_text(f.read_text().replace("TARGETS = {}", f"TARGETS = {targets!r}"))
    victim_before = _digest(subs_all)
    mp = pytest.MonkeyPatch()
    mp.setenv("SEQGRADE_SECRET", SECRET)  # in the grading process's environment, as an instructor might
    zygote = pipeline.start_zygote()
    try:
        start = time.monotonic()
        run_all = pipeline.grade("rnn", subs_all, out_all, _options(secret_file), zygote=zygote)
        seconds_all = time.monotonic() - start
        my_uids = [uid for _, uid, _ in runner.SLOTS.free if uid is not None]
        leftover = {uid: sandbox.uid_processes(uid) for uid in my_uids}
        time.sleep(0.3)  # anything still running would keep writing
        out_files = sorted(p.name for p in out_all.iterdir())
        victim_after = _digest(subs_all)
        run_honest = pipeline.grade(
            "rnn", subs_honest, base / "out_honest", _options(secret_file), zygote=zygote
        )
        run_again = pipeline.grade(
            "rnn", subs_honest, base / "out_again", _options(secret_file), zygote=zygote
        )
        det = base / "subs_det"
        det.mkdir()
        for name in (
            "hang_loop",
            "crash_segfault",
            "crash_os_exit",
            "lie_subclass",
            "out_flood",
            "res_fork_bomb",
        ):
            shutil.copy(subs_all / f"{name}.py", det / f"{name}.py")
        pipeline.grade("rnn", det, base / "out_det", _options(secret_file), zygote=zygote)
        yield {
            "base": base,
            "out": out_all,
            "targets": targets,
            "got": got,
            "leftover": leftover,
            "out_files": out_files,
            "victim_before": victim_before,
            "victim_after": victim_after,
            "honest": [f.stem for f in honest],
            "hostile": [f.stem for f in hostile],
            "zygote": zygote,
            "secret_file": secret_file,
            "runs": (run_all, run_honest, run_again),
            "seconds_all": seconds_all,
        }
    finally:
        zygote.stop()
        stop.set()
        srv.close()
        mp.undo()


def rep(arena, name: str, out: str = "out") -> dict:
    folder = arena[out] if out == "out" else arena["base"] / out
    return json.loads((folder / f"{name}.json").read_text())


def lost(report: dict) -> set[str]:
    return {fn for fn, v in report["extra_data"]["functions"].items() if v["score"] < v["max_score"] - 1e-9}


def failures(report: dict, fn: str) -> list[str]:
    return [t["output"] for t in report["tests"] if t["tags"][0] == fn and t["status"] != "passed"]


def output(report: dict) -> str:
    return report["extra_data"]["stdout_excerpt"]


def attempts(report: dict) -> list[str]:
    return [ln for ln in output(report).splitlines() if ln.startswith(("LEAK", "BLOCKED"))]


# ----------------------------------------------------------------------------------------------- the suite


def test_every_hostile_file_is_covered(arena):
    assert set(arena["hostile"]) == set(LOSES) | set(IMPORT_FAILS) | set(FULL_MARKS)


def test_grading_the_suite_stays_fast(arena):
    # 35 hostile submissions, ~10 hangs of one timeout each, on 2 workers
    assert arena["seconds_all"] < 120, arena["seconds_all"]


# ----------------------------------------------------------------------------------------------- costs


# name -> (functions that must lose points, text every failing entry of them must contain)
LOSES = {
    "hang_loop": ({"rnn_forward"}, "timed out"),
    "hang_sleep": ({"rnn_step"}, "timed out"),
    "hang_late": ({"rnn_step"}, "timed out"),
    "hang_backward": ({"rnn_forward"}, "timed out"),
    "slow_backward": ({"rnn_forward"}, "timed out"),
    "hang_blocked_signals": ({"clip_grad_norm"}, "timed out"),
    "crash_segfault": ({"rnn_backward"}, "killed by SIGSEGV"),
    "crash_abort": ({"rnn_forward"}, "killed by SIGABRT"),
    "crash_os_exit": ({"rnn_step"}, "exited with code 3"),
    "crash_sys_exit": ({"rnn_forward"}, "SystemExit: done here"),
    "crash_keyboard_interrupt": ({"clip_grad_norm"}, "KeyboardInterrupt"),
    "crash_base_exception": ({"rnn_step"}, "Escape: out of here"),
    "res_memory": ({"rnn_step"}, "allocate"),
    "res_memory_grow": ({"rnn_forward"}, "MemoryError"),
    "res_fork_bomb": ({"rnn_forward"}, "timed out"),
    "res_file_size": ({"rnn_forward"}, "File too large"),
    "res_disk_fill": ({"rnn_backward"}, "RuntimeError: wrote"),
    "res_cpu": ({"rnn_step"}, "timed out"),
    "out_flood": ({"rnn_step"}, "printed more than"),
    "lie_huge": ({"rnn_step", "rnn_forward"}, ""),
    "lie_dtype": ({"rnn_step", "rnn_forward", "clip_grad_norm"}, ""),
    "lie_subclass": ({"rnn_step", "rnn_forward", "clip_grad_norm"}, ""),
    "lie_shape_nan": ({"rnn_step", "rnn_forward"}, ""),
    "tamper_monkeypatch": (set(FUNCTIONS), ""),
    "secret_reference": (set(FUNCTIONS), ""),
}
IMPORT_FAILS = {
    "hang_import": "importing the module took longer than 1 s",
    "crash_import_segfault": "killed by SIGSEGV",
    "crash_import_os_exit": "exited with code 0",
    "crash_import_sys_exit": "SystemExit: 0",
    "crash_import_keyboard_interrupt": "KeyboardInterrupt",
    "crash_import_base_exception": "Escape: leaving before anything is graded",
}
FULL_MARKS = (
    "res_daemon",
    "res_open_files",
    "out_chatty",
    "tamper_reports",
    "secret_file",
    "secret_walk",
    "net",
    "escape",
)


@pytest.mark.parametrize("name", sorted(LOSES))
def test_an_attack_costs_only_its_own_functions(arena, name):
    must_lose, reason = LOSES[name]
    r = rep(arena, name)
    assert not r["extra_data"]["import_error"], r["extra_data"]["import_error"]
    assert lost(r) == must_lose, (lost(r), r["extra_data"]["functions"])
    for fn in must_lose:
        msgs = failures(r, fn)
        assert msgs and all(reason in m or m.startswith("skipped:") for m in msgs), (
            fn,
            sorted(set(msgs))[:4],
        )


@pytest.mark.parametrize(
    "name",
    [
        "hang_loop",
        "hang_sleep",
        "hang_late",
        "hang_backward",
        "hang_blocked_signals",
        "res_fork_bomb",
        "res_cpu",
    ],
)
def test_a_hang_costs_one_timeout_per_function(arena, name):
    (fn,), _ = LOSES[name]
    r = rep(arena, name)
    msgs = failures(r, fn)
    assert sum(m.startswith("timed out") for m in msgs) == 1, msgs
    assert all(m.startswith(("timed out", "skipped: ")) for m in msgs)
    assert r["extra_data"]["seconds"] < 4 * TIMEOUT + 3, r["extra_data"]["seconds"]


def test_a_hang_mid_batch_keeps_the_calls_before_it(arena):
    """hang_late: rnn_step's first calls are right, then it hangs. What it answered before counts; the
    functions after it in the batch are graded in full (a fresh worker took over after the timeout)."""
    r = rep(arena, "hang_late")
    step = [t for t in r["tests"] if t["name"].startswith("rnn_step:") and t["max_score"] > 0]
    assert any(t["status"] == "passed" for t in step), [t["output"] for t in step]
    assert any(t["output"].startswith("timed out") for t in step)
    step_points = r["extra_data"]["functions"]["rnn_step"]
    assert 0 < step_points["score"] < step_points["max_score"]


@pytest.mark.parametrize("name", ["hang_backward", "slow_backward"])
def test_a_hang_in_the_backward_pass_keeps_the_forward_check(arena, name):
    """hang_backward: rnn_forward's values are right, autograd through them never ends; slow_backward: 0.6 s
    each way, 1 s per call. Its forward check and its gradient check share one call; the forward reply goes
    first, so only the gradients time out, their deadline counted from the start of the shared call."""
    r = rep(arena, name)
    fwd = [t for t in r["tests"] if t["name"].startswith("rnn_forward:") and t["max_score"] > 0]
    first_forward, first_gradients = fwd[0], fwd[1]
    assert first_forward["name"].startswith("rnn_forward: forward") and first_forward["status"] == "passed"
    assert first_gradients["name"].startswith("rnn_forward: gradients")
    assert first_gradients["output"].startswith("timed out"), first_gradients["output"]


@pytest.mark.parametrize("name", sorted(IMPORT_FAILS))
def test_an_import_failure_scores_zero_with_the_reason(arena, name):
    r = rep(arena, name)
    assert r["score"] == 0
    assert IMPORT_FAILS[name] in r["extra_data"]["import_error"], r["extra_data"]["import_error"]
    assert r["extra_data"]["seconds"] < TIMEOUT + 3


@pytest.mark.parametrize("name", FULL_MARKS)
def test_an_attack_that_gets_nowhere_keeps_full_marks(arena, name):
    r = rep(arena, name)
    assert r["score"] == r["max_score"], (lost(r), r["extra_data"]["import_error"])


# ----------------------------------------------------------------------------------------------- resources


def test_open_files_are_capped(arena):
    line = next(ln for ln in output(rep(arena, "res_open_files")).splitlines() if ln.startswith("opened"))
    assert int(line.split()[1]) <= sandbox.DEFAULT_NOFILE


def test_disk_use_is_capped(arena):
    r = rep(arena, "res_disk_fill")
    if not any(p.startswith("mountns") and "tmpfs" in p for p in r["extra_data"]["protections"]):
        pytest.skip("no private tmpfs for the worker here: only RLIMIT_FSIZE bounds one file")
    assert "disk full after 256 MiB" in output(r)


def test_output_is_captured_and_bounded(arena):
    for name in ("out_flood", "out_chatty"):
        out = output(rep(arena, name))
        assert 0 < len(out.encode()) <= runner.OUTPUT_CAP + 4, name
    assert output(rep(arena, "out_chatty")).startswith(("debug line", "warning line"))


@ROOT_ONLY
def test_no_process_of_a_submission_survives_its_grading(arena):
    assert arena["leftover"] and not any(arena["leftover"].values()), arena["leftover"]


# ----------------------------------------------------------------------------------------------- lies


def test_lying_results_are_failed_checks(arena):
    msgs = [m for fn in FUNCTIONS for m in failures(rep(arena, "lie_subclass"), fn)]
    assert any("max abs error" in m for m in msgs)  # the zeros inside the subclass were compared
    assert any("EqualsAnything" in m for m in msgs)  # an object is a wrong type, whatever its __eq__
    assert any("complex128" in m for m in failures(rep(arena, "lie_dtype"), "rnn_step"))
    assert any("object" in m for m in failures(rep(arena, "lie_dtype"), "rnn_forward"))


# ----------------------------------------------------------------------------------------------- tampering


def test_no_report_or_submission_can_be_forged(arena):
    assert arena["victim_after"] == arena["victim_before"]
    names = set(arena["hostile"]) | set(arena["honest"])
    expected = sorted({f"{n}.json" for n in names} | {f"{n}.md" for n in names} | {"gradebook.csv"})
    assert arena["out_files"] == expected
    assert rep(arena, "tamper_reports")["score"] == rep(arena, "tamper_reports")["max_score"] == 10
    assert rep(arena, "correct_loops")["score"] == 10
    gradebook = (arena["out"] / "gradebook.csv").read_text()
    assert "1000" not in gradebook and "forged" not in gradebook


def test_monkeypatching_inside_the_worker_changes_nothing(arena):
    r = rep(arena, "tamper_monkeypatch")
    assert r["score"] == 0
    assert all(
        "max abs error" in m or "gradient" in m or "skipped" in m for fn in FUNCTIONS for m in failures(r, fn)
    )


@pytest.mark.parametrize("name", sorted(set(LOSES) | set(FULL_MARKS)))
def test_no_attack_ever_leaks(arena, name):
    r = rep(arena, name)
    assert not any(a.startswith("LEAK") for a in attempts(r)), attempts(r)


@pytest.mark.parametrize(
    "name, blocked",
    [
        ("secret_reference", ["import reference.rnn", "load ", "read "]),
        (
            "secret_file",
            [
                "env SEQGRADE_SECRET",
                "read secret file",
                "read /proc/<grader>/environ",
                "read /proc/<grader>/mem",
                "secret in own memory",
            ],
        ),
        ("secret_walk", ["files with secrets, other submissions or reports"]),
        (
            "tamper_reports",
            [
                "write tamper_reports.json",
                "write correct_loops.json",
                "write gradebook.csv",
                "write victim submission",
            ],
        ),
        ("net", ["tcp to the host", "udp out", "socket AF_INET6"]),
        (
            "escape",
            ["setuid(0)", "run /bin/sh", "ptrace the grader", "unshare user namespace", "signal the grader"],
        ),
    ],
)
def test_attempts_are_blocked(arena, name, blocked):
    seen = attempts(rep(arena, name))
    for what in blocked:
        assert any(a.startswith("BLOCKED " + what) for a in seen), (what, seen)


def test_the_secret_and_reference_stay_out(arena):
    r = rep(arena, "secret_reference")
    assert r["score"] == 0  # it would have full marks with the reference
    for name in arena["hostile"]:
        text = (arena["out"] / f"{name}.json").read_text() + (arena["out"] / f"{name}.md").read_text()
        assert SECRET not in text and MARKER not in text, name


def test_the_network_is_off(arena):
    time.sleep(0.2)
    assert arena["got"] == []


# ----------------------------------------------------------------------------------------------- honest


def test_honest_reports_are_identical_with_or_without_hostile_neighbours(arena):
    for name in arena["honest"]:
        alone = _normalised(arena["base"] / "out_honest" / f"{name}.json")
        among = _normalised(arena["out"] / f"{name}.json")
        assert among == alone, name
        assert (arena["out"] / f"{name}.md").read_text() == (
            arena["base"] / "out_honest" / f"{name}.md"
        ).read_text()
    assert rep(arena, "correct_many_apis")["score"] == 10  # what students import still works after the drop


def test_grading_is_deterministic(arena):
    for name in arena["honest"]:
        a = _normalised(arena["base"] / "out_honest" / f"{name}.json")
        b = _normalised(arena["base"] / "out_again" / f"{name}.json")
        assert a == b, name
    for path in sorted((arena["base"] / "out_det").glob("*.json")):
        assert _normalised(path) == _normalised(arena["out"] / path.name), path.name


# ----------------------------------------------------------------------------------------------- protections


def test_protections_are_reported(arena):
    prot = rep(arena, "correct_loops")["extra_data"]["protections"]
    assert prot == arena["zygote"].protections
    assert any(p.startswith("rlimit:") and "as" in p and "fsize" in p and "nofile" in p for p in prot), prot
    if sandbox.landlock_abi() > 0:
        assert any(p.startswith("landlock:") for p in prot), prot
    if os.geteuid() == 0:
        assert {"netns", "pidns", "no_new_privs", "seccomp"} <= set(prot), prot
        assert "uid" in prot and any(p.startswith("mountns") for p in prot), prot


def _in_a_child(probe) -> dict:
    """Run `probe()` (-> a JSON-able dict) in a forked child of the test process; its answer."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            try:
                answer = probe()
            except Exception as e:  # noqa: BLE001 - reported to the test, not lost with the child
                answer = {"error": repr(e)}
            os.write(w, json.dumps(answer).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def _attempt(action) -> str:
    try:
        action()
        return "ok"
    except OSError as e:
        return type(e).__name__


def test_landlock_on_its_own_keeps_a_process_to_its_paths(tmp_path):
    """The Landlock layer alone (its rules are worked out once, in the process that forks workers): the
    worker's own dir is writable, the import path only readable, the grader's tree and any other path
    neither; no TCP connection (ABI >= 4)."""
    abi = sandbox.landlock_abi()
    if abi <= 0:
        pytest.skip("no Landlock on this kernel")
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (elsewhere / "other.txt").write_text("another student's file")
    with socket.socket() as s:  # a port nobody listens on: refused, unless Landlock refuses first
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sandbox.prepare()  # as the zygote does

    def create(path: Path) -> None:
        path.write_text("x")
        path.unlink()  # a probe that got through leaves nothing behind

    def probe() -> dict:
        active = sandbox.apply_landlock(str(work), {})
        probe_name = f"seqgrade-probe-{os.getpid()}.txt"
        return {
            "active": bool(active) and active[0].startswith("landlock:"),
            "write own dir": _attempt(lambda: (work / "mine.txt").write_text("x")),
            "read own dir": _attempt(lambda: (work / "mine.txt").read_text()),
            "read stdlib": _attempt(lambda: Path(os.__file__).read_text()),
            "open stdlib for writing": _attempt(lambda: open(os.__file__, "r+b").close()),
            "create in stdlib": _attempt(lambda: create(Path(os.__file__).parent / probe_name)),
            "write /dev/null": _attempt(lambda: Path("/dev/null").write_text("x")),
            "read grader": _attempt(lambda: Path(sandbox.__file__).read_text()),
            "create in grader": _attempt(lambda: create(Path(sandbox.__file__).parent / probe_name)),
            "read elsewhere": _attempt(lambda: (elsewhere / "other.txt").read_text()),
            "write elsewhere": _attempt(lambda: (elsewhere / "new.txt").write_text("x")),
            "tcp connect": _attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close()),
        }

    assert _in_a_child(probe) == {
        "active": True,
        "write own dir": "ok",
        "read own dir": "ok",
        "read stdlib": "ok",
        "open stdlib for writing": "PermissionError",
        "create in stdlib": "PermissionError",
        "write /dev/null": "ok",
        "read grader": "PermissionError",
        "create in grader": "PermissionError",
        "read elsewhere": "PermissionError",
        "write elsewhere": "PermissionError",
        "tcp connect": "PermissionError" if abi >= 4 else "ConnectionRefusedError",
    }


def _unshare_user_namespace() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _syscall_errno(nr: int, *args: int) -> str:
    """A raw system call's outcome: "ok", or its errno's name."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)) >= 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")


def _read_own_memory() -> str:
    """process_vm_readv of 8 bytes of our own memory (x86_64: syscall 310)."""
    import ctypes

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    src, dst = ctypes.create_string_buffer(b"12345678"), ctypes.create_string_buffer(8)
    local, remote = IoVec(ctypes.addressof(dst), 8), IoVec(ctypes.addressof(src), 8)
    return _syscall_errno(310, os.getpid(), ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)


def test_seccomp_on_its_own_refuses_exec_tracing_and_kernel_objects():
    """The seccomp layer alone (its program built once, in the process that forks workers)."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the raw system call numbers below are x86_64's")
    sandbox.prepare()

    def probe() -> dict:
        active = sandbox.apply_seccomp()
        if not active:
            return {"active": False}
        return {
            "active": True,
            "exec": _attempt(lambda: os.execv("/bin/true", ["/bin/true"])),
            "unshare": _attempt(_unshare_user_namespace),
            "read another process's memory": _read_own_memory(),
            "io_uring_setup": _syscall_errno(425, 0, 0),
            "bpf": _syscall_errno(321, 0, 0, 0),
            "inet socket": _attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
            "unix socket": _attempt(lambda: socket.socketpair()[0].close()),
            "fork": _attempt(lambda: os.waitpid(_fork_and_exit(), 0)),
        }

    got = _in_a_child(probe)
    if not got["active"]:
        pytest.skip("no seccomp filter for this machine")
    assert got == {
        "active": True,
        "exec": "PermissionError",
        "unshare": "PermissionError",
        "read another process's memory": "EPERM",
        "io_uring_setup": "EPERM",
        "bpf": "EPERM",
        "inet socket": "PermissionError",
        "unix socket": "ok",
        "fork": "ok",  # plain fork stays allowed (the pid namespace and rlimits bound it)
    }


def _fork_and_exit() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def test_a_machine_without_the_layers_still_grades_and_says_so(arena):
    """The degraded path: layers switched off as a machine without them would be. Honest code still gets
    full marks, and the report lists only what was active."""
    from grader import cases
    from grader.loader import load_entry
    from grader.plan import load_plan
    from grader.score import score_submission

    plan = load_plan("rnn")
    public = cases.load_public(plan)
    sub = load_entry(HOSTILE / "honest" / "correct_loops.py", "rnn", arena["base"])
    off = ("uid", "landlock", "seccomp", "netns", "pidns", "mountns", "no_new_privs")
    run = runner.run_submission(
        arena["zygote"], plan, public, sub, runner.RunOptions(timeout=5, sandbox_off=off)
    )
    result = score_submission(sub.student, plan, public, run)
    assert result.score == result.max_score
    assert len(run.protections) == 1 and run.protections[0].startswith("rlimit:"), run.protections


def test_without_namespaces_or_uids_a_daemon_still_dies_with_its_submission(arena, tmp_path):
    """The normal-user path: no pid namespace, no uid to sweep. The slot's init is a child subreaper,
    so a double-forked setsid() daemon comes back to it and is killed when the submission is done."""
    from grader import cases
    from grader.loader import load_entry
    from grader.plan import load_plan

    drop = tmp_path / "drop"
    drop.mkdir()
    source = (HOSTILE / "rnn" / "res_daemon.py").read_text()
    (tmp_path / "rnn.py").write_text(source.replace("TARGETS = {}", f"TARGETS = {{'out': {str(drop)!r}}}"))
    plan = load_plan("rnn")
    sub = load_entry(tmp_path / "rnn.py", "rnn", tmp_path)
    off = (
        "uid",
        "landlock",
        "pidns",
        "mountns",
    )  # the daemon can write to `drop` this way: that is the probe
    run = runner.run_submission(
        arena["zygote"], plan, cases.load_public(plan), sub, runner.RunOptions(timeout=5, sandbox_off=off)
    )
    assert not run.import_error
    time.sleep(0.3)
    assert (drop / "daemon-was-here.json").exists()  # it did run
    (drop / "daemon-was-here.json").unlink()
    time.sleep(0.5)
    assert not (drop / "daemon-was-here.json").exists()  # and is gone


def test_cpu_time_is_limited(arena):
    """With a CPU limit below the wall-clock timeout, a spinning function is stopped by SIGXCPU."""
    from grader import cases
    from grader.loader import load_entry
    from grader.plan import load_plan

    plan = load_plan("rnn")
    public = cases.load_public(plan)
    sub = load_entry(HOSTILE / "rnn" / "res_cpu.py", "rnn", arena["base"])
    opts = runner.RunOptions(timeout=8, memory_mb=MEMORY_MB, cpu_seconds=1)
    start = time.monotonic()
    result = pipeline.grade_submission(arena["zygote"], plan, [public], sub, opts)
    assert time.monotonic() - start < 8
    msgs = [t.message for t in result.tests if t.function == "rnn_step" and not t.passed]
    assert any("SIGXCPU" in m or "SIGKILL" in m for m in msgs), msgs
    assert result.functions["rnn_forward"][0] == result.functions["rnn_forward"][1]


# ----------------------------------------------------------------------------------------------- inputs


def test_a_zip_slip_archive_lands_nowhere_outside(arena, tmp_path):
    honest = (HOSTILE / "honest" / "correct_loops.py").read_bytes()
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("alice/rnn.py", honest)
        zf.writestr("../../escaped_dotdot.py", b"print('escaped')")
        zf.writestr("/tmp/escaped_absolute.py", b"print('escaped')")
        zf.writestr("bob/../../escaped_nested.py", b"print('escaped')")
        link = zipfile.ZipInfo("carol/rnn.py")
        link.external_attr = 0o120777 << 16  # a symbolic link to the reference
        zf.writestr(link, str(ROOT / "reference" / "rnn.py"))
    before = set(os.listdir("/tmp")) | set(os.listdir(tmp_path))
    out = tmp_path / "out"
    run = pipeline.grade("rnn", archive, out, _options(arena["secret_file"]), zygote=arena["zygote"])
    after = set(os.listdir("/tmp")) | set(os.listdir(tmp_path))
    assert not any(n.startswith("escaped") for n in after - before)
    assert not Path("/tmp/escaped_absolute.py").exists()
    by_student = {r["extra_data"]["student"]: r for r in run.results}
    assert by_student["alice"]["score"] == 10
    assert "carol" not in by_student or by_student["carol"]["score"] == 0  # the link was not followed


ODD_IDS = [
    " leading space",
    '=HYPERLINK("x","click")',
    "+cmd",
    "-2+3",
    "@SUM(A1)",
    "<img src=x onerror=alert(1)>",
    "ünïcødé 学生",
]


def test_odd_student_ids_are_neutralised(arena, tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    honest = (HOSTILE / "honest" / "correct_loops.py").read_bytes()
    for sid in ODD_IDS:
        (subs / f"{sid}.py").write_bytes(honest)
    out = tmp_path / "out"
    pipeline.grade("rnn", subs, out, _options(arena["secret_file"]), zygote=arena["zygote"])
    import csv

    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    cells = {r["student"] for r in rows}
    assert len(rows) == len(ODD_IDS)
    for cell in cells:
        assert cell[:1] not in ("=", "+", "-", "@"), cell
    for p in out.iterdir():
        assert p.name.isascii() and "<" not in p.name and " " not in p.name and p.parent == out, p.name
    try:
        from grader import classreport
    except ImportError:
        return
    html = classreport.write_report(out).read_text()
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_a_killed_run_resumes_and_never_leaves_a_report_that_looks_complete(arena, tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("correct_loops", "correct_einsum", "buggy_transposed"):
        shutil.copy(HOSTILE / "honest" / f"{name}.py", subs / f"{name}.py")
    for name in ("hang_sleep", "hang_loop", "res_cpu", "hang_blocked_signals"):
        shutil.copy(HOSTILE / "rnn" / f"{name}.py", subs / f"{name}.py")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "grader.cli",
        "grade",
        "rnn",
        str(subs),
        "--out",
        str(out),
        "--timeout",
        "1",
        "--workers",
        "1",
        "--secret",
        str(arena["secret_file"]),
        "--memory-mb",
        str(MEMORY_MB),
    ]
    (tmp_path / "tmp").mkdir()  # what a SIGKILL leaves behind stays in the test's folder
    env = dict(os.environ, SEQGRADE_SECRET=SECRET, TMPDIR=str(tmp_path / "tmp"))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("*.json"))) < 2:
        time.sleep(0.05)
    descendants = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert descendants, "the grader had started no zygote or worker"
    first = sorted(out.glob("*.json"))
    assert 2 <= len(first) < 7
    for p in first:
        json.loads(p.read_text())  # complete: atomic writes only
    time.sleep(
        1.0
    )  # the zygote ends with its control socket; monitors, inits, workers by parent-death signals
    alive = [p for p in descendants if _alive(p)]
    assert not alive, alive
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"Resumed: {len(first)}" in done.stderr
    for p in sorted(out.glob("*.json")):  # the same reports as the uninterrupted run in the arena
        assert _normalised(p) == _normalised(arena["out"] / p.name), p.name


def test_a_private_tmpdir_does_not_lock_the_workers_out(tmp_path):
    """TMPDIR under a 0700 folder (/run/user/N, pytest's base): workers that drop to their slot's uid must still
    reach their directory (measured before the fix: every submission 'died while importing', exit 70)."""
    private = tmp_path / "private"
    (private / "tmp").mkdir(parents=True)
    private.chmod(0o700)
    env = dict(os.environ, TMPDIR=str(private / "tmp"))
    cmd = [sys.executable, "-m", "grader.cli", "check", "rnn", str(HOSTILE / "honest" / "correct_loops.py")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 1)])
def test_sigterm_or_ctrl_c_stops_the_run_cleanly(arena, tmp_path, sig, code):
    """Ctrl-C (SIGINT) or a CI runner's timeout (SIGTERM): every process stopped, no temporary folder left,
    the reports written so far complete (the run resumes from them)."""
    subs = tmp_path / "subs"
    subs.mkdir()
    for i in range(6):
        shutil.copy(HOSTILE / "rnn" / "hang_sleep.py", subs / f"hang{i}.py")
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "grader.cli", "grade", "rnn", str(subs), "--out", str(out), "--timeout", "1"]
    cmd += ["--workers", "2", "--secret", str(arena["secret_file"])]
    env = dict(os.environ, SEQGRADE_SECRET=SECRET, TMPDIR=str(tmp))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*.json")):
        time.sleep(0.05)
    descendants = _descendants(proc.pid)
    assert descendants and any(tmp.iterdir()), "the grader had not started"
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == code
    time.sleep(0.5)
    assert not [p for p in descendants if _alive(p)]
    assert not list(tmp.iterdir()), list(tmp.iterdir())
    assert 1 <= len(list(out.glob("*.json"))) < 6
    for p in out.glob("*.json"):
        json.loads(p.read_text())


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for kid in sandbox._children(parent):
            found.append(kid)
            frontier.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="worker uids exist only when the grader runs as root")
def test_a_killed_runs_worker_folders_are_swept_before_their_uid_is_reused(tmp_path):
    """After a SIGKILL, a worker folder (chowned to its slot's uid where there is no mount namespace) stays in
    TMPDIR; whoever takes that uid next removes it before any worker of that uid runs."""
    import tempfile

    parent = Path(sandbox.workers_parent(True) or tempfile.gettempdir())
    uids = [sandbox.slot_uid(i) for i in range(sandbox.MAX_SLOTS * 4)]
    stale = {}
    for uid in uids:
        d = Path(tempfile.mkdtemp(prefix="seqgrade-w-", dir=parent))  # no mount namespace: chowned
        (d / "rnn.py").write_text("# an earlier student's code\n")
        os.chown(d / "rnn.py", uid, uid)
        os.chown(d, uid, uid)
        named = Path(tempfile.mkdtemp(prefix=f"seqgrade-w-{uid}-", dir=parent))  # mount namespace: root's
        stale[uid] = (d, named)
    pool = runner.SlotPool()
    try:
        slot, uid, lock = pool.acquire()
        assert not any(d.exists() for d in stale[uid])
        assert all(d.exists() for u, ds in stale.items() if u != uid for d in ds)
        lock.close()
    finally:
        for ds in stale.values():
            for d in ds:
                shutil.rmtree(d, ignore_errors=True)


def test_the_pool_grows_to_two_slots_per_slot_in_use_then_takes_the_one_released_first(monkeypatch):
    """A submission's worker is ended without waiting: its slot goes back to the pool while the init empties
    the slot's namespace. The next submission takes a new slot until there are two per slot in use, then the
    free slot released first, whose worker is the likeliest to be gone (its host waits for the end anyway)."""
    monkeypatch.setattr(runner.os, "geteuid", lambda: 1000)  # slots without uids: no lock files
    pool = runner.SlotPool()
    a, b = pool.acquire(), pool.acquire()  # two submissions at a time
    pool.release(a)
    c = pool.acquire()  # 2 made, 1 held: up to 4
    assert c not in (a, b) and pool.made == 3
    pool.release(b)
    d = pool.acquire()
    assert d not in (a, b, c) and pool.made == 4
    pool.release(c)
    assert pool.acquire() == a  # 4 made: the slot released first, not the one just released
    pool.release(d)
    assert pool.acquire() == b and pool.made == 4 and pool.held == 2


def test_a_free_slot_is_used_when_no_uid_is_left_for_another(monkeypatch, tmp_path):
    """As root a further slot needs a further uid: when none is left (other runs hold the rest of the
    range), a free slot is used (its host waits for its worker's end), not an error."""
    monkeypatch.setattr(runner.os, "geteuid", lambda: 0)
    monkeypatch.setattr(runner.SlotPool, "LOCK_DIR", tmp_path)
    monkeypatch.setattr(runner.sandbox, "uid_is_free", lambda uid: True)
    monkeypatch.setattr(runner, "_sweep_workdirs", lambda uid: None)
    pool = runner.SlotPool()
    pool.next = sandbox.MAX_SLOTS * 4 - 1  # one uid left
    a = pool.acquire()
    pool.release(a)
    assert pool.acquire() == a and pool.made == 1
    a[2].close()


def test_an_interrupted_settle_still_removes_the_workers_folder(tmp_path):
    """Ctrl-C or SIGTERM raise in the main thread, which settles the slots at the end of a run: interrupted
    while it waits for the init's "done", the host still knows the folder, and its close() (the zygote's
    stop that follows) waits for the end and removes it."""
    import socket
    import types

    class Interrupted(runner.StatusReader):
        waits = 0

        def wait_eof(self, timeout):
            Interrupted.waits += 1
            if Interrupted.waits == 1:
                raise KeyboardInterrupt
            return super().wait_eof(timeout)

    workdir = tmp_path / "seqgrade-w-x"
    workdir.mkdir()
    (workdir / "rnn.py").write_text("# a student's code\n")
    w_r, w_w = os.pipe()  # the worker's status: no "done" yet
    m_r, m_w = os.pipe()  # the monitor's
    ours, theirs = socket.socketpair()
    host = runner.SlotHost.__new__(runner.SlotHost)
    host.closed, host.ctrl, host.init = False, ours, None
    host.zygote = types.SimpleNamespace(closers=[])
    host.status = runner.StatusReader(m_r)
    host.ending = (Interrupted(w_r), str(workdir))
    with pytest.raises(KeyboardInterrupt):
        host.settle()
    os.close(w_w)  # the init has ended the worker
    os.close(m_w)
    theirs.close()
    host.close()
    assert not workdir.exists()


def test_a_workers_folder_is_removed_once_every_process_of_it_is_gone(arena, tmp_path):
    """run_submission returns without waiting for its worker's end; the slot's host removes the worker's
    folder once the init says every process of it is gone, and a grading run ends only then. A process the
    student left writing into the folder is dead by then: the folder does not come back."""
    from grader import cases
    from grader.loader import load_entry
    from grader.plan import load_plan

    source = (HOSTILE / "honest" / "correct_loops.py").read_text()
    writer = (
        "import os as _os, time as _time\n"
        "if _os.fork() == 0:\n"
        "    while True:\n"
        "        open(f'left-{_time.monotonic_ns()}', 'w').close()\n"
        "        _time.sleep(0.001)\n"
    )
    (tmp_path / "rnn.py").write_text(source + "\n" + writer)
    plan = load_plan("rnn")
    sub = load_entry(tmp_path / "rnn.py", "rnn", tmp_path)
    run = runner.run_submission(
        arena["zygote"], plan, cases.load_public(plan), sub, runner.RunOptions(timeout=5)
    )
    assert not run.import_error
    ending = [h for h in runner.SLOTS.hosts.values() if h.ending is not None]
    assert len(ending) == 1
    workdir, uid = Path(ending[0].ending[1]), ending[0].key[1]
    runner.SLOTS.settle()
    assert uid is None or not sandbox.uid_processes(uid)  # checked at once: the writer is already dead
    assert not workdir.exists()
    time.sleep(0.2)
    assert not workdir.exists()
    assert all(h.ending is None for h in runner.SLOTS.hosts.values())
    off = ("uid", "landlock")  # a worker that could write outside its folder is ended before the return
    run = runner.run_submission(
        arena["zygote"], plan, cases.load_public(plan), sub, runner.RunOptions(timeout=5, sandbox_off=off)
    )
    assert not run.import_error
    assert all(h.ending is None for h in runner.SLOTS.hosts.values())


def test_a_function_that_crashes_on_every_call_costs_only_its_own_points(grade_hidden, tmp_path):
    """The transformer's attention has about 100 hidden calls: one that kills its worker on every call is
    skipped after a few crashes, so the functions after it still get workers (measured before the fix:
    1/17, with sinusoidal_positions and layer_norm scored 0 after 'the worker was replaced 100 times')."""
    source = (ROOT / "examples" / "transformer" / "correct.py").read_text()
    crashing = source.replace(
        "def scaled_dot_product_attention(q, k, v, mask=None):\n",
        "def scaled_dot_product_attention(q, k, v, mask=None):\n    import os\n\n    os._exit(3)\n",
        1,
    )
    assert crashing != source
    path = tmp_path / "transformer.py"
    path.write_text(crashing)
    r = grade_hidden("transformer", path)
    scores = {name: score for name, (score, _) in r.functions.items()}
    points = {name: total for name, (_, total) in r.functions.items()}
    assert scores["scaled_dot_product_attention"] == 0
    for fn in ("causal_mask", "sinusoidal_positions", "layer_norm"):
        assert scores[fn] == pytest.approx(points[fn]), (
            fn,
            [t.message for t in r.tests if t.function == fn][:3],
        )
    skipped = [t.message for t in r.tests if t.function == "scaled_dot_product_attention" and not t.passed]
    assert any("crashed the worker 3 times" in m for m in skipped), skipped[:5]


def _populate_read_works() -> bool:
    """Whether the kernel has MADV_POPULATE_READ (Linux >= 5.14): probed on a page of our own."""
    import ctypes
    import mmap

    from grader import worker

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    m = mmap.mmap(-1, mmap.PAGESIZE)
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(m))
        return libc.madvise(address, mmap.PAGESIZE, worker.MADV_POPULATE_READ) == 0
    finally:
        m.close()


def _torch_cpu(tables: list) -> list:
    return [t for t in tables if os.path.basename(t[0]).startswith("libtorch_cpu.so")]


def test_the_zygote_keeps_torchs_unwind_tables_in_memory(zygote):
    """A student's first torch error must not be a timeout: its C++ exception reads the unwind tables of
    libtorch_cpu (26 MB, read all over), which a machine that reclaims page-cache pages no process maps
    (the VM this was measured on does, after a minute unused) would fetch from disk: a failed allocation
    took 93 ms to 2.1 s and read 75 MB with cold caches, 0.7 ms with warm ones; the likely cause of
    res_memory's rnn_step timing out under the arena's 1 s in 3 of about 7 full runs. The zygote maps every
    page of them, so they stay while it lives (up to a few evicted under memory pressure: 5%)."""
    from grader import worker

    if not _populate_read_works():
        pytest.skip("no MADV_POPULATE_READ (Linux < 5.14): the zygote cannot map them ahead")
    zygote._wait_ready()
    torch_cpu = _torch_cpu(worker._unwind_tables(f"/proc/{zygote.pid}/maps"))
    if not torch_cpu:
        pytest.skip("no libtorch_cpu.so among the zygote's libraries (another torch build)")
    assert {t[1] for t in torch_cpu} == {".eh_frame_hdr", ".eh_frame", ".gcc_except_table"}
    page = os.sysconf("SC_PAGE_SIZE")
    missing = pages = 0
    with open(f"/proc/{zygote.pid}/pagemap", "rb") as f:  # bit 63: the page is in its page table
        for _, _, address, size, _ in torch_cpu:
            first, last = address // page, (address + size - 1) // page
            f.seek(first * 8)
            entries = f.read((last - first + 1) * 8)
            pages += len(entries) // 8
            missing += sum(not entries[i + 7] & 0x80 for i in range(0, len(entries), 8))
    assert pages > 2000
    assert missing <= pages // 20, (
        f"{missing} of {pages} pages of libtorch_cpu's unwind tables are not mapped"
    )


def test_unwind_tables_are_found_where_each_library_is_loaded():
    """Every library's tables are where _unwind_tables says: the bytes at each address are the file's
    bytes at the section's offset (read through /proc/self/mem, so a wrong address fails, not crashes)."""
    import torch  # noqa: F401 - loads libtorch_cpu and its neighbours

    from grader import worker

    tables = worker._unwind_tables()
    assert len({t[0] for t in tables}) > 5, tables[:3]
    mem = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for path, section, address, size, offset in tables:
            n = min(size, 4096)
            with open(path, "rb") as f:
                f.seek(offset)
                expected = f.read(n)
            try:
                got = os.pread(mem, n, address)
            except OSError as e:
                pytest.fail(f"{path} {section}: {address:#x} is not mapped ({e})")
            assert got == expected, (path, section)
    finally:
        os.close(mem)
    assert worker._advise(tables, worker.MADV_WILLNEED) == sum(t[3] for t in tables)
