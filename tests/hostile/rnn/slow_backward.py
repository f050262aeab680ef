"""Slow both ways: rnn_forward's forward pass takes 0.6 s, its backward pass 0.6 s more, with a 1 s
limit per call. Its forward check passes; its gradient check, forward and backward together as if it
ran alone, times out (the forward half of a shared call does not restart the clock)."""

import time

import torch


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)


class _Slow(torch.autograd.Function):
    """The identity, 0.6 s each way."""

    @staticmethod
    def forward(ctx, h):
        time.sleep(0.6)
        return h.clone()

    @staticmethod
    def backward(ctx, grad):
        time.sleep(0.6)
        return grad


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
        hs.append(h)
    return _Slow.apply(torch.stack(hs, dim=1)), h


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
        hs.append(h)
    prev = [h0] + hs[:-1]
    gx = [None] * x.shape[1]
    gW_ih, gW_hh, gb = torch.zeros_like(W_ih), torch.zeros_like(W_hh), torch.zeros_like(b_ih)
    carry = torch.zeros_like(h0)
    for t in reversed(range(x.shape[1])):
        da = (dhs[:, t] + carry) * (1 - hs[t] ** 2)
        gW_ih = gW_ih + da.T @ x[:, t]
        gW_hh = gW_hh + da.T @ prev[t]
        gb = gb + da.sum(0)
        gx[t] = da @ W_ih
        carry = da @ W_hh
    return {
        "x": torch.stack(gx, dim=1),
        "h0": carry,
        "W_ih": gW_ih,
        "W_hh": gW_hh,
        "b_ih": gb,
        "b_hh": gb.clone(),
    }


def clip_grad_norm(grads, max_norm):
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).to(grads[0].dtype)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g * coef for g in grads], total
