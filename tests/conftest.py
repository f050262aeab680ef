"""Shared fixtures for grader-facing tests: one zygote per session, a fixed instructor secret, and a
`grade_hidden(assignment, path)` helper that grades one real submission on the hidden cases.

The zygote is forked once, at the start of the session (before any test runs tensor code), and every
test that grades shares it; hidden case sets are built once per assignment.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grader.score import SubmissionResult

SECRET = "seqgrade-tests-fixed-secret"
SUBMISSIONS = Path(__file__).resolve().parent / "submissions"
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0  # seconds per call; no test submission is meant to come near it


@pytest.fixture(scope="session", autouse=True)
def fixed_secret() -> Iterator[str]:
    """$SEQGRADE_SECRET for the whole session, so no test creates ./.seqgrade/secret and cases repeat."""
    old = os.environ.get("SEQGRADE_SECRET")
    os.environ["SEQGRADE_SECRET"] = SECRET
    yield SECRET
    if old is None:
        os.environ.pop("SEQGRADE_SECRET", None)
    else:
        os.environ["SEQGRADE_SECRET"] = old


@pytest.fixture(scope="session")
def zygote():
    """One warmed zygote for the session: pass it as `zygote=` to grader.pipeline functions."""
    from grader import pipeline

    z = pipeline.start_zygote()
    yield z
    z.stop()


class _SharedZygote:
    """The session zygote, with stop() a no-op: handed to code that would start and stop its own."""

    def __init__(self, zygote):
        self._zygote = zygote

    def __getattr__(self, name):
        return getattr(self._zygote, name)

    def stop(self) -> None:
        pass


@pytest.fixture
def reuse_zygote(zygote, monkeypatch):
    """Make grader.pipeline.start_zygote() (and the command line's own starter) return the session zygote,
    so a command under test does not start (and wait for) a fresh interpreter of its own."""
    from grader import cli, pipeline

    monkeypatch.setattr(pipeline, "start_zygote", lambda: _SharedZygote(zygote))
    monkeypatch.setattr(cli, "_start_zygote", lambda: _SharedZygote(zygote))
    return zygote


@pytest.fixture(scope="session")
def hidden_cases(fixed_secret):
    """hidden_cases(assignment) -> the hidden CaseSet built from the fixed secret (cached per assignment)."""
    from grader import cases
    from grader.plan import load_plan

    cache = {}

    def get(assignment: str):
        if assignment not in cache:
            cache[assignment] = cases.build(load_plan(assignment), "hidden", SECRET.encode())
        return cache[assignment]

    return get


@pytest.fixture(scope="session")
def grade_hidden(zygote, hidden_cases) -> Iterator[Callable[..., SubmissionResult]]:
    """grade_hidden(assignment, path) -> SubmissionResult on the hidden cases (cached per path)."""
    from grader import pipeline
    from grader.loader import discover
    from grader.plan import load_plan
    from grader.runner import RunOptions

    workdir = Path(tempfile.mkdtemp(prefix="seqgrade-tests-"))
    cache: dict[tuple[str, str], SubmissionResult] = {}

    def grade(assignment: str, path: Path, *, timeout: float = TIMEOUT) -> SubmissionResult:
        key = (assignment, str(path))
        if key not in cache:
            plan = load_plan(assignment)
            subs = discover(Path(path), plan.module, workdir=workdir)
            assert len(subs) == 1, f"{path} holds {len(subs)} submissions"
            cache[key] = pipeline.grade_submission(
                zygote, plan, [hidden_cases(assignment)], subs[0], RunOptions(timeout=timeout)
            )
        return cache[key]

    yield grade
    shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- assertions


def function_scores(result: SubmissionResult) -> dict[str, float]:
    return {name: score for name, (score, _) in result.functions.items()}


def lost_functions(result: SubmissionResult) -> set[str]:
    """Functions that scored below their points."""
    return {name for name, (score, points) in result.functions.items() if score < points - 1e-9}


def entries(result: SubmissionResult, prefix: str) -> list:
    """Report entries whose name starts with `prefix`, e.g. "rnn_forward: gradients"."""
    return [t for t in result.tests if t.name.startswith(prefix)]


def describe(result: SubmissionResult) -> str:
    """The failing entries, for assertion messages."""
    lines = [f"{result.student}: {result.score:g}/{result.max_score:g}"]
    lines += [f"  FAIL {t.name}: {t.message}" for t in result.tests if not t.passed]
    if result.import_error:
        lines.append(f"  import error: {result.import_error}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Bug:
    """What grading a buggy file must show.

    lost: the functions that lose points -> their exact score, or None for "less than full"; every
          other function keeps all its points.
    fails: (entry-name regex, message fragment): at least one entry matches and fails, and every failing
           entry that matches says the fragment.
    passes: entry-name regexes whose entries (at least one) all pass: the bug is caught by the right check.
    """

    lost: dict[str, float | None]
    fails: tuple[tuple[str, str], ...]
    passes: tuple[str, ...] = field(default_factory=tuple)


def assert_caught(result: SubmissionResult, bug: Bug) -> None:
    """The bug costs exactly the functions in bug.lost, in the checks and with the messages it names."""
    why = describe(result)
    assert not result.import_error, why
    assert lost_functions(result) == set(bug.lost), why
    for fn, (score, points) in result.functions.items():
        want = bug.lost.get(fn, points)
        if want is None:
            assert score < points, why
        else:
            assert score == pytest.approx(want, abs=1e-6), f"{fn}: {score} != {want}\n{why}"
    failing = [t for t in result.tests if not t.passed]
    assert all(t.function in bug.lost for t in failing), why
    for pattern, fragment in bug.fails:
        matched = [t for t in failing if re.match(pattern, t.name)]
        assert matched, f"no failing entry matches {pattern!r}\n{why}"
        for t in matched:
            assert fragment in t.message, f"{t.name}: {t.message!r} lacks {fragment!r}"
    for pattern in bug.passes:
        matched = [t for t in result.tests if re.match(pattern, t.name)]
        assert matched, f"no entry matches {pattern!r}"
        assert all(t.passed for t in matched), why


def assert_full_marks(result: SubmissionResult) -> None:
    """Every entry passes, every entry is named after its function, and the score is the maximum."""
    why = describe(result)
    assert not result.import_error, why
    assert result.score == result.max_score, why
    assert all(t.passed for t in result.tests), why
    for t in result.tests:
        assert t.name.startswith(t.function + ": "), t.name


def hidden_entry_count(plan) -> int:
    """Entries a fully-run submission gets on the hidden cases: one per (case, dtype, check), plus
    one "inputs unchanged" per function."""
    return sum(len(fn.hidden) * len(fn.dtypes) * len(fn.checks) + 1 for fn in plan.functions)
