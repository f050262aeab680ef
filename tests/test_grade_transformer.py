"""The transformer assignment graded end to end: real submission files through the worker, on hidden cases.

Correct files in four styles (plain, einsum + additive -inf mask, loops over heads + a -1e9 fill, masking
after the softmax + renormalising) must get full marks; each buggy file in tests/submissions/transformer/
holds one classic mistake and must lose points in the functions it breaks, in the check that names the leak
or error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assignments.transformer import plan as tp
from grader import cases
from tests.conftest import describe, entries, lost_functions

SUBMISSIONS = Path(__file__).parent / "submissions" / "transformer"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "transformer"
ATTN, MHA, BLOCK, GPT = "scaled_dot_product_attention", "causal_self_attention", "gpt_block", "gpt_forward"
CORRECT = ["correct_plain", "correct_einsum", "correct_loops", "correct_renormalise"]

# file -> {function that must lose points: (check-kind prefix, message fragment)}; every other function keeps
# its points.
BUGS: dict[str, dict[str, tuple[str, str]]] = {
    "bug_mask_diagonal": {
        "causal_mask": (
            "causal: mask",
            "position t=0 may not attend to itself (mask[0, 0] is False): over-masked",
        ),
        MHA: ("causal: attention weights", "position t=0 does not attend to itself"),
        BLOCK: ("causal: changing the future", "is not finite (NaN or inf) at t=0"),
        GPT: ("forward", "logits has NaN"),
    },
    "bug_mask_after_softmax": {
        ATTN: ("causal: attention weights", "row t=0 of weights sums to"),
        MHA: ("causal: changing the future", "perturbing x at t=1 moves y at t=0"),
        BLOCK: ("causal: gradient from the future", "the gradient of y at t=0 with respect to x at t=1 is"),
        GPT: ("causal: changing the future", "perturbing tokens at t=1 moves logits at t=0"),
    },
    "bug_transposed_mask": {
        "causal_mask": (
            "causal: mask",
            "may attend to the future position t=1 (mask[0, 1] is True). The mask is transposed",
        ),
        MHA: ("causal: attention weights", "position t=0 attends to the future position t=1"),
        BLOCK: ("causal: changing the future", "perturbing x at t=1 moves y at t=0"),
        GPT: ("causal: changing the future", "perturbing tokens at t=1 moves logits at t=0"),
    },
    "bug_scale_d_model": {
        MHA: ("forward", "y: max abs error"),
        BLOCK: ("forward", "y: max abs error"),
        GPT: ("forward", "logits: max abs error"),
    },
    "bug_heads_no_transpose": {
        MHA: ("causal: changing the future", "sees the future"),
        BLOCK: ("causal: changing the future", "over-masked"),
        GPT: ("forward", "logits: max abs error"),
    },
    "bug_softmax_axis": {
        ATTN: ("causal: attention weights", "sums to"),
        MHA: ("causal: gradient from the future", "the gradient of y at t=0 with respect to x at t=1 is"),
        BLOCK: ("causal: changing the future", "perturbing x at t=1 moves y at t=0"),
        GPT: ("causal: changing the future", "position 0 sees the future"),
    },
    "bug_no_mask": {
        MHA: ("causal: changing the future", "perturbing x at t=1 moves y at t=0"),
        BLOCK: ("causal: gradient from the future", "with respect to x at t=1"),
        GPT: ("causal: changing the future", "perturbing tokens at t=1 moves logits at t=0"),
    },
    "bug_unbiased_var": {
        "layer_norm": ("forward", "y: max abs error"),
        BLOCK: ("forward", "y: max abs error"),
        GPT: ("forward", "logits: max abs error"),
    },
    "bug_tanh_gelu": {
        BLOCK: ("forward", "y: max abs error"),
        GPT: ("forward", "logits: max abs error"),
    },
    "banned_torch_sdpa": {
        MHA: ("banned", "uses torch.nn.functional.scaled_dot_product_attention"),
        BLOCK: ("banned", "uses torch.nn.functional.scaled_dot_product_attention"),
        GPT: ("banned", "uses torch.nn.functional.scaled_dot_product_attention"),
    },
}
# Bugs that are not about causality must not be reported as leaks.
NOT_CAUSAL = ("bug_scale_d_model", "bug_unbiased_var", "bug_tanh_gelu", "banned_torch_sdpa")


def test_every_submission_file_has_an_expectation() -> None:
    files = {p.stem for p in SUBMISSIONS.glob("*.py")}
    assert files == set(BUGS) | set(CORRECT)


@pytest.mark.parametrize("name", CORRECT)
def test_correct_styles_get_full_marks(grade_hidden, name: str) -> None:
    r = grade_hidden("transformer", SUBMISSIONS / f"{name}.py")
    assert r.score == pytest.approx(r.max_score), describe(r)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bug_loses_points_in_the_right_checks(grade_hidden, name: str) -> None:
    r = grade_hidden("transformer", SUBMISSIONS / f"{name}.py")
    expected = BUGS[name]
    assert lost_functions(r) == set(expected), describe(r)
    for function, (kind, fragment) in expected.items():
        failed = [t for t in entries(r, f"{function}: {kind}") if not t.passed]
        assert failed, f"{name}: no failing '{function}: {kind}' entry\n{describe(r)}"
        assert any(fragment in t.message for t in failed), f"{name}: {fragment!r} not in\n{describe(r)}"
    if name in NOT_CAUSAL:
        leaks = [t for t in r.tests if t.kind.startswith("causal") and not t.passed]
        assert not leaks, describe(r)


def test_examples_grade_as_their_names_say(grade_hidden) -> None:
    correct = grade_hidden("transformer", EXAMPLES / "correct.py")
    assert correct.score == pytest.approx(correct.max_score), describe(correct)
    leaky = grade_hidden("transformer", EXAMPLES / "buggy.py")
    assert leaky.score < leaky.max_score / 2, describe(leaky)
    assert any("sees the future" in t.message for t in leaky.tests), describe(leaky)


# ----------------------------------------------------------------------------------------------- the plan


def test_hidden_cases_keep_the_handouts_promises() -> None:
    built = cases.build(tp.PLAN, "hidden", b"any-secret")
    fns = {f.name: f for f in tp.PLAN.functions}
    for p in built.items:
        x = p.case.inputs
        if p.function in (MHA, BLOCK):
            B, T, D = x["x"].shape
            assert T >= 3 and B != T and x["n_heads"] >= 2 and D // x["n_heads"] != D
        if p.function == ATTN:
            B, nh, T, hd = x["q"].shape
            assert T >= 3 and nh >= 2 and B != T
        if p.function == GPT:
            B, T = x["tokens"].shape
            assert T >= 3 and B != T and x["n_heads"] >= 2
    low = [p for p in built.items if p.function == "layer_norm" and p.case.inputs["x"].shape[-1] <= 3]
    assert low, "a small-width layer norm case"
    for p in low:
        var = p.case.inputs["x"].double().var(-1, unbiased=False)
        assert (var < 1e-5).any(), "low-variance rows, where eps matters"
    assert all(fns[n].banned for n in (ATTN, MHA, "layer_norm", BLOCK, GPT))


def test_attention_scores_stay_moderate() -> None:
    """Renormalising after a masked softmax is correct only while no row underflows: keep scores O(1)."""
    import torch

    built = cases.build(tp.PLAN, "hidden", b"any-secret")
    for p in built.items:
        if p.function == ATTN and p.kind == "forward":
            q, k = p.case.inputs["q"].double(), p.case.inputs["k"].double()
            scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
            assert scores.abs().max() < 30, scores.abs().max()
            assert torch.isfinite(scores).all()
