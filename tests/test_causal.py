"""grader/causal.py: the causal-masking check kinds, judged on replies from an in-process stand-in worker.

Each check is prepared with a reference and judged on what correct, leaky and over-masked implementations
return; the RNN case shows the kinds are not tied to attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from grader.causal import (
    AttentionWeightsCheck,
    CausalMaskCheck,
    FutureGradientCheck,
    FuturePerturbationCheck,
)
from grader.checks import leaves
from grader.plan import Call, Case, Function, Reply
from grader.wire import Received
from reference import rnn
from reference.transformer import (
    causal_mask,
    causal_self_attention,
    gpt_forward,
    scaled_dot_product_attention,
)

DTYPES = {"float64": torch.float64, "float32": torch.float32}


# ------------------------------------------------------------------------------------------ stand-in worker


def received(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return Received(tree.detach().numpy().copy(), "tensor")
    if isinstance(tree, (tuple, list)):
        return type(tree)(received(x) for x in tree)
    if isinstance(tree, dict):
        return {k: received(v) for k, v in tree.items()}
    return tree


def run(student: Callable[..., Any], call: Call) -> Reply:
    """What the worker does with one Call, minus the process boundary."""
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in call.args]
    for i in call.grad_wrt:
        args[i] = args[i].detach().clone().requires_grad_(True)
    try:
        value = student(*args)
    except Exception as e:
        return Reply(failure="exception", error=f"{e.__class__.__name__}: {e}")
    if not call.grad_wrt:
        return Reply(value=received(value))
    terms = [
        (o * p.to(o.dtype)).sum()
        for o, p in zip(leaves(value), leaves(call.projection), strict=True)
        if p is not None
    ]
    grads = torch.autograd.grad(sum(terms), [args[i] for i in call.grad_wrt], allow_unused=True)
    return Reply(grads=tuple(None if g is None else received(g) for g in grads))


def grade(check, fn: Function, case: Case, reference, student, seed: int = 0):
    calls, expected = check.prepare(None, fn, case, reference, torch.Generator().manual_seed(seed))
    return check.judge(fn, case, expected, [run(student, c) for c in calls])


def case_of(fn: Function, dtype: str, inputs: dict[str, Any]) -> Case:
    return Case(fn.name, "hidden", dtype, "", 0, inputs)


# ----------------------------------------------------------------------------------------------- attention


def sdpa_variant(kind: str) -> Callable[..., Any]:
    """scaled_dot_product_attention written correctly in other styles, or with one classic bug."""

    def f(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        T = scores.shape[-1]
        if kind == "additive":
            w = torch.softmax(scores + torch.zeros_like(scores).masked_fill(~mask, -math.inf), -1)
        elif kind == "renormalise":
            w = torch.softmax(scores, -1) * mask
            w = w / w.sum(-1, keepdim=True)
        elif kind == "after_softmax":
            w = torch.softmax(scores, -1) * mask
        elif kind == "no_mask":
            w = torch.softmax(scores, -1)
        elif kind == "transposed":
            w = torch.softmax(scores.masked_fill(~mask.T, -math.inf), -1)
        elif kind == "diagonal":  # row 0 has nothing left: NaN
            w = torch.softmax(scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(-1), -math.inf), -1)
        elif kind == "diagonal_big":  # row 0 has nothing left: uniform over every position, future included
            w = torch.softmax(scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(-1), -1e9), -1)
        elif kind == "wrong_axis":
            w = torch.softmax(scores.masked_fill(~mask, -math.inf), -2)
        else:
            raise AssertionError(kind)
        return w @ v, w

    return f


SDPA = Function("scaled_dot_product_attention", 1, ("q", "k", "v", "mask"), None, (), (),
                outputs=("out", "weights"))  # fmt: skip


def causal(inputs):
    return {"mask": causal_mask(inputs["q"].shape[-2])}


def sdpa_case(dtype: str = "float64", T: int = 5) -> Case:
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, T, 4, generator=g, dtype=torch.float64).to(DTYPES[dtype]) for _ in range(3))
    return case_of(SDPA, dtype, {"q": q, "k": k, "v": v, "mask": None})


SDPA_CHECKS = {
    "perturb": FuturePerturbationCheck(
        (("q", -2), ("k", -2), ("v", -2)), (((0,), -2), ((1,), -2)), adapt=causal
    ),
    "grad": FutureGradientCheck((("q", -2), ("k", -2), ("v", -2)), (((0,), -2),), adapt=causal),
    "weights": AttentionWeightsCheck((1,), adapt=causal),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("style", ["reference", "additive", "renormalise"])
@pytest.mark.parametrize("check", sorted(SDPA_CHECKS))
def test_correct_attention_passes(dtype: str, style: str, check: str) -> None:
    student = scaled_dot_product_attention if style == "reference" else sdpa_variant(style)
    c = grade(SDPA_CHECKS[check], SDPA, sdpa_case(dtype), scaled_dot_product_attention, student)
    assert c.ok, c.message


@pytest.mark.parametrize(
    ("bug", "check", "message"),
    [
        ("no_mask", "perturb", "perturbing q, k and v at t=1 moves out at t=0"),
        ("no_mask", "grad", "the gradient of out at t=0 with respect to k at t=1 is"),
        ("no_mask", "weights", "position t=0 attends to the future position t="),
        ("transposed", "perturb", "perturbing q, k and v at t=1 moves out at t=0"),
        ("transposed", "weights", "attends to the future"),
        ("after_softmax", "perturb", "perturbing q, k and v at t=1 moves out at t=0"),
        ("after_softmax", "grad", "with respect to k at t=1"),
        ("after_softmax", "weights", "row t=0 of weights sums to"),
        ("wrong_axis", "weights", "sums to"),
        ("wrong_axis", "perturb", "sees the future"),
        ("diagonal", "weights", "position t=0 does not attend to itself"),
        ("diagonal", "perturb", "out is not finite (NaN or inf) at t=0"),
        ("diagonal", "grad", "is not finite (NaN or inf) at t=0"),
        ("diagonal_big", "weights", "position t=0 attends to the future position t=1"),
        ("diagonal_big", "perturb", "perturbing q, k and v at t=1 moves out at t=0"),
        ("diagonal_big", "grad", "the gradient of out at t=0 with respect to"),
    ],
)
def test_attention_bugs_are_named(bug: str, check: str, message: str) -> None:
    c = grade(SDPA_CHECKS[check], SDPA, sdpa_case(), scaled_dot_product_attention, sdpa_variant(bug))
    assert not c.ok
    assert message in c.message, c.message


def test_leak_message_names_both_positions() -> None:
    """A leak of exactly one future position: the message says which output position and which input."""

    def peeks_two_ahead(q, k, v, mask=None):
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return out + 0.1 * torch.roll(v, -3, dims=-2) * (torch.arange(v.shape[-2]) == 2)[:, None], w

    c = grade(SDPA_CHECKS["perturb"], SDPA, sdpa_case(T=6), scaled_dot_product_attention, peeks_two_ahead)
    assert not c.ok and "perturbing q, k and v at t=5 moves out at t=2" in c.message, c.message
    assert c.where == (2, 5)
    assert "1 of 15 (earlier, later) pairs leak" in c.message, c.message
    c = grade(SDPA_CHECKS["grad"], SDPA, sdpa_case(T=6), scaled_dot_product_attention, peeks_two_ahead)
    assert not c.ok and "the gradient of out at t=2 with respect to v at t=5 is" in c.message, c.message


def test_failed_call_is_reported() -> None:
    def broken(q, k, v, mask=None):
        raise RuntimeError("shapes do not match")

    for check in SDPA_CHECKS.values():
        c = grade(check, SDPA, sdpa_case(), scaled_dot_product_attention, broken)
        assert not c.ok and "shapes do not match" in c.message


def test_nan_outputs_are_reported() -> None:
    def nan(q, k, v, mask=None):
        out, w = scaled_dot_product_attention(q, k, v, mask)
        return out * float("nan"), w

    c = grade(SDPA_CHECKS["perturb"], SDPA, sdpa_case(), scaled_dot_product_attention, nan)
    assert not c.ok and "not finite" in c.message


# ------------------------------------------------------------------------------------------ MHA, GPT, RNN


MHA = Function("causal_self_attention", 1, ("x", "W_in", "b_in", "W_out", "b_out", "n_heads"), None, (), (),
               outputs=("y", "weights"))  # fmt: skip


def mha_case(dtype: str = "float64") -> Case:
    g = torch.Generator().manual_seed(3)
    D = 6
    shapes = {"x": (2, 5, D), "W_in": (3 * D, D), "b_in": (3 * D,), "W_out": (D, D), "b_out": (D,)}
    inputs = {
        k: (torch.randn(s, generator=g, dtype=torch.float64) * 0.5).to(DTYPES[dtype])
        for k, s in shapes.items()
    }
    return case_of(MHA, dtype, {**inputs, "n_heads": 2})


def mha_no_mask(x, W_in, b_in, W_out, b_out, n_heads):
    B, T, D = x.shape
    q, k, v = (x @ W_in.T + b_in).split(D, -1)
    heads = [t.reshape(B, T, n_heads, D // n_heads).transpose(1, 2) for t in (q, k, v)]
    y, w = scaled_dot_product_attention(*heads, torch.ones(T, T, dtype=torch.bool))
    return y.transpose(1, 2).reshape(B, T, D) @ W_out.T + b_out, w


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_self_attention(dtype: str) -> None:
    checks = [
        FuturePerturbationCheck((("x", 1),), (((0,), 1), ((1,), 2))),
        FutureGradientCheck((("x", 1),), (((0,), 1),)),
        AttentionWeightsCheck((1,)),
    ]
    for check in checks:
        ok = grade(check, MHA, mha_case(dtype), causal_self_attention, causal_self_attention)
        assert ok.ok, ok.message
        bad = grade(check, MHA, mha_case(dtype), causal_self_attention, mha_no_mask)
        assert not bad.ok
        assert "t=0" in bad.message and "t=1" in bad.message, bad.message


GPT_ARGS = ("tokens", "wte", "wpe", "blocks", "g", "b", "head", "n_heads")
GPT = Function("gpt_forward", 1, GPT_ARGS, None, (), (), outputs="logits")


def gpt_case(g: torch.Generator, V: int = 7, D: int = 4) -> Case:
    from tests.test_ref_transformer import block_params, encoder_layer

    blocks = [{k: v.detach() for k, v in block_params(encoder_layer(D, 2, 6, g)).items()}]
    inputs = {
        "tokens": torch.randint(0, V, (2, 5), generator=g), "blocks": blocks,
        "wte": torch.randn(V, D, generator=g, dtype=torch.float64),
        "wpe": torch.randn(6, D, generator=g, dtype=torch.float64),
        "g": torch.ones(D, dtype=torch.float64), "b": torch.zeros(D, dtype=torch.float64),
        "head": torch.randn(V, D, generator=g, dtype=torch.float64), "n_heads": 2,
    }  # fmt: skip
    return case_of(GPT, "float64", inputs)


def test_token_perturbation_for_language_models() -> None:
    g = torch.Generator().manual_seed(5)
    V = 7
    case = gpt_case(g, V)
    check = FuturePerturbationCheck((("tokens", 1),), (((), 1),), n_ids=lambda a: a["wte"].shape[0])
    calls, _ = check.prepare(None, GPT, case, gpt_forward, g)
    assert all(int(c.args[0].max()) < V for c in calls)
    assert grade(check, GPT, case, gpt_forward, gpt_forward).ok

    def sees_next_token(tokens, *rest):
        return gpt_forward(tokens, *rest) + 0.01 * torch.roll(tokens, -1, 1)[..., None].double()

    c = grade(check, GPT, case, gpt_forward, sees_next_token)
    assert not c.ok and "perturbing tokens at t=1 moves logits at t=0" in c.message, c.message


def test_position_gradients_for_language_models() -> None:
    """Token ids have no gradient: gpt_forward's gradient check runs over wpe, cut to the T positions used."""
    from assignments.transformer.plan import gpt_positions

    g = torch.Generator().manual_seed(6)
    case = gpt_case(g)
    check = FutureGradientCheck((("wpe", 0),), (((), 1),), adapt=gpt_positions)
    calls, _ = check.prepare(None, GPT, case, gpt_forward, g)
    assert all(c.args[2].shape[0] == case.inputs["tokens"].shape[1] for c in calls)
    assert grade(check, GPT, case, gpt_forward, gpt_forward).ok

    def sees_next_position(tokens, wte, wpe, *rest):
        return gpt_forward(tokens, wte, wpe + 0.1 * torch.roll(wpe, -1, 0), *rest)

    c = grade(check, GPT, case, gpt_forward, sees_next_position)
    assert not c.ok and "the gradient of logits at t=0 with respect to wpe at t=1" in c.message, c.message


RNN = Function(
    "rnn_forward", 1, ("x", "h0", "W_ih", "W_hh", "b_ih", "b_hh"), None, (), (), outputs=("hs", "h_T")
)


def test_the_checks_serve_recurrent_networks_too() -> None:
    g = torch.Generator().manual_seed(11)
    shapes = {"x": (2, 4, 3), "h0": (2, 5), "W_ih": (5, 3), "W_hh": (5, 5), "b_ih": (5,), "b_hh": (5,)}
    case = case_of(
        RNN, "float64", {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
    )

    def bidirectional(x, h0, *w):
        hs, h = rnn.rnn_forward(x, h0, *w)
        back, _ = rnn.rnn_forward(x.flip(1), h0, *w)
        return hs + back.flip(1), h

    for check in (
        FuturePerturbationCheck((("x", 1),), (((0,), 1),)),
        FutureGradientCheck((("x", 1),), (((0,), 1),)),
    ):
        assert grade(check, RNN, case, rnn.rnn_forward, rnn.rnn_forward).ok
        c = grade(check, RNN, case, rnn.rnn_forward, bidirectional)
        assert not c.ok and "hs at t=0" in c.message and "x at t=1" in c.message, c.message


def test_a_vacuous_perturbation_is_our_error() -> None:
    zeros = {
        "W_ih": torch.zeros(2, 2),
        "W_hh": torch.zeros(2, 2),
        "b_ih": torch.zeros(2),
        "b_hh": torch.zeros(2),
    }
    case = case_of(RNN, "float64", {"x": torch.ones(1, 3, 2), "h0": torch.ones(1, 2), **zeros})
    with pytest.raises(ValueError, match="vacuous"):
        FuturePerturbationCheck().prepare(None, RNN, case, lambda x, *a: x * 0, torch.Generator())


# ----------------------------------------------------------------------------------------------- masks


MASK = Function("causal_mask", 1, ("T",), None, (), (), outputs="mask")


@pytest.mark.parametrize(
    ("student", "message"),
    [
        (lambda T: torch.ones(T, T, dtype=torch.bool).tril(), None),
        (lambda T: ~torch.ones(T, T, dtype=torch.bool).tril(), "polarity is inverted"),
        (lambda T: torch.ones(T, T, dtype=torch.bool).triu(), "transposed"),
        (lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1), "position t=0 may not attend to itself"),
        (lambda T: torch.ones(T, T, dtype=torch.bool), "position t=0 may attend to the future position t=1"),
        (lambda T: torch.ones(T, T).tril(), "dtype torch.float32, expected torch.bool"),
        (lambda T: torch.ones(T, dtype=torch.bool), "expected a torch.bool tensor of shape (4, 4)"),
    ],
)
def test_causal_mask_check(student, message) -> None:
    c = grade(CausalMaskCheck(), MASK, case_of(MASK, "float64", {"T": 4}), causal_mask, student)
    assert c.ok is (message is None), c.message
    if message:
        assert message in c.message, c.message
