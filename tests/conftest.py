"""Shared fixtures for grader-facing tests: one zygote per session, a fixed instructor secret, and a
`grade_hidden(assignment, path)` helper that grades one real submission on the hidden cases.

The zygote is forked once, at the start of the session (before any test runs tensor code), and every
test that grades shares it; hidden case sets are built once per assignment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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
