"""The sequences assignment graded end to end: real submission files through the worker, on hidden cases.

Correct files in two styles (loops with a running mask; per-row reversal by gather and masking by
multiplication) get full marks; each tests/submissions/sequences/bug_*.py holds one classic mistake and must
lose points exactly in the functions it breaks, in the check that names it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, SUBMISSIONS, describe, entries, lost_functions

NAME = "sequences"
CORRECT = [ROOT / "examples" / NAME / "correct.py", SUBMISSIONS / NAME / "correct_reverse_gather.py"]
BIDI, CLS = "bidirectional_forward", "classify"

# file -> ({functions that lose points}, failing check "function: kind", message fragment)
BUGS: dict[str, tuple[set[str], str, str]] = {
    "bug_backward_from_padded_end": (
        {BIDI, CLS},
        f"{BIDI}: padding invariance",
        "changes when the padding changes",
    ),
    "bug_padding_not_zeroed": ({BIDI}, f"{BIDI}: forward", "out"),
    "bug_backward_flips_padded_rows": ({BIDI, CLS}, f"{BIDI}: forward", "out"),
    "bug_state_not_frozen_at_padding": ({BIDI, CLS}, f"{BIDI}: padding invariance", "h_n changes"),
    "bug_mask_off_by_one": ({BIDI, CLS}, f"{BIDI}: padding invariance", "at the real position"),
    "bug_sorted_h_n_not_unsorted": ({BIDI, CLS}, f"{BIDI}: forward", "h_n"),
    "bug_h_n_grouped_by_direction": ({BIDI, CLS}, f"{BIDI}: forward", "h_n"),
    "bug_next_layer_reads_backward_first": ({BIDI, CLS}, f"{BIDI}: forward", "out"),
    "bug_every_layer_starts_from_layer0_state": ({"stacked_forward"}, "stacked_forward: forward", "out"),
    "bug_classify_reads_last_output": ({CLS}, f"{CLS}: padding invariance", "logits"),
    "bug_classify_bottom_layer": ({CLS}, f"{CLS}: forward", "logits"),
}


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.stem)
def test_correct_styles_get_full_marks(grade_hidden, path: Path):
    result = grade_hidden(NAME, path)
    assert result.score == pytest.approx(result.max_score), describe(result)


def test_every_bug_file_is_listed():
    assert {p.stem for p in (SUBMISSIONS / NAME).glob("bug_*.py")} == set(BUGS)


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_loses_points_in_the_right_check(grade_hidden, bug: str):
    lost, check, fragment = BUGS[bug]
    result = grade_hidden(NAME, SUBMISSIONS / NAME / f"{bug}.py")
    assert lost_functions(result) == lost, describe(result)
    failed = [t for t in entries(result, check) if not t.passed]
    assert failed, f"{bug}: no failing '{check}' entry\n{describe(result)}"
    assert any(fragment in t.message for t in failed), describe(result)


def test_padding_not_zeroed_still_passes_padding_invariance(grade_hidden):
    """Outputs at padded positions are the forward check's business: real positions are right."""
    result = grade_hidden(NAME, SUBMISSIONS / NAME / "bug_padding_not_zeroed.py")
    assert all(t.passed for t in entries(result, f"{BIDI}: padding invariance")), describe(result)


def test_hidden_cases_have_depth_direction_and_unsorted_padding(hidden_cases):
    cs = hidden_cases(NAME)
    stacked = {p.case.label for p in cs.for_function("stacked_forward")}
    assert all("L=1" not in label for label in stacked)
    bidi = [p for p in cs.for_function(BIDI) if p.kind == "forward"]
    assert {p.case.inputs["cell"] for p in bidi} == {"rnn", "gru", "lstm"}
    assert any(len(p.case.inputs["layers"]) >= 2 for p in bidi)
    for p in bidi:
        lengths = p.case.inputs["lengths"]
        T = p.case.inputs["x"].shape[1]
        assert int(lengths.min()) < T
        if len(lengths) >= 3:
            assert int(lengths.max()) == T and not bool((lengths[:-1] >= lengths[1:]).all())
