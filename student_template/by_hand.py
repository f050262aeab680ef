"""Weights by hand: single sigmoid units that compute logic gates, and an RNN that computes running parity.

A unit (the lecture's artificial neuron) on binary inputs x in {0, 1}^D:

    y = sigmoid(x w^T + b)

The parity RNN is torch.nn.RNN's Elman layout with the sigmoid as activation, and a sigmoid read-out:

    h_t = sigmoid(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   h_0 = h0
    y_t = sigmoid(h_t W_out^T + b_out)                          should be x_1 XOR ... XOR x_t

The grader runs these on the student's weights, so any correct construction is accepted. Large weights turn
each sigmoid into a near step: sigmoid(+-10) = 1 - 4.5e-5 or 4.5e-5.

Shapes: B batch (rows of a truth table, or bit streams), T time, D inputs of a unit, H hidden units.


Self-check: seqgrade check by_hand by_hand.py
"""

from __future__ import annotations
from typing import Any
import torch
from torch import Tensor

K = 20.0  # gain of the constructions: sigmoid(K/2) ~ 1 - 4.5e-5
RNN_KEYS = {
    "W_ih": "(H, 1)",
    "W_hh": "(H, H)",
    "b_ih": "(H,)",
    "b_hh": "(H,)",
    "W_out": "(1, H)",
    "b_out": "(1,)",
    "h0": "(H,)",
}


def and_unit() -> tuple[Tensor, Tensor]:
    """AND: fires only when both inputs are on. Shapes: -> w (2,), b ()."""
    raise NotImplementedError("and_unit: your code here")


def or_unit() -> tuple[Tensor, Tensor]:
    """OR: fires when at least one input is on. Shapes: -> w (2,), b ()."""
    raise NotImplementedError("or_unit: your code here")


def nand_unit() -> tuple[Tensor, Tensor]:
    """NAND = NOT AND. Shapes: -> w (2,), b ()."""
    raise NotImplementedError("nand_unit: your code here")


def nor_unit() -> tuple[Tensor, Tensor]:
    """NOR = NOT OR. Shapes: -> w (2,), b ()."""
    raise NotImplementedError("nor_unit: your code here")


def not_unit() -> tuple[Tensor, Tensor]:
    """NOT. Shapes: -> w (1,), b ()."""
    raise NotImplementedError("not_unit: your code here")


def parity_rnn() -> dict[str, Tensor]:
    """Weights of a sigmoid RNN whose output y_t is the parity of the bits x_1..x_t (any H from 1 to 64).

    Shapes: -> dict with W_ih (H, 1), W_hh (H, H), b_ih (H,), b_hh (H,), W_out (1, H), b_out (1,), h0 (H,).
    """
    raise NotImplementedError("parity_rnn: your code here")
