"""Correct values from the banned cell kernels by way of torch.ops: lstm_step calls
torch.ops.aten.lstm_cell.default (caught in the source and at run time), gru_step
torch.ops.aten.gru_cell under a name built at run time (caught at run time)."""

import torch


def lstm_step(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.ops.aten.lstm_cell.default(x_t, [h_prev, c_prev], W_ih, W_hh, b_ih, b_hh)


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    h, c, hs = h0, c0, []
    for x_t in x.unbind(1):
        h, c = lstm_step(x_t, h, c, W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
    return torch.stack(hs, 1), (h, c)


def gru_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return getattr(torch.ops.aten, "gru" + "_cell")(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)


def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = gru_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
    return torch.stack(hs, 1), h
