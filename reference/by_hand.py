"""Weights by hand: single sigmoid units that compute logic gates, and an RNN that computes running parity.

A unit (the lecture's artificial neuron) on binary inputs x in {0, 1}^D:

    y = sigmoid(x w^T + b)

The parity RNN is torch.nn.RNN's Elman layout with the sigmoid as activation, and a sigmoid read-out:

    h_t = sigmoid(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   h_0 = h0
    y_t = sigmoid(h_t W_out^T + b_out)                          should be x_1 XOR ... XOR x_t

The grader runs these on the student's weights, so any correct construction is accepted. Large weights turn
each sigmoid into a near step: sigmoid(+-10) = 1 - 4.5e-5 or 4.5e-5.

Shapes: B batch (rows of a truth table, or bit streams), T time, D inputs of a unit, H hidden units.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

K = 20.0  # gain of the constructions: sigmoid(K/2) ~ 1 - 4.5e-5

GATES = {
    "and": (2, lambda x: x[:, 0] * x[:, 1]),
    "or": (2, lambda x: torch.maximum(x[:, 0], x[:, 1])),
    "nand": (2, lambda x: 1 - x[:, 0] * x[:, 1]),
    "nor": (2, lambda x: 1 - torch.maximum(x[:, 0], x[:, 1])),
    "not": (1, lambda x: 1 - x[:, 0]),
}
RNN_KEYS = {
    "W_ih": "(H, 1)",
    "W_hh": "(H, H)",
    "b_ih": "(H,)",
    "b_hh": "(H,)",
    "W_out": "(1, H)",
    "b_out": "(1,)",
    "h0": "(H,)",
}


def truth_table(gate: str) -> tuple[Tensor, Tensor]:
    """Every binary input of the gate and its output. Shapes: -> x (2^D, D), y (2^D,), both float64."""
    D, f = GATES[gate]
    x = torch.tensor([[(r >> (D - 1 - d)) & 1 for d in range(D)] for r in range(2**D)], dtype=torch.float64)
    return x, f(x)


def unit(w: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """y = sigmoid(x w^T + b). Shapes: w (D,), b () or (1,), x (B, D) -> y (B,)."""
    return torch.sigmoid(x @ w + b.reshape(()))  # (B,)


def run_unit(weights: Any, x: Tensor) -> Tensor:
    """A student's (w, b) run on x, in float64, with a ValueError naming what is malformed.

    Shapes: weights a pair (w (D,), b () or (1,)), x (B, D) -> y (B,).
    """
    if not isinstance(weights, (tuple, list)) or len(weights) != 2:
        raise ValueError(f"expected a pair (w, b), got {_what(weights)}")
    w, b = (_tensor(v, name) for v, name in zip(weights, ("w", "b"), strict=True))
    D = x.shape[1]
    if tuple(w.shape) != (D,):
        raise ValueError(f"w has shape {tuple(w.shape)}, expected ({D},)")
    if b.numel() != 1:
        raise ValueError(f"b has shape {tuple(b.shape)}, expected a scalar")
    return unit(w, b, x.double())


def parity(bits: Tensor) -> Tensor:
    """Running XOR: out[:, t] = bits[:, 0] XOR ... XOR bits[:, t]. Shapes: bits (B, T) -> (B, T) float64."""
    return (torch.cumsum(bits.long(), dim=1) % 2).double()


def rnn_outputs(weights: dict[str, Tensor], bits: Tensor) -> Tensor:
    """y_t of the sigmoid RNN for every step of every stream.

    Shapes: weights as RNN_KEYS, bits (B, T) of 0/1 -> y (B, T).
    """
    h = weights["h0"].expand(bits.shape[0], -1)  # (B, H)
    ys = []
    for t in range(bits.shape[1]):
        x_t = bits[:, t : t + 1].to(h.dtype)  # (B, 1)
        h = torch.sigmoid(x_t @ weights["W_ih"].T + weights["b_ih"] + h @ weights["W_hh"].T + weights["b_hh"])
        ys.append(torch.sigmoid(h @ weights["W_out"].T + weights["b_out"])[:, 0])  # (B,)
    return torch.stack(ys, dim=1)  # (B, T)


def run_rnn(weights: Any, bits: Tensor) -> Tensor:
    """A student's weights dict run on bit streams, in float64, with a ValueError naming what is malformed."""
    if not isinstance(weights, dict):
        raise ValueError(f"expected a dict with keys {sorted(RNN_KEYS)}, got {_what(weights)}")
    missing = [k for k in RNN_KEYS if k not in weights]
    if missing:
        raise ValueError(f"the dict lacks the keys {missing}")
    w = {k: _tensor(weights[k], k) for k in RNN_KEYS}
    if w["W_hh"].ndim != 2 or w["W_hh"].shape[0] != w["W_hh"].shape[1] or not 1 <= w["W_hh"].shape[0] <= 64:
        raise ValueError(f"W_hh has shape {tuple(w['W_hh'].shape)}, expected (H, H) with 1 <= H <= 64")
    H = w["W_hh"].shape[0]
    want = {"W_ih": (H, 1), "b_ih": (H,), "b_hh": (H,), "W_out": (1, H), "b_out": (1,), "h0": (H,)}
    for k, shape in want.items():
        if tuple(w[k].shape) != shape:
            raise ValueError(f"{k} has shape {tuple(w[k].shape)}, expected {shape} (H = {H} from W_hh)")
    return rnn_outputs(w, bits)


def _tensor(v: Any, name: str) -> Tensor:
    try:
        t = torch.as_tensor(v, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} is {_what(v)}, not numbers") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return t


def _what(v: Any) -> str:
    return (
        f"a {type(v).__name__}" if not isinstance(v, (tuple, list)) else f"a {type(v).__name__} of {len(v)}"
    )


# ---------------------------------------------------------------------------------------------- constructions


def and_unit() -> tuple[Tensor, Tensor]:
    """AND: fires only when both inputs are on. Shapes: -> w (2,), b ()."""
    return torch.tensor([K, K]), torch.tensor(-1.5 * K)


def or_unit() -> tuple[Tensor, Tensor]:
    """OR: fires when at least one input is on. Shapes: -> w (2,), b ()."""
    return torch.tensor([K, K]), torch.tensor(-0.5 * K)


def nand_unit() -> tuple[Tensor, Tensor]:
    """NAND = NOT AND. Shapes: -> w (2,), b ()."""
    return torch.tensor([-K, -K]), torch.tensor(1.5 * K)


def nor_unit() -> tuple[Tensor, Tensor]:
    """NOR = NOT OR. Shapes: -> w (2,), b ()."""
    return torch.tensor([-K, -K]), torch.tensor(0.5 * K)


def not_unit() -> tuple[Tensor, Tensor]:
    """NOT. Shapes: -> w (1,), b ()."""
    return torch.tensor([-K]), torch.tensor(0.5 * K)


def parity_rnn() -> dict[str, Tensor]:
    """Weights of a sigmoid RNN whose output y_t is the parity of the bits x_1..x_t (any H from 1 to 64).

    Shapes: -> dict with W_ih (H, 1), W_hh (H, H), b_ih (H,), b_hh (H,), W_out (1, H), b_out (1,), h0 (H,).
    """
    # H = 2: h_1 = OR(x_t, p_{t-1}), h_2 = AND(x_t, p_{t-1}), and p_t = h_1 AND NOT h_2. The previous parity
    # is read off the state as h_1 - h_2 (0 or 1), so both units see it through the weights [+K, -K].
    return {
        "W_ih": torch.tensor([[K], [K]]),
        "W_hh": torch.tensor([[K, -K], [K, -K]]),
        "b_ih": torch.tensor([-0.5 * K, -1.5 * K]),
        "b_hh": torch.zeros(2),
        "W_out": torch.tensor([[K, -K]]),
        "b_out": torch.tensor([-0.5 * K]),
        "h0": torch.zeros(2),
    }
