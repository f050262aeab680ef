"""Correct, another construction: plain Python numbers and lists, NumPy arrays, and a parity RNN with three
units, h_1 = x AND NOT p, h_2 = NOT x AND p (so p_t = h_1 OR h_2), plus a spare unit that is always on."""

import numpy as np


def and_unit():
    return [10.0, 10.0], -15.0


def or_unit():
    return np.array([30.0, 30.0]), np.array([-10.0])


def nand_unit():
    return (-12.0, -12.0), 18.0


def nor_unit():
    return [-50, -50], 25


def not_unit():
    return np.array([-12.0], dtype=np.float32), np.float32(6.0)


def parity_rnn():
    k = 30.0
    # previous parity p = h_1 + h_2 (exactly one of them is on when p = 1)
    return {
        "W_ih": np.array([[k], [-k], [0.0]]),
        "W_hh": np.array([[-k, -k, 0.0], [k, k, 0.0], [0.0, 0.0, 0.0]]),
        "b_ih": np.array([-0.5 * k, -0.5 * k, 10.0]),
        "b_hh": np.zeros(3),
        "W_out": np.array([[k, k, 0.0]]),
        "b_out": np.array([-0.5 * k]),
        "h0": np.array([0.0, 0.0, 1.0]),
    }
