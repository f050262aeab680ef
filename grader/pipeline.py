"""The data's journey, composed: load submissions -> make cases -> run in workers -> score -> report.

The zygote is forked first, before the plan's reference or the secret is touched, so no worker can
find them in its memory. Submissions are graded concurrently (one worker each, `workers` at a time);
each report is written as soon as its submission is done, so memory stays flat in the class size and
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import banned as banned_scan
from grader import cases as cases_mod
from grader import report
from grader.cases import CaseSet
from grader.loader import Submission, discover
from grader.plan import Plan, load_plan
from grader.runner import RunOptions, run_submission
from grader.score import SubmissionResult, score_submission
from grader.worker import Zygote


@dataclass
class GradeOptions:
    workers: int = 2
    timeout: float = 10.0
    memory_mb: int = 4096
    secret_path: Path | None = None
    fresh: bool = False
    visibilities: tuple[str, ...] = ("hidden",)


@dataclass
class GradeRun:
    plan: Plan
    results: list[dict[str, Any]]
    graded: int
    skipped: int
    seconds: float
    secret_note: str
    out: Path


def start_zygote() -> Zygote:
    """Fork the zygote now: call before loading any reference, plan or secret."""
    return Zygote().start()


def grade_submission(
    zygote: Zygote, plan: Plan, case_sets: list[CaseSet], sub: Submission, options: RunOptions
) -> SubmissionResult:
    """Grade one submission against one or more case sets (public and/or hidden)."""
    from grader.cases import CaseSet as _CS

    merged = _CS(plan, "+".join(c.visibility for c in case_sets), tuple(i for c in case_sets for i in c.items))
    run = run_submission(zygote, plan, merged, sub, options)
    source = sub.files.get(f"{plan.module}.py", b"").decode("utf-8", "replace")
    bans = {fn.name: tuple(plan.banned) + tuple(fn.banned) for fn in plan.functions}
    static = banned_scan.scan(source, [f.name for f in plan.functions], bans)
    return score_submission(sub.student, plan, merged, run, static_banned=static, notes=sub.notes)


def grade(
    assignment: str,
    submissions: Path,
    out: Path,
    options: GradeOptions,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    zygote: Zygote | None = None,
) -> GradeRun:
    own_zygote = zygote is None
    zygote = zygote or start_zygote()
    start = time.monotonic()
    unzip_dir = Path(tempfile.mkdtemp(prefix="seqgrade-in-"))
    try:
        plan = load_plan(assignment)
        subs = discover(Path(submissions), plan.module, workdir=unzip_dir)
        _unique_ids(subs)
        secret, note = cases_mod.load_secret(options.secret_path)
        key = f"{plan.name}:{cases_mod.fingerprint(secret)}:{','.join(options.visibilities)}"
        case_sets = [
            cases_mod.build(plan, v, secret) if v == "hidden" else cases_mod.load_public(plan)
            for v in options.visibilities
        ]
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        todo, done = [], []
        for s in subs:
            prev = None if options.fresh else report.read_student(out / f"{report.file_stem(s.student)}.json")
            if prev and prev.get("extra_data", {}).get("case_key") == key:
                done.append(prev)
            else:
                todo.append(s)
        run_opts = RunOptions(timeout=options.timeout, memory_mb=options.memory_mb)
        results = list(done)
        finished = [0]

        def one(sub: Submission) -> dict[str, Any]:
            r = grade_submission(zygote, plan, case_sets, sub, run_opts)
            data = report.to_results_json(r)
            data["extra_data"]["case_key"] = key
            stem = report.file_stem(r.student)
            report.atomic_write(out / f"{stem}.md", report.feedback_markdown(r))
            report.atomic_write(out / f"{stem}.json", report.json_dumps(data))
            return data

        with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
            for data in pool.map(one, todo):
                finished[0] += 1
                results.append(_slim(data))
                if progress:
                    progress(finished[0], len(todo), data["extra_data"]["student"])
        report.write_gradebook(out, results)
        return GradeRun(plan, results, len(todo), len(done), time.monotonic() - start, note, out)
    finally:
        shutil.rmtree(unzip_dir, ignore_errors=True)
        if own_zygote:
            zygote.stop()


def _slim(data: dict[str, Any]) -> dict[str, Any]:
    """What the gradebook and summary need; per-student details stay on disk, not in memory."""
    extra = data["extra_data"]
    return {
        "score": data["score"], "max_score": data["max_score"],
        "tests": [{"name": t["name"], "status": t["status"]} for t in data["tests"]],
        "extra_data": {"student": extra["student"], "functions": extra["functions"],
                       "import_error": extra["import_error"]},
    }


def _unique_ids(subs: list[Submission]) -> None:
    seen: dict[str, int] = {}
    for i, s in enumerate(subs):
        n = seen.get(s.student, 0)
        seen[s.student] = n + 1
        if n:
            subs[i] = Submission(f"{s.student}~{n + 1}", s.files, s.origin, s.notes, s.problem)


def check(assignment: str, path: Path, *, timeout: float = 10.0, zygote: Zygote | None = None) -> SubmissionResult:
    """A student's self-check: public cases only, no secret, no reference needed."""
    own_zygote = zygote is None
    zygote = zygote or start_zygote()
    unzip_dir = Path(tempfile.mkdtemp(prefix="seqgrade-in-"))
    try:
        plan = load_plan(assignment)
        subs = discover(Path(path), plan.module, workdir=unzip_dir)
        if len(subs) != 1:
            from grader.errors import InputError

            raise InputError(f"{path}: expected one submission, found {len(subs)}")
        public = cases_mod.load_public(plan)
        return grade_submission(zygote, plan, [public], subs[0], RunOptions(timeout=timeout))
    finally:
        shutil.rmtree(unzip_dir, ignore_errors=True)
        if own_zygote:
            zygote.stop()
