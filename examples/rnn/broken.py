"""A broken submission: one function never finishes, one crashes the interpreter, one is missing,
and the module prints while it is imported. Each loses only its own points."""

import os

import torch

print("training my model... (this print is captured in the report)")


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    while True:  # forgot to advance t
        pass


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    os._exit(1)
