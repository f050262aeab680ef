"""Elman RNN: one step, a forward over time, backpropagation through time by hand, and clipping.

Row-vector convention, as torch.nn.RNN (nonlinearity="tanh", batch_first=True):

    h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)

Shapes: B batch, T time, D input features, H hidden units.


Self-check: seqgrade check rnn rnn.py
"""

from __future__ import annotations
import torch
from torch import Tensor


def rnn_step(x_t: Tensor, h_prev: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One Elman step: h_t = tanh(x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh).

    Shapes: x_t (B, D), h_prev (B, H), W_ih (H, D), W_hh (H, H), b_ih (H,), b_hh (H,) -> h_t (B, H).
    """
    raise NotImplementedError("rnn_step: your code here")


def rnn_forward(
    x: Tensor, h0: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """Run rnn_step over t = 0..T-1 starting from h0; equals torch.nn.RNN(D, H, batch_first=True).

    Shapes: x (B, T, D), h0 (B, H) -> hs (B, T, H) (every h_t, t = 1..T), h_T (B, H) (= hs[:, -1]).
    """
    raise NotImplementedError("rnn_forward: your code here")


def rnn_backward(
    dhs: Tensor, x: Tensor, h0: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> dict[str, Tensor]:
    """Backpropagation through time by hand, for a loss L whose gradient w.r.t. hs is dhs.

    With a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh and h_t = tanh(a_t), going t = T..1:

        dh_t = dhs_t + da_{t+1} W_hh          (da_{T+1} = 0)
        da_t = dh_t * (1 - h_t^2)
        dW_ih += da_t^T x_t,   dW_hh += da_t^T h_{t-1},   db_ih = db_hh += sum_B da_t
        dx_t = da_t W_ih,      dh0 = da_1 W_hh

    Shapes: dhs (B, T, H), x (B, T, D), h0 (B, H) -> dict with keys "x" (B, T, D), "h0" (B, H),
    "W_ih" (H, D), "W_hh" (H, H), "b_ih" (H,), "b_hh" (H,).
    """
    raise NotImplementedError("rnn_backward: your code here")


def clip_grad_norm(grads: list[Tensor], max_norm: float) -> tuple[list[Tensor], Tensor]:
    """Global-norm clipping with the semantics of torch.nn.utils.clip_grad_norm_, without mutation.

        total = sqrt(sum_i ||g_i||_2^2),   coef = min(max_norm / (total + 1e-6), 1),   g_i' = coef * g_i

    Shapes: grads a list of tensors of any shapes, max_norm a float -> (list of tensors shaped like grads,
    total a 0-dim tensor: the norm before clipping).
    """
    raise NotImplementedError("clip_grad_norm: your code here")
