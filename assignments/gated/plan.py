"""Check plan of the `gated` assignment: LSTM and GRU steps and forwards in torch.nn layout.

Hidden cases expose the classic bugs: gate order (i,f,g,o / r,z,n) swapped, z and 1-z exchanged, the reset
gate applied to h before W_hn instead of to (h W_hn^T + b_hn), a single bias, c0 or h0 ignored, B != T,
D != H, T = 1 and T >= 3, a batch of one.
"""

from __future__ import annotations

from assignments.rnn.plan import BANNED, SEQ, STEP, rnn_weights, uniform
from grader.checks import DEFAULT_CHECKS
from grader.plan import Function, Plan


def make_lstm_step(gen, p, dtype):
    B, D, H = p["B"], p["D"], p["H"]
    return {
        "x_t": uniform(gen, (B, D), 1.0, dtype),
        "h_prev": uniform(gen, (B, H), 0.9, dtype),
        "c_prev": uniform(gen, (B, H), 1.5, dtype),
        **rnn_weights(gen, D, H, dtype, gates=4),
    }


def make_lstm_forward(gen, p, dtype):
    B, T, D, H = p["B"], p["T"], p["D"], p["H"]
    return {
        "x": uniform(gen, (B, T, D), 1.0, dtype),
        "h0": uniform(gen, (B, H), 0.9, dtype),
        "c0": uniform(gen, (B, H), 1.5, dtype),
        **rnn_weights(gen, D, H, dtype, gates=4),
    }


def make_gru_step(gen, p, dtype):
    B, D, H = p["B"], p["D"], p["H"]
    return {
        "x_t": uniform(gen, (B, D), 1.0, dtype),
        "h_prev": uniform(gen, (B, H), 0.9, dtype),
        **rnn_weights(gen, D, H, dtype, gates=3),
    }


def make_gru_forward(gen, p, dtype):
    B, T, D, H = p["B"], p["T"], p["D"], p["H"]
    return {
        "x": uniform(gen, (B, T, D), 1.0, dtype),
        "h0": uniform(gen, (B, H), 0.9, dtype),
        **rnn_weights(gen, D, H, dtype, gates=3),
    }


W = ("W_ih", "W_hh", "b_ih", "b_hh")

PLAN = Plan(
    name="gated",
    module="gated",
    title="LSTM and GRU cells and forward passes",
    banned=BANNED,
    functions=(
        Function(
            name="lstm_step",
            points=2,
            args=("x_t", "h_prev", "c_prev", *W),
            make_inputs=make_lstm_step,
            hidden=STEP,
            public=STEP[:1],
            outputs=("h_t", "c_t"),
            checks=DEFAULT_CHECKS,
            signature="lstm_step(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh) -> (h_t, c_t)",
        ),
        Function(
            name="lstm_forward",
            points=3,
            args=("x", "h0", "c0", *W),
            make_inputs=make_lstm_forward,
            hidden=SEQ,
            public=SEQ[:1],
            outputs=("hs", ("h_T", "c_T")),
            checks=DEFAULT_CHECKS,
            signature="lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> (hs, (h_T, c_T))",
        ),
        Function(
            name="gru_step",
            points=2,
            args=("x_t", "h_prev", *W),
            make_inputs=make_gru_step,
            hidden=STEP,
            public=STEP[:1],
            outputs="h_t",
            checks=DEFAULT_CHECKS,
            signature="gru_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh) -> h_t",
        ),
        Function(
            name="gru_forward",
            points=3,
            args=("x", "h0", *W),
            make_inputs=make_gru_forward,
            hidden=SEQ,
            public=SEQ[:1],
            outputs=("hs", "h_T"),
            checks=DEFAULT_CHECKS,
            signature="gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh) -> (hs, h_T)",
        ),
    ),
)
