"""Check plan of the `rnn` assignment: Elman RNN step/forward, BPTT by hand, gradient clipping.

Hidden cases are chosen to expose the classic bugs: B != T (transposed batch/time), D != H (swapped
weights), T = 1 and T >= 3 (off-by-one in the time loop), non-zero h0 and biases (forgotten terms),
non-symmetric W_hh (W_hh vs W_hh^T), a batch of one, and clipping above and below the threshold.
"""

from __future__ import annotations

import torch

from grader.checks import DEFAULT_CHECKS, ForwardCheck
from grader.compare import Tolerance
from grader.plan import AUTOGRAD, Function, Plan

BANNED = (
    "torch.nn.RNN",
    "torch.nn.RNNCell",
    "torch.nn.LSTM",
    "torch.nn.LSTMCell",
    "torch.nn.GRU",
    "torch.nn.GRUCell",
    "torch.rnn_tanh",
    "torch.rnn_relu",
    "torch.rnn_tanh_cell",
    "torch.rnn_relu_cell",
    "torch.lstm",
    "torch.lstm_cell",
    "torch.gru",
    "torch.gru_cell",
    "torch._VF",
    "torch.nn.utils.clip_grad_norm_",
    "torch.nn.utils.clip_grad_norm",
    "torch.nn.utils.clip_grads_with_norm_",
    "torch.nn.utils.get_total_norm",
)


def uniform(gen: torch.Generator, shape: tuple[int, ...], scale: float, dtype: torch.dtype) -> torch.Tensor:
    """U(-scale, scale) drawn in float64, then cast to `dtype` (each dtype of a case has its own seed)."""
    return ((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale).to(dtype)


def rnn_weights(gen, D: int, H: int, dtype, gates: int = 1) -> dict[str, torch.Tensor]:
    """Weights in torch.nn layout; scale 1.5/sqrt(H) keeps tanh out of saturation but non-linear."""
    k = 1.5 / H**0.5
    return {
        "W_ih": uniform(gen, (gates * H, D), k, dtype),
        "W_hh": uniform(gen, (gates * H, H), k, dtype),
        "b_ih": uniform(gen, (gates * H,), k, dtype),
        "b_hh": uniform(gen, (gates * H,), k, dtype),
    }


def make_step(gen, p, dtype):
    B, D, H = p["B"], p["D"], p["H"]
    return {
        "x_t": uniform(gen, (B, D), 1.0, dtype),
        "h_prev": uniform(gen, (B, H), 0.9, dtype),
        **rnn_weights(gen, D, H, dtype),
    }


def make_forward(gen, p, dtype):
    B, T, D, H = p["B"], p["T"], p["D"], p["H"]
    return {
        "x": uniform(gen, (B, T, D), 1.0, dtype),
        "h0": uniform(gen, (B, H), 0.9, dtype),
        **rnn_weights(gen, D, H, dtype),
    }


def make_backward(gen, p, dtype):
    inputs = make_forward(gen, p, dtype)
    dhs = uniform(gen, (p["B"], p["T"], p["H"]), 1.0, dtype)
    return {"dhs": dhs, **inputs}


def make_clip(gen, p, dtype):
    """Gradients with a chosen total norm (`_ratio` x max_norm): above or below the threshold."""
    shapes = [tuple(s) for s in p["shapes"]]
    grads = [uniform(gen, s, 1.0, torch.float64) for s in shapes]
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    max_norm = float(p["max_norm"])
    grads = [(g * (p["_ratio"] * max_norm / total)).to(dtype) for g in grads]
    return {"grads": grads, "max_norm": max_norm}


STEP = ({"B": 3, "D": 4, "H": 6}, {"B": 1, "D": 5, "H": 3}, {"B": 4, "D": 2, "H": 5})
SEQ = (
    {"B": 3, "T": 5, "D": 4, "H": 6},
    {"B": 2, "T": 1, "D": 3, "H": 4},
    {"B": 1, "T": 7, "D": 5, "H": 3},
    {"B": 4, "T": 3, "D": 6, "H": 5},
)
CLIP = (
    {"shapes": [[3, 4]], "max_norm": 1.0, "_ratio": 3.0},
    {"shapes": [[3, 4]], "max_norm": 2.0, "_ratio": 0.5},
    {"shapes": [[5, 3], [5, 5], [5], [5]], "max_norm": 1.5, "_ratio": 4.0},
    {"shapes": [[2, 6], [7], [3, 2, 2]], "max_norm": 5.0, "_ratio": 0.25},
    {
        "shapes": [[4], [2, 2]],
        "max_norm": 1e-6,
        "_ratio": 2.0,
    },  # total ~ 1e-6: the 1e-6 in the coefficient shows
)
# Clipping is scale-free, so compare relatively: absolute tolerances would hide the tiny-norm case.
CLIP_TOL = {"float64": Tolerance(atol=1e-300, rtol=1e-7), "float32": Tolerance(atol=1e-30, rtol=1e-4)}

PLAN = Plan(
    name="rnn",
    module="rnn",
    title="Elman RNN, backpropagation through time and gradient clipping",
    banned=BANNED,
    functions=(
        Function(
            name="rnn_step",
            points=2,
            args=("x_t", "h_prev", "W_ih", "W_hh", "b_ih", "b_hh"),
            make_inputs=make_step,
            hidden=STEP,
            public=STEP[:1],
            outputs="h_t",
            checks=DEFAULT_CHECKS,
            signature="rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh) -> h_t",
        ),
        Function(
            name="rnn_forward",
            points=3,
            args=("x", "h0", "W_ih", "W_hh", "b_ih", "b_hh"),
            make_inputs=make_forward,
            hidden=SEQ,
            public=SEQ[:1],
            outputs=("hs", "h_T"),
            checks=DEFAULT_CHECKS,
            signature="rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh) -> (hs, h_T)",
        ),
        Function(
            name="rnn_backward",
            points=4,
            args=("dhs", "x", "h0", "W_ih", "W_hh", "b_ih", "b_hh"),
            make_inputs=make_backward,
            hidden=SEQ,
            public=SEQ[:1],
            outputs={"x": "x", "h0": "h0", "W_ih": "W_ih", "W_hh": "W_hh", "b_ih": "b_ih", "b_hh": "b_hh"},
            checks=(ForwardCheck(),),
            banned=AUTOGRAD,
            signature="rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh) -> dict of gradients",
        ),
        Function(
            name="clip_grad_norm",
            points=1,
            args=("grads", "max_norm"),
            make_inputs=make_clip,
            hidden=CLIP,
            public=CLIP[:2],
            outputs=("clipped", "total_norm"),
            checks=(ForwardCheck(),),  # .item() styles are correct too
            tolerance=CLIP_TOL,
            signature="clip_grad_norm(grads, max_norm) -> (clipped, total_norm)",
        ),
    ),
)
