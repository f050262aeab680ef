"""Disk: rnn_backward writes 32 MiB files until the disk says no (stops at 1 GiB for safety
if containment failed), reports the total, then raises. rnn_backward only.
"""

import torch


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
        hs.append(h)
    return torch.stack(hs, 1), h


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    total = 0
    try:
        for i in range(32):
            with open(f"fill{i}.bin", "wb") as f:
                for _ in range(32):
                    f.write(b"x" * (1 << 20))
                    total += 1
    except OSError as e:
        print(f"disk full after {total} MiB: {type(e).__name__}", flush=True)
    raise RuntimeError(f"wrote {total} MiB")


def clip_grad_norm(grads, max_norm):
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).to(grads[0].dtype)
    coef = min(max_norm / (total.item() + 1e-6), 1.0)
    return [g * coef for g in grads], total
