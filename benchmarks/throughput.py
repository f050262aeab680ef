"""How fast `seqgrade grade` grades a class, against one fresh Python per submission; how it grows with N.

    python benchmarks/throughput.py [--assignments rnn gated] [--sizes 10 100 1000] [--workers 2]
                                    [--baseline 12]

For each assignment it writes a synthetic class of N submissions built from the examples and the test
submissions (60% correct in several styles, 25% buggy, 10% slow: correct but 2 ms of busy work per call,
5% not importable; each file unique), then in one run on this machine:

- grades it with the real CLI (`python -m grader.cli grade A DIR --workers W --fresh`) in a subprocess,
  sampling the memory of that process and every process under it (zygote, monitors, workers) every
  0.1 s: PSS (shared pages counted once) and RSS (shared pages counted in every process); where the
  machine lets us make a cgroup (root), the CPU time of that whole process tree is counted too, which
  other jobs on a busy machine do not distort the way they distort wall time;
- grades a sample of the same files with the baseline (benchmarks/baseline_one.py: a fresh Python that
  imports torch, prepares the cases and runs the same checks in-process), W processes at a time;
- times `seqgrade check A` on the example solution, and the case preparation cold and from the cache.

Printed: submissions per second, wall per submission, the student code's own time per submission (the
worker measures each call, with the backward pass through the student's graph for gradient checks, as
baseline_one.py does), the grader's overhead per submission beyond it (from wall time: W x wall / N -
student; from CPU time: CPU / N - student, split into the grading process's own CPU and the sandbox
side's: monitors, inits and workers), peak memory per N, and the ratios. Nothing is asserted: the figures
are for the reader (and the note in docs/SCALING.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SECRET = "benchmark-secret"
SLOW_MS = 2.0
ENV = {**os.environ, "SEQGRADE_SECRET": SECRET, "PYTHONPATH": str(ROOT)}


# ----------------------------------------------------------------------------------------------- a class


def sources(assignment: str) -> tuple[list[str], list[str]]:
    """(correct, buggy) sources for `assignment`; files that only time out are left out."""
    tests, examples = ROOT / "tests" / "submissions" / assignment, ROOT / "examples" / assignment
    correct = sorted(tests.glob("correct*.py")) + [examples / "correct.py"]
    buggy = sorted(tests.glob("bug_*.py")) + [examples / "buggy.py"]
    read = [p.read_text() for p in correct if p.is_file()], [p.read_text() for p in buggy if p.is_file()]
    hangs = re.compile(r"while True|time\.sleep|os\._exit|fork")
    return read[0], [s for s in read[1] if not hangs.search(s)]


def slow(source: str, functions: list[str]) -> str:
    wrap = "\n".join(f"{f} = _slow({f})" for f in functions)
    return (
        source
        + f"""

import time as _time


def _slow(f):
    def g(*args):
        end = _time.perf_counter() + {SLOW_MS / 1000!r}
        while _time.perf_counter() < end:
            pass
        return f(*args)

    return g


{wrap}
"""
    )


def make_class(assignment: str, n: int, folder: Path) -> list[str]:
    """N submission files in `folder`; returns their kinds in order."""
    from grader.plan import load_plan

    functions = [f.name for f in load_plan(assignment).functions]
    correct, buggy = sources(assignment)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = []
    for i in range(n):
        r = i % 20
        if r < 12:
            kind, body = "correct", correct[i % len(correct)]
        elif r < 17:
            kind, body = "buggy", buggy[i % len(buggy)]
        elif r < 19:
            kind, body = "slow", slow(correct[i % len(correct)], functions)
        else:
            kind, body = "broken", "def oops(:\n"
        (folder / f"s{i:04d}.py").write_text(f"# student {i:04d} ({kind})\n{body}")
        kinds.append(kind)
    return kinds


# ----------------------------------------------------------------------------------------------- measuring


class MemorySampler:
    """Peak PSS and RSS of a process and all its descendants, sampled every `period` seconds.

    Sampling is not free: the kernel walks each process's page tables to count PSS, which cost 8 to 16 ms
    of CPU per pass over a grading run's 8 processes (measured here); every 0.1 s that took about a tenth
    of a core from the run being measured. Every 0.5 s, from /proc/PID/smaps_rollup (the totals only),
    it takes about 2%."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid, self.period = pid, period
        self.peak_pss = self.peak_rss = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                return
            pss = rss = 0
            for p in procs:
                got = _rollup(p.pid)
                if got is None:
                    try:
                        info = p.memory_full_info()
                        got = getattr(info, "pss", info.rss), info.rss
                    except psutil.Error:
                        continue
                pss, rss = pss + got[0], rss + got[1]
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self.peak_procs = max(self.peak_procs, len(procs))
            self._stop.wait(self.period)


def _rollup(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) in bytes from /proc/PID/smaps_rollup; None where the kernel has no such file."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields = dict(line.split()[:2] for line in text.splitlines()[1:] if line.count(" ") >= 1)
    try:
        return int(fields["Pss:"]) * 1024, int(fields["Rss:"]) * 1024
    except (KeyError, ValueError):
        return None


class CpuGroup:
    """CPU time (user + system) of a process tree, from a cgroup of its own: cgroup v1's cpuacct or
    cgroup v2's cpu.stat. `available` is False where no cgroup can be made (not root, read-only)."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        self.v2 = False
        v1 = next(
            (p for p in (Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup/cpu,cpuacct")) if p.is_dir()),
            None,
        )
        root = v1 or (Path("/sys/fs/cgroup") if Path("/sys/fs/cgroup/cgroup.controllers").exists() else None)
        if root is None:
            return
        try:
            path = root / f"{name}-{os.getpid()}"
            path.mkdir(exist_ok=True)
            self.path, self.v2 = path, v1 is None
        except OSError:
            pass

    @property
    def available(self) -> bool:
        return self.path is not None

    def join(self) -> None:
        """Move the calling process (and its future children) into the group (a preexec_fn)."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float:
        if self.path is None:
            return float("nan")
        if self.v2:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        if self.path is not None:
            try:
                self.path.rmdir()  # its processes are gone
            except OSError:
                pass


def run_grade(assignment: str, folder: Path, out: Path, workers: int, cwd: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "grader.cli",
        "grade",
        assignment,
        str(folder),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--fresh",
        "--timeout",
        "10",
    ]
    cpu = CpuGroup("seqgrade-bench")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=cpu.join if cpu.available else None,  # noqa: PLW1509 - before the sampler thread starts
    )
    with MemorySampler(proc.pid) as mem:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    cpu_seconds = cpu.seconds()
    cpu.close()
    # the grading process's own CPU (and its zygote's: the zygote is its child, the zygote's own children
    # are reaped without a wait and so not counted): the rest of the cgroup's is the sandbox side
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    grading = (done.ru_utime + done.ru_stime) - (children.ru_utime + children.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"seqgrade grade failed ({proc.returncode}):\n{stdout}\n{stderr[-2000:]}")
    reports = [json.loads(p.read_text()) for p in out.glob("*.json")]
    return {
        "wall": wall,
        "cpu": cpu_seconds,
        "grading": grading,
        "n": len(reports),
        "peak_pss": mem.peak_pss,
        "peak_rss": mem.peak_rss,
        "procs": mem.peak_procs,
        "student": sum(r["extra_data"].get("student_seconds", 0.0) for r in reports),
        "scores": {r["extra_data"]["student"]: r["score"] for r in reports},
        "cache": next((ln for ln in stderr.splitlines() if "cases:" in ln), ""),
    }


def run_baseline(assignment: str, files: list[Path], workers: int, tmp: Path) -> dict:
    def one(path: Path) -> tuple[str, dict]:
        out = tmp / f"{path.stem}.baseline.json"
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "baseline_one.py"), assignment, str(path), str(out)],
            env=ENV,
            check=True,
            capture_output=True,
        )
        return path.stem, json.loads(out.read_text())

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = dict(pool.map(one, files))
    wall = time.perf_counter() - start
    return {
        "wall": wall,
        "n": len(files),
        "results": results,
        "student": sum(r["student_seconds"] for r in results.values()),
    }


def time_check(assignment: str, cwd: Path, repeats: int = 3) -> float:
    path = ROOT / "examples" / assignment / "correct.py"
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "grader.cli", "check", assignment, str(path)],
            cwd=cwd,
            env=ENV,
            check=True,
            capture_output=True,
        )
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def time_cases(assignment: str) -> tuple[float, float, float]:
    """(plain build, cold cache: build + store, warm cache: load) in seconds, in this process."""
    from grader import cache, cases
    from grader.plan import load_plan

    plan = load_plan(assignment)
    root = Path(tempfile.mkdtemp(prefix="seqgrade-bench-cache-"))
    try:
        t0 = time.perf_counter()
        cases.build(plan, "hidden", SECRET.encode())
        t1 = time.perf_counter()
        cache.load_or_build(plan, "hidden", SECRET.encode(), root=root)
        t2 = time.perf_counter()
        cache.load_or_build(plan, "hidden", SECRET.encode(), root=root)
        t3 = time.perf_counter()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return t1 - t0, t2 - t1, t3 - t2


# ----------------------------------------------------------------------------------------------- report


def _median(runs: list[dict]) -> dict:
    """The median run, by wall time."""
    return sorted(runs, key=lambda x: x["wall"])[len(runs) // 2]


def bench(
    assignment: str, sizes: list[int], workers: int, n_baseline: int, tmp: Path, repeat: int = 1
) -> None:
    from grader.cases import build
    from grader.plan import load_plan

    plan = load_plan(assignment)
    calls = sum(len(p.calls) for p in build(plan, "hidden", SECRET.encode()).items)
    print(
        f"\n== {assignment}: {calls} calls per submission, --workers {workers}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    cwd = tmp / f"{assignment}-cwd"  # holds .seqgrade/cache between the runs, like an instructor's folder
    cwd.mkdir()
    rows: dict[int, dict] = {}
    spreads: dict[int, list[float]] = {}
    header = (
        f"{'N':>6} {'wall s':>8} {'subs/s':>8} {'ms/sub':>8} {'student':>8} {'overhead':>9} "
        f"{'CPU':>8} {'CPU ovh':>8} {'peak PSS':>9} {'peak RSS':>9} {'procs':>6}"
    )
    print(
        header + "\n" + f"{'':>42}{'ms/sub':>8} {'ms/sub':>9} {'ms/sub':>8} {'ms/sub':>8} {'MB':>9} {'MB':>9}"
    )
    for n in sizes:
        folder = tmp / f"{assignment}-{n}"
        make_class(assignment, n, folder)
        runs = [
            run_grade(assignment, folder, tmp / f"{assignment}-{n}-out", workers, cwd) for _ in range(repeat)
        ]
        r = _median(runs)
        spreads[n] = [x["wall"] for x in runs]
        assert r["n"] == n, f"{r['n']} reports for {n} submissions"
        rows[n] = r
        per = r["wall"] / n
        student = r["student"] / n
        print(
            f"{n:>6} {r['wall']:>8.1f} {n / r['wall']:>8.1f} {1000 * per:>8.1f} {1000 * student:>8.1f} "
            f"{1000 * (per * workers - student):>9.1f} {1000 * r['cpu'] / n:>8.1f} "
            f"{1000 * (r['cpu'] / n - student):>8.1f} {r['peak_pss'] / 2**20:>9.0f} "
            f"{r['peak_rss'] / 2**20:>9.0f} {r['procs']:>6}"
        )
    print(
        "  ms/sub = wall / N (startup included); overhead = slot time per submission beyond the student's "
        f"code = {workers} x wall / N - student;\n  CPU = CPU time of every process of the run / N (startup "
        "included; nan: no cgroup here); CPU ovh = CPU - student"
    )
    big, small = max(sizes), min(sizes)
    overhead = 1000 * (rows[big]["wall"] / big * workers - rows[big]["student"] / big)
    cpu_overhead = 1000 * (rows[big]["cpu"] - rows[big]["student"]) / big
    if len(sizes) > 1:
        mid = sorted(sizes)[-2]
        marginal = (rows[big]["wall"] - rows[mid]["wall"]) / (big - mid)
        student = (rows[big]["student"] - rows[mid]["student"]) / (big - mid)
        cpu = (rows[big]["cpu"] - rows[mid]["cpu"]) / (big - mid)
        grading = (rows[big]["grading"] - rows[mid]["grading"]) / (big - mid)
        overhead = 1000 * (marginal * workers - student)
        cpu_overhead = 1000 * (cpu - student)
        print(
            f"  marginal cost N={mid}->{big}: {1000 * marginal:.1f} ms/sub wall, "
            f"{1000 * (marginal * workers - student):.1f} ms/sub overhead beyond student code; "
            f"CPU {1000 * cpu:.1f} ms/sub, {1000 * (cpu - student):.1f} ms/sub beyond student code "
            f"(the grading process {1000 * grading:.1f}, the workers and their hosts beyond the student's "
            f"code {1000 * (cpu - grading - student):.1f}); "
            f"wall x{rows[big]['wall'] / rows[small]['wall']:.1f} for N x{big // small}; "
            f"peak PSS {rows[small]['peak_pss'] / 2**20:.0f} -> {rows[big]['peak_pss'] / 2**20:.0f} MB"
        )

    folder = tmp / f"{assignment}-{big}"
    files = sorted(folder.glob("*.py"))
    sample = files[:: max(1, len(files) // n_baseline)][:n_baseline]
    baselines = [run_baseline(assignment, sample, workers, tmp) for _ in range(repeat)]
    b = _median(baselines)
    b_per = b["wall"] / b["n"]
    ours = rows[big]["wall"] / big
    agree = sum(abs(b["results"][p.stem]["score"] - rows[big]["scores"][p.stem]) < 1e-6 for p in sample)
    print(
        f"  baseline, a fresh Python per submission ({workers} at a time, {b['n']} of the same files): "
        f"{b['wall']:.1f} s, {1000 * b_per:.0f} ms/sub, {b['n'] / b['wall']:.2f} subs/s; "
        f"same score for {agree}/{b['n']}"
    )
    print(f"  seqgrade per-submission cost at N={big} = 1/{b_per / ours:.1f} of the baseline's")
    if repeat > 1:
        walls = ", ".join(f"{w:.1f}" for w in spreads[big])
        b_walls = ", ".join(f"{1000 * x['wall'] / x['n']:.0f}" for x in baselines)
        worst = min(x["wall"] for x in baselines) / b["n"] / (max(spreads[big]) / big)
        best = max(x["wall"] for x in baselines) / b["n"] / (min(spreads[big]) / big)
        print(
            f"  {repeat} runs: N={big} in {walls} s; baseline {b_walls} ms/sub; "
            f"ratio 1/{worst:.1f} (slowest run, fastest baseline) to 1/{best:.1f}"
        )
    build_s, cold_s, warm_s = time_cases(assignment)
    check_s = time_check(assignment, cwd)
    print(
        f"  case preparation: build {1000 * build_s:.0f} ms, cold cache (build + store) "
        f"{1000 * cold_s:.0f} ms, "
        f"warm cache {1000 * warm_s:.0f} ms"
    )
    print(
        f"  seqgrade check {assignment} (one student, torch import included): "
        f"{check_s:.2f} s wall (median of 3)"
    )
    print(
        f"  targets: 1/20 of baseline {'MET' if b_per / ours >= 20 else 'NOT MET'}; "
        f"N={big} < 120 s {'MET' if rows[big]['wall'] < 120 else 'NOT MET'} ({rows[big]['wall']:.0f} s); "
        f"peak < 1.5 GB {'MET' if rows[big]['peak_pss'] < 1.5 * 2**30 else 'NOT MET'}; "
        f"check < 3 s {'MET' if check_s < 3 else 'NOT MET'}; "
        f"overhead < 30 ms/sub {'MET' if overhead < 30 else 'NOT MET'} ({overhead:.0f} ms from wall, "
        f"{cpu_overhead:.0f} ms from CPU{', marginal' if len(sizes) > 1 else ''})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assignments", nargs="+", default=["rnn", "gated"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10, 100, 1000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline", type=int, default=12, help="submissions graded by the baseline")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each measurement; the median run is shown (this machine's"
        " run-to-run spread is about 10%%)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="seqgrade-bench-"))
    try:
        for a in args.assignments:
            bench(a, sorted(args.sizes), args.workers, args.baseline, tmp, max(1, args.repeat))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
