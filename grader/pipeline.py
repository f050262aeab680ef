"""The data's journey, composed: load submissions -> make cases -> run in workers -> score -> report.

The zygote is forked first, before the plan's reference or the secret is touched, so no worker can
find them in its memory. Hidden cases come from the on-disk cache when their sources are unchanged
(grader.cache), else they are built once per run. Submissions are graded concurrently (one worker each,
`workers` at a time) on this machine, or spread over a Dask cluster (grader.distributed); either way
each report is written here, by the trusted process, as soon as its submission is done, so memory stays
flat in the class size and an interrupted run resumes where it stopped.

    grade(assignment, folder, out, GradeOptions(...))   instructors: every submission, reports on disk
    check(assignment, path)                              students: public cases only
    grade_submission(zygote, plan, case_sets, sub, run_options) -> SubmissionResult
    grade_one(zygote, plan, cases, sub, run_options, case_key) -> (results.json dict, feedback Markdown)
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import queue
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import banned as banned_scan
from grader import cases as cases_mod
from grader import report, runner
from grader.cases import CaseSet
from grader.errors import ConfigError, InputError
from grader.loader import Submission, discover
from grader.plan import Plan, load_plan
from grader.runner import RunOptions, RunResult, run_submission
from grader.score import SubmissionResult, score_submission
from grader.worker import Zygote

EXECUTORS = ("local", "dask")
Progress = Callable[[int, int, str], None]  # (done, total, label: "12.3/s student")


@dataclass
class GradeOptions:
    workers: int = 2
    timeout: float = 10.0
    memory_mb: int = 4096
    secret_path: Path | None = None
    fresh: bool = False
    visibilities: tuple[str, ...] = ("hidden",)
    cache: bool = True  # reuse prepared hidden cases from the on-disk cache (grader.cache)
    cache_dir: Path | None = None  # default ./.seqgrade/cache
    executor: str = "local"  # "local" | "dask"
    scheduler: str | None = None  # the Dask scheduler's address, e.g. tcp://10.0.0.5:8786
    students: tuple[str, ...] = ()  # grade only these student ids (the gradebook still lists everyone graded)
    cpu_seconds: float | None = None  # CPU-time cap per worker (default: the runner's)
    disk_mb: int | None = None  # size of the worker's private directory (default: the runner's)


@dataclass
class GradeRun:
    plan: Plan
    results: list[dict[str, Any]]
    graded: int
    skipped: int
    seconds: float
    secret_note: str
    out: Path
    cache_note: str = ""


def start_zygote() -> Zygote:
    """Fork the zygote now: call before loading any reference, plan or secret."""
    return Zygote().start()


# ----------------------------------------------------------------------------------------------- cases


def prepare_case_sets(
    plan: Plan,
    visibilities: Iterable[str],
    secret: bytes | None,
    *,
    cache: bool = True,
    cache_dir: Path | None = None,
) -> tuple[list[CaseSet], str]:
    """The case sets to grade on, and a line saying where the hidden ones came from."""
    from grader import cache as cache_mod

    sets, notes = [], []
    for v in visibilities:
        if v == "public":
            sets.append(cases_mod.load_public(plan))
        elif cache:
            cs, how = cache_mod.load_or_build(plan, v, secret, root=cache_dir)
            sets.append(cs)
            notes.append(
                f"{v} cases: " + {"hit": "from the cache", "built": "built and cached"}.get(how, how)
            )
        else:
            sets.append(cases_mod.build(plan, v, secret))
            notes.append(f"{v} cases: built (cache off)")
    return sets, "; ".join(notes)


def merge(plan: Plan, case_sets: list[CaseSet]) -> CaseSet:
    """One CaseSet holding every item of `case_sets`, in order (the runner takes one)."""
    if len(case_sets) == 1:
        return case_sets[0]
    return CaseSet(
        plan, "+".join(c.visibility for c in case_sets), tuple(i for c in case_sets for i in c.items)
    )


# ------------------------------------------------------------------------------------------ one submission


def grade_submission(
    zygote: Zygote, plan: Plan, case_sets: list[CaseSet], sub: Submission, options: RunOptions
) -> SubmissionResult:
    """Grade one submission against one or more case sets (public and/or hidden)."""
    return _grade(zygote, plan, merge(plan, case_sets), sub, options)[0]


def _grade(
    zygote: Zygote, plan: Plan, cases: CaseSet, sub: Submission, options: RunOptions
) -> tuple[SubmissionResult, RunResult]:
    run = run_submission(zygote, plan, cases, sub, options)
    return _score(plan, cases, sub, run), run


def _score(plan: Plan, cases: CaseSet, sub: Submission, run: RunResult) -> SubmissionResult:
    source = sub.files.get(f"{plan.module}.py", b"").decode("utf-8", "replace")
    bans = {fn.name: tuple(plan.banned) + tuple(fn.banned) for fn in plan.functions}
    static = banned_scan.scan(source, [f.name for f in plan.functions], bans)
    notes = sub.notes + ((sub.problem,) if sub.problem and not run.import_error else ())
    return score_submission(sub.student, plan, cases, run, static_banned=static, notes=notes)


def grade_one(
    zygote: Zygote, plan: Plan, cases: CaseSet, sub: Submission, options: RunOptions, case_key: str
) -> tuple[dict[str, Any], str]:
    """One submission's report, as written to disk: (results.json dict, feedback Markdown).

    The local and the Dask executors both produce their reports with this (via _report), so they agree.
    """
    return _report(plan, cases, sub, run_submission(zygote, plan, cases, sub, options), case_key)


def _report(
    plan: Plan, cases: CaseSet, sub: Submission, run: RunResult, case_key: str
) -> tuple[dict[str, Any], str]:
    result = _score(plan, cases, sub, run)
    data = report.to_results_json(result)
    data["extra_data"]["case_key"] = case_key
    data["extra_data"]["source_sha256"] = source_hash(sub)
    data["extra_data"]["origin"] = sub.origin
    data["extra_data"]["protections"] = list(run.protections)  # confinement layers active in the worker
    data["extra_data"]["student_seconds"] = round(
        sum(r.seconds for replies in run.replies.values() for r in replies), 4
    )
    return data, report.feedback_markdown(result)


def grade_local(
    zygote: Zygote,
    plan: Plan,
    cases: CaseSet,
    subs: Iterable[Submission],
    options: RunOptions,
    *,
    workers: int,
    case_key: str,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Reports in completion order, `workers` submissions running at a time.

    Each slot thread takes its next submission itself as soon as its worker is done: the caller's own
    work between reports (writing them, with an fsync each) never leaves a slot idle. Judging, scoring and
    rendering happen on one more thread. At most 4 x workers submissions are between being taken and
    being handed to the caller, so a slow caller or a slow scorer never makes results pile up in memory.
    """
    todo = iter(subs)
    workers = max(1, workers)
    take = threading.Lock()
    room = threading.Semaphore(4 * workers)  # one permit per submission taken and not yet handed over
    stop = threading.Event()
    finished: queue.SimpleQueue[Future | None] = queue.SimpleQueue()  # a report's future; None: a slot ended

    def slot(scorer: ThreadPoolExecutor) -> None:
        try:
            while True:
                room.acquire()
                with take:
                    sub = None if stop.is_set() else next(todo, None)
                if sub is None:
                    return
                run = run_submission(zygote, plan, cases, sub, options)
                finished.put(scorer.submit(_report, plan, cases, sub, run, case_key))
        except BaseException as e:  # our fault (the zygote died, the list of submissions failed): raised
            failed: Future = Future()
            failed.set_exception(e)
            finished.put(failed)
        finally:
            finished.put(None)

    with (  # on the way out the slots end first: none is left to hand the scorer a submission
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqgrade-score") as scorer,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seqgrade-slot") as slots,
    ):
        running = 0
        try:
            for _ in range(workers):
                slots.submit(slot, scorer)
                running += 1
            while running:
                fut = finished.get()
                if fut is None:
                    running -= 1
                    continue
                out = fut.result()
                room.release()
                yield out
        finally:
            stop.set()  # an error, Ctrl-C or a caller that stopped early: slots take nothing more (those
            # running finish their submission first)
            for _ in range(workers):
                room.release()  # a slot waiting for room wakes up, sees stop and ends


# ----------------------------------------------------------------------------------------------- a class


def grade(
    assignment: str,
    submissions: Path,
    out: Path,
    options: GradeOptions,
    *,
    progress: Progress | None = None,
    zygote: Zygote | None = None,
) -> GradeRun:
    if options.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {options.executor!r} (choose from {', '.join(EXECUTORS)})")
    if options.executor == "dask" and not options.scheduler:
        raise ConfigError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    local = options.executor == "local"
    own_zygote = zygote is None and local
    if own_zygote:
        zygote = start_zygote()
    start = time.monotonic()
    unzip_dir = Path(tempfile.mkdtemp(prefix="seqgrade-in-"))
    frozen = False
    try:
        plan = load_plan(assignment)
        subs = discover(Path(submissions), plan.module, workdir=unzip_dir)
        _unique_ids(subs)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        clashes = report.case_clashes(out, [s.student for s in subs])
        if clashes:
            names = "; ".join(" and ".join(repr(x) for x in g) for g in clashes)
            raise InputError(
                f"{names} would share one report file in {out}, which does not tell upper from lower case: "
                "rename one of the submissions, or pass an --out folder on a case-sensitive file system"
            )
        secret, note = cases_mod.load_secret(options.secret_path)
        key = f"{plan.name}:{cases_mod.fingerprint(secret)}:{','.join(options.visibilities)}:{grading_code(plan)}"
        case_sets, cache_note = prepare_case_sets(
            plan, options.visibilities, secret, cache=options.cache, cache_dir=options.cache_dir
        )
        if options.students:
            unknown = sorted(set(options.students) - {s.student for s in subs})
            if unknown:
                raise ConfigError(f"no submission for {', '.join(unknown)} in {submissions}")
            subs = [s for s in subs if s.student in set(options.students)]
        todo, skipped = [], 0
        for s in subs:
            # --student names whom to regrade: those are graded again even when nothing changed
            prev = (
                None
                if options.fresh or options.students
                else report.read_student(out / f"{report.file_stem(s.student)}.json")
            )
            extra = (prev or {}).get("extra_data", {})
            if extra.get("case_key") == key and extra.get("source_sha256") == source_hash(s):
                skipped += 1  # graded with these cases and this exact code: keep the report
            else:
                todo.append(s)
        run_opts = RunOptions(timeout=options.timeout, memory_mb=options.memory_mb)
        if options.cpu_seconds is not None:
            run_opts.cpu_seconds = options.cpu_seconds
        if options.disk_mb is not None:
            run_opts.disk_mb = options.disk_mb
        if local:
            assert zygote is not None
            stream = grade_local(
                zygote, plan, merge(plan, case_sets), todo, run_opts, workers=options.workers, case_key=key
            )
        else:
            from grader import distributed

            stream = distributed.grade_dask(
                options.scheduler or "",
                plan,
                case_sets,
                todo,
                run_opts,
                workers=options.workers,
                case_key=key,
            )
        # Everything alive now (torch's modules, the cases) outlives the run: frozen, full collections
        # during it walk only what grading allocates (6 of them took 290 ms of 400 gated submissions).
        # Not when the caller froze objects itself: unfreezing would undo that.
        frozen = gc.get_freeze_count() == 0
        if frozen:
            gc.freeze()
        meter = Meter(len(todo))
        written: dict[str, dict[str, Any]] = {}  # file name -> the gradebook's part (a few hundred bytes)
        with contextlib.closing(stream):  # an error here (a full disk, Ctrl-C) stops the slots too
            for data, markdown in stream:
                stem = report.file_stem(data["extra_data"]["student"])
                report.atomic_write(out / f"{stem}.md", markdown)
                report.atomic_write(out / f"{stem}.json", report.json_dumps(data))
                written[f"{stem}.json"] = json.loads(json.dumps(_slim(data)))  # as if read back from the file
                meter.tick()
                if progress:
                    progress(meter.done, meter.total, f"{meter.rate:.1f}/s {data['extra_data']['student']}")
        if local:  # the last workers were ended without waiting: the run is over once they are gone
            runner.SLOTS.settle()
        results = []  # everyone graded into OUT, this run or before; this run's reports are not read back
        for path in report.report_files(out):
            slim = written.get(path.name)
            if slim is None:
                data = report.read_report(path)
                if data is None:
                    continue
                slim = _slim(data)
            results.append(slim)
        report.write_gradebook(out, results)
        return GradeRun(plan, results, len(todo), skipped, time.monotonic() - start, note, out, cache_note)
    finally:
        if frozen:
            gc.unfreeze()
        shutil.rmtree(unzip_dir, ignore_errors=True)
        if own_zygote and zygote is not None:
            zygote.stop()


def grading_code(plan: Plan) -> str:
    """12 hex digits over the code that decides a grade: the modules behind the plan's cases and checks
    (grader.cache.source_digests) and the scoring. A report graded by other code is not resumed."""
    from grader import cache, compare, score

    h = hashlib.sha256()
    for name, digest in cache.source_digests(plan):
        h.update(f"{name}={digest}\0".encode())
    for module in (banned_scan, compare, score, report):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:12]


class Meter:
    """Progress of a long run: done/total, the recent rate (per second, last 50 submissions) and the ETA."""

    def __init__(self, total: int, window: int = 50) -> None:
        self.total, self.done = total, 0
        self.start = time.monotonic()
        self.times: deque[float] = deque([self.start], maxlen=window + 1)

    def tick(self) -> None:
        self.done += 1
        self.times.append(time.monotonic())

    @property
    def rate(self) -> float:
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0

    @property
    def eta(self) -> float:
        return (self.total - self.done) / self.rate if self.rate else float("inf")


def _slim(data: dict[str, Any]) -> dict[str, Any]:
    """What the gradebook and summary need; per-student details stay on disk, not in memory."""
    extra = data["extra_data"]
    return {
        "score": data["score"],
        "max_score": data["max_score"],
        "tests": [
            {"name": t["name"], "status": t["status"]} for t in data["tests"] if t["status"] != "passed"
        ],
        "extra_data": {
            "student": extra["student"],
            "functions": extra["functions"],
            "import_error": extra["import_error"],
            "protections": extra.get("protections", []),
        },
    }


def source_hash(sub: Submission) -> str:
    """A hash of everything the worker would receive: a resubmission is regraded, an unchanged one is not."""
    h = hashlib.sha256()
    for name in sorted(sub.files):
        h.update(name.encode() + b"\0" + hashlib.sha256(sub.files[name]).digest())
    h.update(sub.problem.encode())
    return h.hexdigest()


def _unique_ids(subs: list[Submission]) -> None:
    seen: dict[str, int] = {}
    for i, s in enumerate(subs):
        n = seen.get(s.student, 0)
        seen[s.student] = n + 1
        if n:
            subs[i] = Submission(f"{s.student}~{n + 1}", s.files, s.origin, s.notes, s.problem)


# ----------------------------------------------------------------------------------------------- self-check


def check(
    assignment: str, path: Path, *, timeout: float = 10.0, zygote: Zygote | None = None
) -> SubmissionResult:
    """A student's self-check: public cases only, no secret, no reference needed."""
    own_zygote = zygote is None
    zygote = zygote or start_zygote()
    unzip_dir = Path(tempfile.mkdtemp(prefix="seqgrade-in-"))
    try:
        plan = load_plan(assignment)
        path = Path(path)
        if plan.graded_files and path.is_file() and path.suffix in (".py", ".ipynb"):
            path = path.parent  # the weights lie beside the code: check the student's folder
        subs = discover(path, plan.module, workdir=unzip_dir)
        if len(subs) != 1:
            from grader.errors import InputError

            raise InputError(f"{path}: expected one submission, found {len(subs)}")
        public = cases_mod.load_public(plan)
        return grade_submission(zygote, plan, [public], subs[0], RunOptions(timeout=timeout))
    finally:
        shutil.rmtree(unzip_dir, ignore_errors=True)
        if own_zygote:
            zygote.stop()
