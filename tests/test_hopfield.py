"""The hopfield assignment: exact check kinds on stand-in replies, the plan's cases, real submissions graded.

Each buggy file in tests/submissions/hopfield/ holds one classic mistake; grading must take points away in
the check that names it and nowhere else, and the correct files (two styles) must get full marks.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from assignments.hopfield import plan as hp
from grader import cases
from grader.exact import FixedPoints, NonIncreasing, OutputCheck, StableUnderSignRule
from grader.plan import Call, Reply
from grader.wire import Received
from reference import hopfield as ref

SUBMISSIONS = Path(__file__).parent / "submissions" / "hopfield"
PLAN = hp.PLAN


def received(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return Received(tree.detach().numpy().copy(), "tensor")
    if isinstance(tree, (tuple, list)):
        return type(tree)(received(x) for x in tree)
    return tree


def answer(student, calls: list[Call]) -> list[Reply]:
    """A stand-in worker: call the student's function on copies of the args."""
    out = []
    for c in calls:
        args = [a.clone() if isinstance(a, torch.Tensor) else a for a in c.args]
        try:
            out.append(Reply(value=received(student(*args))))
        except Exception as e:
            out.append(Reply(failure="exception", error=f"{e.__class__.__name__}: {e}"))
    return out


def judge(fn_name: str, check, student, *, params: dict | None = None, dtype: str = "float64", seed: int = 0):
    fn = PLAN.function(fn_name)
    case = cases.make_case(fn, "hidden", 0, params or fn.hidden[0], dtype, seed)
    calls, expected = check.prepare(
        PLAN, fn, case, PLAN.reference_of(fn), torch.Generator().manual_seed(seed)
    )
    return check.judge(fn, case, expected, answer(student, calls))


# ----------------------------------------------------------------------------------------------- check kinds


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exact_output_check_passes_reference_and_fails_one_flip(dtype):
    check = OutputCheck("final state exact", 0)
    assert judge("recall", check, ref.recall, dtype=dtype).ok

    def one_flip(*args):
        s, E = ref.recall(*args)
        s[3] = -s[3]
        return s, E

    c = judge("recall", check, one_flip, dtype=dtype)
    assert not c.ok and "s: max abs error 2 at [3]" in c.message and "1 of 32 elements" in c.message


def test_exact_check_names_wrong_dtype_and_arity():
    check = OutputCheck("final state exact", 0)
    c = judge("recall", check, lambda *a: (ref.recall(*a)[0].long(), ref.recall(*a)[1]))
    assert not c.ok and "dtype torch.int64, expected torch.float64" in c.message
    c = judge("recall", check, lambda *a: ref.recall(*a)[0])
    assert not c.ok and "expected a tuple of 2" in c.message
    c = judge("recall", check, lambda *a: 1 / 0)
    assert not c.ok and "ZeroDivisionError" in c.message


def test_energy_trace_within_float_tolerance_only():
    check = OutputCheck("energy trace", 1, exact=False)
    assert judge("recall", check, lambda *a: (ref.recall(*a)[0], ref.recall(*a)[1] + 1e-12)).ok
    c = judge("recall", check, lambda *a: (ref.recall(*a)[0], ref.recall(*a)[1] + 1e-3))
    assert not c.ok and "energies: max abs error" in c.message


def test_non_increasing_judges_the_students_own_trace():
    check = NonIncreasing("energy never increases", 1)
    assert judge("recall", check, ref.recall).ok

    def bump(*args):
        s, E = ref.recall(*args)
        E[5] = E[4] + 1.0
        return s, E

    c = judge("recall", check, bump)
    assert not c.ok and "increases at update 5" in c.message
    c = judge("recall", check, lambda *a: (ref.recall(*a)[0], ref.recall(*a)[1][None]))
    assert not c.ok and "expected a 1-D tensor" in c.message


def test_fixed_points_check():
    check = FixedPoints("fixed points", probes="patterns", state_arg="s0", zero_args=("b",))
    assert judge("recall", check, ref.recall).ok
    c = judge("recall", check, lambda W, b, s0, o, m: (-s0, ref.recall(W, b, s0, o, m)[1]))
    assert not c.ok and "stored pattern 0 is not a fixed point" in c.message


def test_stable_under_sign_rule_accepts_scaled_weights_only():
    check = StableUnderSignRule("patterns stable", patterns_arg="patterns")
    params = {"P": 3, "N": 40}
    assert judge("hebbian_weights", check, ref.hebbian_weights, params=params).ok
    assert judge("hebbian_weights", check, lambda X: ref.hebbian_weights(X) / 40, params=params).ok
    c = judge("hebbian_weights", check, lambda X: -ref.hebbian_weights(X), params=params)
    assert not c.ok and "is not a fixed point of the returned weights" in c.message
    c = judge("hebbian_weights", check, lambda X: X @ X.T, params=params)
    assert not c.ok and "expected a tensor of shape (40, 40)" in c.message


# ----------------------------------------------------------------------------------------------- the plan


def test_plan_variant_rule_is_the_reference():
    for seed in range(10):
        inputs = hp.make_recall(
            torch.Generator().manual_seed(seed), hp.RECALL_HIDDEN[seed % 6], torch.float64
        )
        args = (inputs["W"], inputs["b"], inputs["s0"], inputs["order"], inputs["max_sweeps"])
        s, _ = ref.recall(*args)
        got = hp.variant_state(*(a.numpy() for a in args[:3]), args[3].tolist(), args[4])
        assert np.array_equal(got, s.numpy())


def test_cases_are_deterministic_and_secret_dependent():
    fn = PLAN.function("recall")
    a = cases.make_case(fn, "hidden", 0, fn.hidden[0], "float32", 7).inputs
    b = cases.make_case(fn, "hidden", 0, fn.hidden[0], "float32", 7).inputs
    c = cases.make_case(fn, "hidden", 0, fn.hidden[0], "float32", 8).inputs
    assert torch.equal(a["s0"], b["s0"]) and torch.equal(a["order"], b["order"])
    assert not torch.equal(a["W"], c["W"])
    assert a["W"].dtype == torch.float32 and a["order"].dtype == torch.int64


# ----------------------------------------------------------------------------------------------- graded files

# file -> the check kinds that must fail (every other check must pass)
EXPECTED = {
    "correct_loops.py": set(),
    "correct_incremental.py": set(),
    "bug_diagonal.py": {"hebbian_weights:weights exact"},
    "bug_scaled.py": {"hebbian_weights:weights exact"},
    "bug_no_half.py": {"energy:forward", "recall:energy trace", "recall:stored patterns are fixed points"},
    "bug_sign_zero.py": {
        "recall:final state exact",
        "recall:energy trace",
        "recall:stored patterns are fixed points",
    },
    "bug_keep_on_tie.py": {"recall:final state exact", "recall:energy trace"},
    "bug_order.py": {"recall:final state exact", "recall:energy trace"},
    "bug_synchronous.py": {
        "recall:final state exact",
        "recall:energy trace",
        "recall:energy never increases",
    },
    "bug_quiet_sweep.py": {"recall:energy trace"},
}
MUST_FAIL_EVERY_HIDDEN_STATE = {"bug_sign_zero.py", "bug_keep_on_tie.py", "bug_synchronous.py"}


@pytest.fixture(scope="module")
def graded():
    from grader.loader import load_entry
    from grader.pipeline import grade_submission, start_zygote
    from grader.runner import RunOptions

    zygote = start_zygote()
    try:
        sets = [cases.build(PLAN, "hidden", b"test-secret"), cases.load_public(PLAN)]
        out = {}
        for f in sorted(SUBMISSIONS.glob("*.py")):
            sub = load_entry(f, PLAN.module, Path("/tmp"))
            out[f.name] = grade_submission(zygote, PLAN, sets, sub, RunOptions(timeout=20))
        return out
    finally:
        zygote.stop()


def test_every_submission_file_has_an_expectation():
    assert {f.name for f in SUBMISSIONS.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_submission_loses_points_in_the_right_checks(graded, name):
    result = graded[name]
    failed = collections.Counter(f"{t.function}:{t.kind}" for t in result.tests if not t.passed)
    must = EXPECTED[name]
    assert set(failed) <= must, f"{name} failed unexpected checks: {dict(failed)}"
    # the mistake must cost points in its main check on most hidden cases
    for kind in must:
        hidden_fails = [
            t
            for t in result.tests
            if f"{t.function}:{t.kind}" == kind and not t.passed and t.visibility != "visible"
        ]
        assert hidden_fails, f"{name}: {kind} never failed on a hidden case"
    if not must:
        assert result.score == result.max_score
    else:
        assert result.score < result.max_score


@pytest.mark.parametrize("name", sorted(MUST_FAIL_EVERY_HIDDEN_STATE))
def test_tie_and_sync_mistakes_change_every_exposing_hidden_case(graded, name):
    tests = [t for t in graded[name].tests if t.kind == "final state exact" and t.visibility != "visible"]
    no_ties = {"hidden, float64, N=32 P=4 max_sweeps=20", "hidden, float32, N=32 P=4 max_sweeps=20"}
    for t in tests:
        if name == "bug_synchronous.py" or t.case not in no_ties:
            assert not t.passed, f"{name} passed {t.name}"
