"""The seq2seq assignment graded end to end: real submission files through the worker, on hidden cases.

Correct files in two styles (batched with a -1e9 fill and a tensor beam; einsum with masking after exp,
per-row greedy and a list beam) get full marks; each tests/submissions/seq2seq/bug_*.py holds one classic
mistake and must lose points exactly in the functions it breaks. Beam-search bugs must fail on the crafted
table built to expose them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from assignments.seq2seq import plan as sp
from grader import cases
from grader.checks import GradientCheck
from tests.conftest import ROOT, SUBMISSIONS, describe, entries, lost_functions
from tests.test_causal import run

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
    "bug_attention_with_new_state": ({STEP, TF, BEAM}, f"{STEP}: forward", "logits"),
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

# bug -> functions that lose points on some secrets only: greedy compares argmax tokens, and a decoder that reads
# the new state's context flips one on about 35% of secrets (measured over 300: 110 before the dimensions were
# made pairwise different, 114 after), while its logits are wrong on every secret.
MAY_LOSE: dict[str, set[str]] = {"bug_attention_with_new_state": {GREEDY}}

# beam bug -> crafted-table case (label fragment) that must fail, and one that must pass
TABLES = {
    "bug_beam_forgets_parent_score": ("alpha=0.0 S=4 He=3 Hd=2 A=4 table=parent", None),
    "bug_beam_extends_finished": ("table=ended", None),
    "bug_beam_normalises_by_length": ("alpha=0.0 S=4 He=3 Hd=2 A=4 table=length", None),
    "bug_beam_ignores_alpha": (
        "alpha=1.0 S=4 He=3 Hd=2 A=4 table=length",
        "alpha=0.0 S=4 He=3 Hd=2 A=4 table=length",
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
    assert lost_functions(result) - MAY_LOSE.get(bug, set()) == lost, describe(result)
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


# ----------------------------------------------------------------------------------------------- the plan


def _same(a: Any, b: Any) -> bool:
    """Two input (or expected-output) trees hold the same values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.equal(b)
        )
    if hasattr(a, "shape") or hasattr(b, "shape"):
        return getattr(a, "shape", None) == getattr(b, "shape", None) and bool((a == b).all())
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple))
            and isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same(a[k], b[k]) for k in a)
        )
    return a == b


def test_no_hidden_case_repeats_a_public_one(hidden_cases):
    """A public case's inputs, its decoder, or its answer never come back as a hidden case's: the answers of
    the public cases are shipped to the students."""
    public = cases.load_public(sp.PLAN)
    beam_only = dataclasses.replace(sp.PLAN, functions=(sp.PLAN.function(BEAM),))
    hidden = [hidden_cases(NAME), *(cases.build(beam_only, "hidden", s) for s in (b"other-1", b"other-2"))]
    for h in (p for cs in hidden for p in cs.items):
        for p in public.items:
            if (p.function, p.check, p.case.dtype) != (h.function, h.check, h.case.dtype):
                continue
            where = f"hidden {h.function} ({h.case.title}) vs public ({p.case.title})"
            assert not _same(h.case.inputs, p.case.inputs), where
            if "params" in h.case.inputs:
                assert not _same(h.case.inputs["params"], p.case.inputs["params"]), where
            if "value" in h.expected:
                assert not _same(h.expected["value"], p.expected["value"]), where


def test_hidden_dimensions_are_pairwise_different():
    """The handout promises Hd, He, A and E all different (E = V = 6 on the crafted tables)."""
    for fn in sp.PLAN.functions:
        for params in fn.hidden:
            dims = {k: params[k] for k in ("E", "He", "Hd", "A") if k in params}
            if "table" in params:
                dims["E"] = 6
            assert len(set(dims.values())) == len(dims), (fn.name, params)


def test_the_handout_names_every_container_whose_gradients_are_checked():
    readme = (Path(sp.__file__).parent / "README.md").read_text()
    bullet = re.search(r"- \*\*gradients\*\*(.*?)\n- \*\*", readme, re.S)
    assert bullet, "the handout's gradients bullet"
    seen = set()
    for p in cases.build(sp.PLAN, "public").items:
        if isinstance(sp.PLAN.function(p.function).checks[p.check], GradientCheck):
            for name in p.expected["names"]:
                seen.add(name)
                assert f"`{name}`" in bullet.group(1), name
    assert "params" in seen


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"s2s_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _verdict(fn, p, mod):
    """Judge one module's beam_search on one prepared case, in this process."""
    return fn.checks[p.check].judge(fn, p.case, p.expected, [run(mod.beam_search, c) for c in p.calls])


def test_varied_tables_keep_their_traps():
    """Over 20 secrets (both dtypes), every beam bug fails the crafted table built for it and passes the one
    named to pass; correct beams pass every table. Measured the same over 2000 more secrets (20000 cases)."""
    fn = sp.PLAN.function(BEAM)
    only = dataclasses.replace(sp.PLAN, functions=(fn,))
    files = {bug: _load(SUBMISSIONS / NAME / f"{bug}.py") for bug in TABLES}
    correct = [_load(p) for p in CORRECT]
    for s in range(20):
        for p in cases.build(only, "hidden", f"tables-{s}".encode()).items:
            if "table=" not in p.case.label:
                continue
            for mod in correct:
                assert _verdict(fn, p, mod).ok, (mod.__name__, s, p.case.title)
            for bug, (must_fail, must_pass) in TABLES.items():
                if must_fail in p.case.label:
                    assert not _verdict(fn, p, files[bug]).ok, (bug, s, p.case.title)
                elif must_pass and must_pass in p.case.label:
                    assert _verdict(fn, p, files[bug]).ok, (bug, s, p.case.title)
