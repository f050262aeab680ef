"""Grade real `gated` submissions on the hidden cases: correct ones in several styles (chunk, per-gate
slices, the lectures' u = 1 - z form, vectorised einsum in float64) get full marks, and each classic
LSTM/GRU bug loses points in the check that names it while the other functions keep theirs.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, SUBMISSIONS, Bug, assert_caught, assert_full_marks, hidden_entry_count

from grader.plan import load_plan

PLAN = load_plan("gated")
FOLDER = SUBMISSIONS / "gated"
F64 = r"\(hidden, float64, "
NO_GRAD = "no gradient reaches"

BUGS: dict[str, Bug] = {
    "bug_lstm_gate_order": Bug(
        {"lstm_step": 0.0, "lstm_forward": 0.0},
        (("lstm_step: forward", "h_t: max abs error"), ("lstm_forward: forward", "hs: max abs error")),
    ),
    "bug_gru_z_swapped": Bug(
        {"gru_step": 0.0, "gru_forward": 0.0},
        (("gru_step: forward", "h_t: max abs error"), ("gru_forward: forward", "hs: max abs error")),
    ),
    "bug_gru_reset_before": Bug(
        {"gru_step": 0.0},
        (("gru_step: forward", "h_t: max abs error"), ("gru_step: gradients", "gradient wrong")),
    ),
    "bug_lstm_h_from_c_prev": Bug(
        {"lstm_step": 0.0, "lstm_forward": 0.0},
        (("lstm_step: forward", "h_t: max abs error"), ("lstm_forward: forward", "hs: max abs error")),
    ),
    "bug_gru_gate_order": Bug(
        {"gru_step": 0.0, "gru_forward": 0.0},
        (("gru_step: forward", "h_t: max abs error"), ("gru_forward: forward", "hs: max abs error")),
    ),
    "bug_gru_b_hn_outside_reset": Bug(
        {"gru_step": 0.0, "gru_forward": 0.0},
        (("gru_step: forward", "h_t: max abs error"), ("gru_step: gradients", "gradient wrong")),
    ),
    "bug_single_bias": Bug(
        {"lstm_step": 0.0, "lstm_forward": 0.0},
        (("lstm_step: forward", "h_t: max abs error"), ("lstm_forward: forward", "max abs error")),
    ),
    "bug_ignore_c0": Bug(
        {"lstm_forward": 0.0},
        (("lstm_forward: forward", "hs: max abs error"), ("lstm_forward: gradients", "gradient wrong")),
    ),
    "bug_gru_ignore_h0": Bug(
        {"gru_forward": 0.0},
        (("gru_forward: forward", "hs: max abs error"), ("gru_forward: gradients", "gradient wrong")),
    ),
    "bug_nn_lstm": Bug(
        {"lstm_forward": 0.0, "gru_step": 0.0},
        (
            ("lstm_forward: banned APIs", "lstm_forward uses torch.nn.LSTM"),
            ("gru_step: banned APIs", "gru_step uses torch.gru_cell"),
            ("gru_step: banned APIs", "forfeited"),
        ),
        passes=("lstm_forward: forward", "gru_step: forward", "gru_step: gradients"),
    ),
}

CORRECT = sorted(p.name for p in FOLDER.glob("correct_*.py"))


def test_every_bug_file_has_an_expectation():
    assert sorted(p.stem for p in FOLDER.glob("bug_*.py")) == sorted(BUGS)
    assert len(CORRECT) >= 3


@pytest.mark.parametrize("name", CORRECT)
def test_correct_styles_get_full_marks(grade_hidden, name):
    r = grade_hidden("gated", FOLDER / name)
    assert_full_marks(r)
    assert r.max_score == 10
    assert len(r.tests) == hidden_entry_count(PLAN)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bug_loses_points_in_the_right_check(grade_hidden, name):
    assert_caught(grade_hidden("gated", FOLDER / f"{name}.py"), BUGS[name])


def test_gru_bugs_are_caught_in_every_hidden_case(grade_hidden):
    """z/1-z and reset-before-W_hn differ from torch's GRU for any non-trivial inputs: no hidden case,
    batch of one or T = 1 included, may let them through."""
    for name, fn in (("bug_gru_z_swapped", "gru_forward"), ("bug_gru_reset_before", "gru_step")):
        r = grade_hidden("gated", FOLDER / f"{name}.py")
        forward = [t for t in r.tests if t.name.startswith(f"{fn}: forward")]
        assert len(forward) == len(PLAN.function(fn).hidden) * 2
        assert not any(t.passed for t in forward)


def test_examples_demo(grade_hidden):
    examples = ROOT / "examples" / "gated"
    assert grade_hidden("gated", examples / "correct.py").score == 10
    assert grade_hidden("gated", examples / "buggy.py").score < 10
    assert grade_hidden("gated", examples / "broken.py", timeout=1.0).score < 10
