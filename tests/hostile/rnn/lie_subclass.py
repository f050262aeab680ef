"""Lies: results that claim to equal anything. A tensor subclass whose __torch_function__
answers True to every comparison and whose __eq__ is always True, an object with __eq__/__array__, a list
subclass that equals everything. The values inside are zeros: every check fails.
"""

import torch


class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("allclose", "equal", "isclose", "eq", "__eq__", "all", "any"):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})

    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


class EqualsAnything:
    shape = property(lambda self: (1,))

    def __eq__(self, other):
        return True

    def __array__(self, *a, **k):
        import numpy

        return numpy.zeros(1)


class ListLiar(list):
    def __eq__(self, other):
        return True


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.zeros_like(h_prev).as_subclass(Liar)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    return EqualsAnything(), EqualsAnything()


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
    gx = torch.stack(gx, 1)
    return {"x": gx, "h0": carry, "W_ih": gW_ih, "W_hh": gW_hh, "b_ih": gb, "b_hh": gb.clone()}


def clip_grad_norm(grads, max_norm):
    return ListLiar(torch.zeros_like(g).as_subclass(Liar) for g in grads), torch.zeros(()).as_subclass(Liar)
