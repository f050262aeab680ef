"""Correct: einsum everywhere, float64 inside every function and cast back to the input dtype at the end."""

import torch


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    d = torch.float64
    a = torch.einsum("bd,hd->bh", x_t.to(d), W_ih.to(d)) + torch.einsum("bk,hk->bh", h_prev.to(d), W_hh.to(d))
    return torch.tanh(a + b_ih.to(d) + b_hh.to(d)).to(x_t.dtype)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    outs = []
    h = h0.double()
    for x_t in torch.unbind(x.double(), dim=1):
        h = rnn_step(x_t, h, W_ih.double(), W_hh.double(), b_ih.double(), b_hh.double())
        outs.append(h)
    hs = torch.stack(outs, 1)
    return hs.to(x.dtype), h.to(x.dtype)


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    dtype = x.dtype
    dhs, x, h0, W_ih, W_hh, b_ih, b_hh = (t.double() for t in (dhs, x, h0, W_ih, W_hh, b_ih, b_hh))
    hs, _ = rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    g = {"x": torch.zeros_like(x), "W_ih": torch.zeros_like(W_ih), "W_hh": torch.zeros_like(W_hh)}
    g["b_ih"] = torch.zeros_like(b_ih)
    dh = torch.zeros_like(h0)
    for t in reversed(range(x.shape[1])):
        h_prev = hs[:, t - 1] if t > 0 else h0
        da = (dhs[:, t] + dh) * (1 - hs[:, t].pow(2))
        g["W_ih"] += torch.einsum("bh,bd->hd", da, x[:, t])
        g["W_hh"] += torch.einsum("bh,bk->hk", da, h_prev)
        g["b_ih"] += torch.einsum("bh->h", da)
        g["x"][:, t] = torch.einsum("bh,hd->bd", da, W_ih)
        dh = torch.einsum("bh,hk->bk", da, W_hh)
    g["h0"] = dh
    g["b_hh"] = g["b_ih"]
    return {k: v.to(dtype) for k, v in g.items()}


def clip_grad_norm(grads, max_norm):
    total = torch.sqrt(sum(torch.einsum("...,...->", g.double(), g.double()) for g in grads))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [(g.double() * coef).to(g.dtype) for g in grads], total.to(grads[0].dtype)
