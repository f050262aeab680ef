"""Turn replies into points: judge every (function, case, check), apply the function-level gates
(banned APIs, inputs modified in place), and total. Pure: no I/O.

Each function's points are split equally over its check entries. Two gates apply to the whole function:
a function that modifies its inputs in place keeps only MUTATION_FACTOR of what it earned (the
"inputs unchanged" entry says which input), and a banned API used by a function (seen at run time in
the worker, or in its source by grader.banned) forfeits all of that function's points, with an entry
saying which API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from grader.cases import CaseSet
from grader.checks import Check
from grader.compare import Comparison
from grader.plan import Function, Plan, Reply
from grader.runner import RunResult

MUTATION_FACTOR = 0.5


@dataclass(frozen=True)
class CheckResult:
    """One report entry (a Gradescope 'test')."""

    name: str
    function: str
    kind: str
    visibility: str
    score: float
    max_score: float
    passed: bool
    message: str = ""
    case: str = ""


@dataclass(frozen=True)
class SubmissionResult:
    student: str
    assignment: str
    score: float
    max_score: float
    tests: tuple[CheckResult, ...]
    import_error: str = ""
    output: str = ""
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    functions: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # name -> (score, max)


def score_submission(
    student: str,
    plan: Plan,
    cases: CaseSet,
    run: RunResult,
    *,
    static_banned: Mapping[str, list[str]] | None = None,
    notes: tuple[str, ...] = (),
) -> SubmissionResult:
    static_banned = static_banned or {}
    tests: list[CheckResult] = []
    per_fn: dict[str, tuple[float, float]] = {}
    for fn in plan.functions:
        entries = _judge_function(fn, cases, run)
        replies = [
            r for i, p in enumerate(cases.items) if p.function == fn.name for r in run.replies.get(i, [])
        ]
        share = fn.points / len(entries) if entries else 0.0
        banned = sorted({b for r in replies for b in r.banned} | set(static_banned.get(fn.name, [])))
        list_args = {
            a
            for p in cases.items
            if p.function == fn.name
            for a, v in p.case.inputs.items()
            if isinstance(v, (list, tuple))
        }
        unchanged = _inputs_unchanged(fn, replies, list_args)
        factor = 0.0 if banned else (1.0 if unchanged.passed or not _returned(replies) else MUTATION_FACTOR)
        scored = [
            CheckResult(
                e.name,
                fn.name,
                e.kind,
                e.visibility,
                share * factor if e.passed else 0.0,
                share,
                e.passed,
                e.message,
                e.case,
            )
            for e in entries
        ]
        if _returned(replies) and fn.args:  # a function of no inputs (a weights file) has none to change
            scored.append(unchanged)
        if banned:
            scored.insert(
                0,
                CheckResult(
                    f"{fn.name}: banned APIs",
                    fn.name,
                    "banned",
                    "visible",
                    0.0,
                    0.0,
                    False,
                    f"{fn.name} uses {', '.join(banned)}, which this assignment bans for it: its "
                    f"{fn.points:g} points are forfeited. Implement it yourself with tensor operations.",
                ),
            )
        tests.extend(scored)
        per_fn[fn.name] = (sum(t.score for t in scored), float(fn.points))
    score = round(sum(t.score for t in tests), 6)
    return SubmissionResult(
        student=student,
        assignment=plan.name,
        score=score,
        max_score=plan.max_score,
        tests=tuple(tests),
        import_error=run.import_error,
        output=run.output,
        notes=notes,
        seconds=run.seconds,
        functions=per_fn,
    )


def _judge_function(fn: Function, cases: CaseSet, run: RunResult) -> list[CheckResult]:
    out = []
    for i, p in enumerate(cases.items):
        if p.function != fn.name:
            continue
        replies = run.replies.get(i) or [Reply(failure="skipped", error="not run")] * len(p.calls)
        check: Check = fn.checks[p.check] if p.check < len(fn.checks) else None  # type: ignore[assignment]
        try:
            verdict = (
                check.judge(fn, p.case, p.expected, list(replies)) if check else Comparison(False, "no check")
            )
        except Exception as e:  # a reply the judge cannot read is the student's failure, not a crash
            verdict = Comparison(
                False, f"the result could not be judged ({e.__class__.__name__}: {str(e)[:200]})"
            )
        name = f"{fn.name}: {p.kind} ({p.case.title})"
        vis = "visible" if p.case.visibility == "public" else "after_published"
        out.append(
            CheckResult(name, fn.name, p.kind, vis, 0.0, 0.0, verdict.ok, verdict.message, p.case.title)
        )
    return out


def _returned(replies: list[Reply]) -> bool:
    return any(r.failure is None for r in replies)


def _inputs_unchanged(fn: Function, replies: list[Reply], list_args: set[str]) -> CheckResult:
    name = f"{fn.name}: inputs unchanged"
    returned = [r for r in replies if r.failure is None]
    changed = sorted({_arg_label(fn, m, list_args) for r in returned for m in r.mutated})
    if changed:
        return CheckResult(
            name,
            fn.name,
            "inputs",
            "visible",
            0.0,
            0.0,
            False,
            f"{fn.name} modified its input {', '.join(changed)} in place, so it keeps only "
            f"{MUTATION_FACTOR:.0%} of its points; work on new tensors (x = x + 1, not x += 1)",
        )
    return CheckResult(name, fn.name, "inputs", "visible", 0.0, 0.0, True)


def _arg_label(fn: Function, m: str, list_args: set[str]) -> str:
    """'2.0' -> 'W_hh'; '0.1' -> 'grads[1]' when argument 0 is a list."""
    parts = m.split(".")
    try:
        base = fn.args[int(parts[0])]
    except (ValueError, IndexError):
        return m
    return f"{base}[{parts[1]}]" if len(parts) > 1 and base in list_args else base
