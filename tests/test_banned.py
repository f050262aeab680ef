"""The static banned-API scan (trusted side): aliases, helpers and attribution to the right function."""

from __future__ import annotations

from grader.banned import scan

BANS = (
    "torch.nn.LSTM",
    "torch.nn.RNN",
    "torch._VF",
    "torch.lstm_cell",
    "torch.Tensor.backward",
    "torch.autograd.grad",
)


def bans(*fns):
    return {f: BANS for f in fns}


def test_direct_alias_and_from_imports():
    src = """
import torch
import torch.nn as tnn
from torch.nn import LSTM as L
from torch import _VF

def a(x):
    return torch.nn.LSTM(3, 4)(x)

def b(x):
    return tnn.RNN(3, 4)(x)

def c(x):
    return L(3, 4)(x)

def d(x):
    return _VF.lstm_cell(x)

def e(x):
    return torch.tanh(x)
"""
    out = scan(src, ["a", "b", "c", "d", "e"], bans("a", "b", "c", "d", "e"))
    assert out == {
        "a": ["torch.nn.LSTM"],
        "b": ["torch.nn.RNN"],
        "c": ["torch.nn.LSTM"],
        "d": ["torch._VF", "torch.lstm_cell"],
    }


def test_helpers_are_followed_and_attribution_is_per_function():
    src = """
import torch

def helper(x):
    return torch.lstm_cell(x)

def graded(x):
    return helper(x)

def innocent(x):
    return x * 2
"""
    out = scan(src, ["graded", "innocent"], bans("graded", "innocent"))
    assert out == {"graded": ["torch.lstm_cell"]}


def test_backward_and_autograd_only_where_banned():
    src = """
import torch

def rnn_backward(x):
    y = (x ** 2).sum()
    y.backward()
    return x.grad

def rnn_forward(x):
    return torch.autograd.grad(x.sum(), [x])
"""
    out = scan(src, ["rnn_backward", "rnn_forward"], {"rnn_backward": BANS, "rnn_forward": ()})
    assert out == {"rnn_backward": ["torch.Tensor.backward"]}


def test_unparsable_source_scans_nothing():
    assert scan("def (", ["a"], bans("a")) == {}
