"""Secrets: walks the filesystem for other students' submissions (a marker string in the honest
files), the reports, the reference and the secret. Its functions are correct: full marks; nothing is found.
"""

import os
import time

import torch

TARGETS = {}  # filled in by tests/test_containment.py: paths and values to go after


def report(what, ok, detail=""):
    """One line per attempt: LEAK when the attack worked, BLOCKED when it did not."""
    print(("LEAK " if ok else "BLOCKED ") + what + (": " + str(detail)[:120] if detail else ""), flush=True)


def hunt():
    marker = TARGETS.get("marker", "@@").encode()
    secret = TARGETS.get("secret_value", "@@").encode()
    roots = ["/", "/tmp", "/work", "/root", "/run", "/home"]
    roots += [TARGETS.get("submissions", "/"), TARGETS.get("out", "/")]
    roots += [TARGETS.get("repo", "/"), os.path.dirname(TARGETS.get("secret_file", "/"))]
    start, seen, hits = time.monotonic(), 0, []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            if time.monotonic() - start > 3 or seen > 20000:
                break
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev", "site-packages", "lib")]
            for name in filenames:
                seen += 1
                path = os.path.join(dirpath, name)
                if path.startswith(os.getcwd()):
                    continue
                try:
                    with open(path, "rb") as f:
                        data = f.read(1 << 16)
                except OSError:
                    continue
                if marker in data or secret in data or b"def rnn_forward" in data or b'"score"' in data:
                    hits.append(path)
    report(f"files with secrets, other submissions or reports ({seen} looked at)", bool(hits), hits[:3])


hunt()


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
