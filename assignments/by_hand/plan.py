"""Check plan of the `by_hand` assignment: weights chosen by hand, graded by behaviour, not by value.

The student's functions take no arguments and return weights: (w, b) of one sigmoid unit per logic gate, and
a dict of weights for a sigmoid RNN whose output after every step is the parity of the bits so far. The
trusted process runs the weights (reference.by_hand.run_unit / run_rnn) on every row of the gate's truth
table, on all 64 bit streams of length 6, and on hidden random streams of length 100 (plus all-ones and
all-zeros), so any correct construction gets full marks and one that only works for short inputs does not.
"""

from __future__ import annotations

import torch

from grader.behaviour import BehaviourCheck
from grader.plan import Function, Plan

GATE_WITHIN = 0.01
PARITY_WITHIN = 0.1
LONG = 100

GATES = {
    "and": (2, lambda x: x[:, 0] * x[:, 1]),
    "or": (2, lambda x: torch.maximum(x[:, 0], x[:, 1])),
    "nand": (2, lambda x: 1 - x[:, 0] * x[:, 1]),
    "nor": (2, lambda x: 1 - torch.maximum(x[:, 0], x[:, 1])),
    "not": (1, lambda x: 1 - x[:, 0]),
}


def no_inputs(gen, params, dtype):
    return {}


def all_streams(T: int) -> torch.Tensor:
    """Every 0/1 sequence of length T, one per row. Shapes: -> (2^T, T) int64."""
    return torch.tensor([[(r >> (T - 1 - d)) & 1 for d in range(T)] for r in range(2**T)], dtype=torch.int64)


def running_parity(bits: torch.Tensor) -> torch.Tensor:
    """out[:, t] = bits[:, 0] XOR ... XOR bits[:, t]. Shapes: (S, T) -> (S, T) float64."""
    return (torch.cumsum(bits, dim=1) % 2).double()


def long_streams(gen: torch.Generator, case) -> torch.Tensor:
    """Random streams of length 100 with different densities of ones, plus all ones and all zeros."""
    density = torch.linspace(0.1, 0.9, 62, dtype=torch.float64)[:, None]  # (62, 1)
    bits = (torch.rand(62, LONG, generator=gen, dtype=torch.float64) < density).long()
    return torch.cat([bits, torch.ones(1, LONG, dtype=torch.int64), torch.zeros(1, LONG, dtype=torch.int64)])


def gate_function(gate: str, points: float) -> Function:
    D, truth = GATES[gate]
    check = BehaviourCheck(
        "truth table",
        probe=lambda gen, case: all_streams(D),
        evaluate="reference.by_hand:run_unit",
        target=lambda x: truth(x.double()),
        within=GATE_WITHIN,
    )
    return Function(
        name=f"{gate}_unit",
        points=points,
        args=(),
        make_inputs=no_inputs,
        hidden=({},),
        public=({},),
        outputs=("w", "b"),
        checks=(check,),
        dtypes=("float64",),
        signature=f"{gate}_unit() -> (w, b)   # w: ({D},), b: scalar",
    )


PARITY_CHECKS = (
    BehaviourCheck(
        "all streams of length 6",
        probe=lambda gen, case: all_streams(6),
        evaluate="reference.by_hand:run_rnn",
        target=running_parity,
        within=PARITY_WITHIN,
    ),
    BehaviourCheck(
        "streams of length 100",
        probe=long_streams,
        evaluate="reference.by_hand:run_rnn",
        target=running_parity,
        within=PARITY_WITHIN,
    ),
)

PLAN = Plan(
    name="by_hand",
    module="by_hand",
    title="RNNs by hand: logic-gate units and a parity RNN",
    functions=(
        *(gate_function(g, 1) for g in GATES),
        Function(
            name="parity_rnn",
            points=5,
            args=(),
            make_inputs=no_inputs,
            hidden=({},),
            public=({},),
            outputs="weights",
            checks=PARITY_CHECKS,
            dtypes=("float64",),
            signature="parity_rnn() -> dict with W_ih (H, 1), W_hh (H, H), b_ih (H,), b_hh (H,), "
            "W_out (1, H), b_out (1,), h0 (H,)",
        ),
    ),
)
