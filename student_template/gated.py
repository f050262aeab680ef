"""LSTM and GRU cells and their forward passes over time, in torch.nn.LSTM / torch.nn.GRU layout.

Row-vector convention with two biases, gate blocks stacked along the rows of the weights.

LSTM (rows i, f, g, o of W_ih (4H, D), W_hh (4H, H), b_ih, b_hh (4H,)):

    [i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh       (split into four (B, H) blocks)
    i, f, o = sigmoid(i), sigmoid(f), sigmoid(o);   g = tanh(g)
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

GRU (rows r, z, n of W_ih (3H, D), W_hh (3H, H), b_ih, b_hh (3H,)):

    r = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)
    z = sigmoid(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
    n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

Shapes: B batch, T time, D input features, H hidden units.


Self-check: seqgrade check gated gated.py
"""

from __future__ import annotations
import torch
from torch import Tensor


def lstm_step(
    x_t: Tensor, h_prev: Tensor, c_prev: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """One LSTM step (gate order i, f, g, o as torch.nn.LSTM).

    Shapes: x_t (B, D), h_prev (B, H), c_prev (B, H), W_ih (4H, D), W_hh (4H, H), b_ih (4H,), b_hh (4H,)
    -> h_t (B, H), c_t (B, H).
    """
    raise NotImplementedError("lstm_step: your code here")


def lstm_forward(
    x: Tensor, h0: Tensor, c0: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run lstm_step over time from (h0, c0); equals torch.nn.LSTM(D, H, batch_first=True).

    Shapes: x (B, T, D), h0 (B, H), c0 (B, H) -> hs (B, T, H), (h_T (B, H), c_T (B, H)).
    """
    raise NotImplementedError("lstm_forward: your code here")


def gru_step(x_t: Tensor, h_prev: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step (gate order r, z, n as torch.nn.GRU; the reset gate multiplies h W_hn^T + b_hn).

    Shapes: x_t (B, D), h_prev (B, H), W_ih (3H, D), W_hh (3H, H), b_ih (3H,), b_hh (3H,) -> h_t (B, H).
    """
    raise NotImplementedError("gru_step: your code here")


def gru_forward(
    x: Tensor, h0: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """Run gru_step over time from h0; equals torch.nn.GRU(D, H, batch_first=True).

    Shapes: x (B, T, D), h0 (B, H) -> hs (B, T, H), h_T (B, H).
    """
    raise NotImplementedError("gru_forward: your code here")
