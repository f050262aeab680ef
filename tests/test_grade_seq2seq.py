"""The seq2seq assignment graded end to end: real submission files through the worker, on hidden cases.

Correct files in two styles (batched with a -1e9 fill and a tensor beam; einsum with masking after exp,
per-row greedy and a list beam) get full marks; each tests/submissions/seq2seq/bug_*.py holds one classic
mistake and must lose points exactly in the functions it breaks. Beam-search bugs must fail on the crafted
table built to expose them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, SUBMISSIONS, describe, entries, lost_functions

NAME = "seq2seq"
CORRECT = [ROOT / "examples" / NAME / "correct.py", SUBMISSIONS / NAME / "correct_lists.py"]
ATT, STEP, TF, LOSS, GREEDY, BEAM = (
    "additive_attention",
    "decoder_step",
    "teacher_forcing",
    "sequence_loss",
    "greedy_decode",
    "beam_search",
)
ATTENTION_USERS = {ATT, STEP, TF, GREEDY, BEAM}

# file -> ({functions that lose points}, failing check "function: kind", message fragment)
BUGS: dict[str, tuple[set[str], str, str]] = {
    "bug_attention_not_masked": (
        ATTENTION_USERS,
        f"{ATT}: padding invariance",
        "is not 0 at the padded position",
    ),
    "bug_softmax_over_batch": (ATTENTION_USERS, f"{ATT}: forward", "context"),
    "bug_attention_with_new_state": ({STEP, TF, GREEDY, BEAM}, f"{STEP}: forward", "logits"),
    "bug_teacher_forcing_without_shift": ({TF}, f"{TF}: forward", "logits"),
    "bug_loss_over_padding": ({LOSS}, f"{LOSS}: forward", "loss"),
    "bug_greedy_ignores_eos": ({GREEDY}, f"{GREEDY}: forward", "tokens"),
    "bug_beam_forgets_parent_score": ({BEAM}, f"{BEAM}: forward", ""),
    "bug_beam_extends_finished": ({BEAM}, f"{BEAM}: forward", ""),
    "bug_beam_normalises_by_length": ({BEAM}, f"{BEAM}: forward", ""),
    "bug_beam_ignores_alpha": ({BEAM}, f"{BEAM}: forward", ""),
    "bug_beam_wrong_index": ({BEAM}, f"{BEAM}: forward", "tokens"),
    "bug_beam_keeps_k_alive": ({BEAM}, f"{BEAM}: forward", "tokens"),
    "bug_beam_ties_by_higher_id": ({BEAM}, f"{BEAM}: forward", "tokens"),
}

# beam bug -> crafted-table case (label fragment) that must fail, and one that must pass
TABLES = {
    "bug_beam_forgets_parent_score": ("alpha=0.0 S=4 He=3 Hd=2 A=2 table=parent", None),
    "bug_beam_extends_finished": ("table=ended", None),
    "bug_beam_normalises_by_length": ("alpha=0.0 S=4 He=3 Hd=2 A=2 table=length", None),
    "bug_beam_ignores_alpha": (
        "alpha=1.0 S=4 He=3 Hd=2 A=2 table=length",
        "alpha=0.0 S=4 He=3 Hd=2 A=2 table=length",
    ),
    "bug_beam_ties_by_higher_id": ("table=ties", "table=length"),
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


@pytest.mark.parametrize("bug", sorted(TABLES))
def test_crafted_tables_expose_beam_bugs(grade_hidden, bug: str):
    must_fail, must_pass = TABLES[bug]
    result = grade_hidden(NAME, SUBMISSIONS / NAME / f"{bug}.py")
    beam = entries(result, f"{BEAM}: forward")
    hits = [t for t in beam if must_fail in t.name]
    assert hits and not any(t.passed for t in hits), describe(result)
    if must_pass:
        ok = [t for t in beam if must_pass in t.name]
        assert ok and all(t.passed for t in ok), describe(result)


def test_attention_never_weights_padding_message(grade_hidden):
    result = grade_hidden(NAME, SUBMISSIONS / NAME / "bug_attention_not_masked.py")
    msgs = [t.message for t in entries(result, f"{TF}: padding invariance") if not t.passed]
    assert msgs and any(
        "is not 0 at the padded position" in m or "when the padding changes" in m for m in msgs
    )


def test_hidden_greedy_cases_stop_early_and_run_out(hidden_cases):
    """Some rows end with EOS before max_len and some never emit it: both greedy bugs are visible."""
    from grader.plan import load_plan

    fn = load_plan(NAME).function(GREEDY)
    ended = ran_out = 0
    for p in hidden_cases(NAME).for_function(GREEDY):
        if p.kind != "forward":
            continue
        tokens = p.expected["value"]
        ended += int(((tokens == 2).any(1) & (tokens[:, -1] == 0)).sum())
        ran_out += int((~(tokens == 2).any(1)).sum())
    assert fn.name == GREEDY and ended >= 3 and ran_out >= 3
