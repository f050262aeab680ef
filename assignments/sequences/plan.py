"""Check plan of the `sequences` assignment: deep, bidirectional and variable-length recurrent networks.

Hidden cases are chosen to expose the bugs that only show with depth, direction or padding: L >= 2 in every
stacked and bidirectional function (layers fed the wrong input, states of the wrong layer), all three cells,
lengths unsorted with one sequence of full length and one much shorter, padding filled with loud non-zero
values (backward direction started at the padded end, outputs not zeroed, final states taken at t = T-1),
B != T, D != H != 2H (transposed or mis-sized inputs of layers >= 1), non-zero initial states in torch's
(layer, direction) order. The padding-invariance check refills the padding and lengthens it.
"""

from __future__ import annotations

import torch

from assignments.rnn.plan import BANNED as RNN_BANNED
from assignments.rnn.plan import uniform
from grader.checks import DEFAULT_CHECKS, ForwardCheck, GradientCheck
from grader.checks_padding import PaddingInvarianceCheck
from grader.plan import Function, Plan

BANNED = (
    *RNN_BANNED,
    "torch.nn.utils.rnn",
    "torch.nn.utils.rnn.pack_padded_sequence",
    "torch.nn.utils.rnn.pad_packed_sequence",
    "torch.nn.utils.rnn.pack_sequence",
    "torch.nn.utils.rnn.PackedSequence",
)
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
NAMES = ("W_ih", "W_hh", "b_ih", "b_hh")


def layer_weights(gen, cell: str, D: int, H: int, dtype, suffix: str = "") -> dict[str, torch.Tensor]:
    """One direction of one layer in torch.nn layout, scale 1.5/sqrt(H) as in the rnn plan."""
    G, k = GATES[cell], 1.5 / H**0.5
    shapes = ((G * H, D), (G * H, H), (G * H,), (G * H,))
    return {n + suffix: uniform(gen, s, k, dtype) for n, s in zip(NAMES, shapes, strict=True)}


def make_layers(
    gen, cell: str, D: int, H: int, L: int, dtype, bidirectional: bool
) -> list[dict[str, torch.Tensor]]:
    layers = []
    for k in range(L):
        d = D if k == 0 else (2 * H if bidirectional else H)
        w = layer_weights(gen, cell, d, H, dtype)
        if bidirectional:
            w |= layer_weights(gen, cell, d, H, dtype, "_reverse")
        layers.append(w)
    return layers


def make_state(gen, cell: str, shape: tuple[int, ...], dtype):
    h = uniform(gen, shape, 0.9, dtype)
    return (h, uniform(gen, shape, 1.5, dtype)) if cell == "lstm" else h


def make_lengths(gen, B: int, T: int) -> torch.Tensor:
    """Unsorted lengths in [1, T]: with B >= 3 one full-length row, one of length <= T // 2, never sorted;
    with B = 2 two different lengths below T, ascending (a batch sorted by length and not put back fails)."""
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    if B >= 3:
        i, j = torch.randperm(B, generator=gen)[:2].tolist()
        lengths[i] = T
        lengths[j] = int(torch.randint(1, max(T // 2, 1) + 1, (1,), generator=gen))
        while bool((lengths[:-1] >= lengths[1:]).all()):  # sorted descending is the easy case: avoid it
            lengths = lengths[torch.randperm(B, generator=gen)]
    elif B == 2 and T >= 3:
        a, b = sorted((torch.randperm(T - 1, generator=gen)[:2] + 1).tolist())
        lengths = torch.tensor([a, b])
    elif int(lengths.max()) == T:
        lengths[int(lengths.argmax())] = int(torch.randint(1, T, (1,), generator=gen))  # some padding
    return lengths


def pad_loudly(gen, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Padding positions hold large non-zero values: a function reading them gives visibly wrong answers."""
    T = x.shape[1]
    pad = ~(torch.arange(T)[None, :] < lengths[:, None])  # (B, T)
    noise = uniform(gen, tuple(x.shape), 5.0, x.dtype)
    return torch.where(pad.reshape(pad.shape + (1,) * (x.ndim - 2)), noise, x)


def make_cell_step(gen, p, dtype):
    cell, B, D, H = p["cell"], p["B"], p["D"], p["H"]
    return {
        "cell": cell,
        "x_t": uniform(gen, (B, D), 1.0, dtype),
        "state": make_state(gen, cell, (B, H), dtype),
        **layer_weights(gen, cell, D, H, dtype),
    }


def make_stacked(gen, p, dtype):
    cell, B, T, D, H, L = p["cell"], p["B"], p["T"], p["D"], p["H"], p["L"]
    return {
        "cell": cell,
        "x": uniform(gen, (B, T, D), 1.0, dtype),
        "state0": make_state(gen, cell, (L, B, H), dtype),
        "layers": make_layers(gen, cell, D, H, L, dtype, bidirectional=False),
    }


def make_bidirectional(gen, p, dtype):
    cell, B, T, D, H, L = p["cell"], p["B"], p["T"], p["D"], p["H"], p["L"]
    lengths = make_lengths(gen, B, T)
    x = pad_loudly(gen, uniform(gen, (B, T, D), 1.0, dtype), lengths)
    return {
        "cell": cell,
        "x": x,
        "lengths": lengths,
        "state0": make_state(gen, cell, (2 * L, B, H), dtype),
        "layers": make_layers(gen, cell, D, H, L, dtype, bidirectional=True),
    }


def make_classify(gen, p, dtype):
    B, T, V, E, H, L, C = p["B"], p["T"], p["V"], p["E"], p["H"], p["L"], p["C"]
    lengths = make_lengths(gen, B, T)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    return {
        "tokens": tokens,
        "lengths": lengths,
        "embedding": uniform(gen, (V, E), 1.0, dtype),
        "layers": make_layers(gen, "gru", E, H, L, dtype, bidirectional=True),
        "W_out": uniform(gen, (C, 2 * H), 1.0 / H**0.5, dtype),
        "b_out": uniform(gen, (C,), 0.5, dtype),
    }


STEP = (
    {"cell": "lstm", "B": 3, "D": 4, "H": 5},
    {"cell": "rnn", "B": 2, "D": 3, "H": 4},
    {"cell": "gru", "B": 4, "D": 5, "H": 3},
    {"cell": "lstm", "B": 1, "D": 2, "H": 6},
)
STACKED = (
    {"cell": "gru", "B": 3, "T": 5, "D": 4, "H": 6, "L": 2},
    {"cell": "rnn", "B": 2, "T": 4, "D": 3, "H": 5, "L": 3},
    {"cell": "lstm", "B": 4, "T": 6, "D": 5, "H": 3, "L": 2},
    {"cell": "lstm", "B": 1, "T": 3, "D": 2, "H": 4, "L": 3},
    {"cell": "gru", "B": 2, "T": 1, "D": 4, "H": 3, "L": 2},
)
BIDIRECTIONAL = (
    {"cell": "gru", "B": 4, "T": 6, "D": 3, "H": 5, "L": 2},
    {"cell": "lstm", "B": 5, "T": 7, "D": 4, "H": 3, "L": 2},
    {"cell": "rnn", "B": 3, "T": 5, "D": 2, "H": 4, "L": 3},
    {"cell": "lstm", "B": 2, "T": 4, "D": 5, "H": 6, "L": 1},
    {"cell": "gru", "B": 1, "T": 5, "D": 3, "H": 2, "L": 2},
)
CLASSIFY = (
    {"B": 4, "T": 6, "V": 11, "E": 5, "H": 4, "L": 2, "C": 3},
    {"B": 5, "T": 8, "V": 9, "E": 3, "H": 5, "L": 1, "C": 4},
    {"B": 3, "T": 4, "V": 7, "E": 6, "H": 3, "L": 3, "C": 2},
)

BIDI_PADDING = PaddingInvarianceCheck(padded=(("x", 1),), outputs=(((0,), 1),), lengths="lengths")
CLASSIFY_PADDING = PaddingInvarianceCheck(
    padded=(("tokens", 1),),
    outputs=(),
    lengths="lengths",
    n_ids=lambda inputs: int(inputs["embedding"].shape[0]),
)

PLAN = Plan(
    name="sequences",
    module="sequences",
    title="Deep, bidirectional and variable-length recurrent networks",
    banned=BANNED,
    functions=(
        Function(
            name="cell_step",
            points=1,
            args=("cell", "x_t", "state", *NAMES),
            make_inputs=make_cell_step,
            hidden=STEP,
            public=STEP[:1],
            outputs="state",
            checks=DEFAULT_CHECKS,
            signature="cell_step(cell, x_t, state, W_ih, W_hh, b_ih, b_hh) -> state",
        ),
        Function(
            name="stacked_forward",
            points=3,
            args=("cell", "x", "state0", "layers"),
            make_inputs=make_stacked,
            hidden=STACKED,
            public=STACKED[:1],
            outputs=("out", "h_n"),
            checks=DEFAULT_CHECKS,
            signature="stacked_forward(cell, x, state0, layers) -> (out, h_n)  [(out, (h_n, c_n)) for lstm]",
        ),
        Function(
            name="bidirectional_forward",
            points=4,
            args=("cell", "x", "lengths", "state0", "layers"),
            make_inputs=make_bidirectional,
            hidden=BIDIRECTIONAL,
            public=BIDIRECTIONAL[:1],
            outputs=("out", "h_n"),
            checks=(ForwardCheck(), GradientCheck(), BIDI_PADDING),
            signature="bidirectional_forward(cell, x, lengths, state0, layers) -> (out, h_n)",
        ),
        Function(
            name="classify",
            points=2,
            args=("tokens", "lengths", "embedding", "layers", "W_out", "b_out"),
            make_inputs=make_classify,
            hidden=CLASSIFY,
            public=CLASSIFY[:1],
            outputs="logits",
            checks=(ForwardCheck(), GradientCheck(), CLASSIFY_PADDING),
            signature="classify(tokens, lengths, embedding, layers, W_out, b_out) -> logits",
        ),
    ),
)
