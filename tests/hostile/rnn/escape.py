"""Escapes: tries to become root again, run programs, trace its parent, make new namespaces,
and signal the grading process. Its functions are correct: full marks, and every attempt is BLOCKED.
"""

import ctypes
import os
import signal
import subprocess

import torch

TARGETS = {}  # filled in by tests/test_containment.py: paths and values to go after


def report(what, ok, detail=""):
    """One line per attempt: LEAK when the attack worked, BLOCKED when it did not."""
    print(("LEAK " if ok else "BLOCKED ") + what + (": " + str(detail)[:120] if detail else ""), flush=True)


libc = ctypes.CDLL(None, use_errno=True)
for what, attempt in (
    ("setuid(0)", lambda: os.setuid(0)),
    ("run /bin/sh", lambda: subprocess.run(["/bin/sh", "-c", "id"], capture_output=True, timeout=2)),
    ("os.system", lambda: os.system("id") == 0 or (_ for _ in ()).throw(OSError("failed"))),
    (
        "ptrace the grader",
        lambda: (
            libc.ptrace(16, TARGETS.get("grader_pid", 1), 0, 0) == 0
            or (_ for _ in ()).throw(OSError(ctypes.get_errno(), "ptrace"))
        ),
    ),
    (
        "unshare user namespace",
        lambda: (
            libc.unshare(0x10000000) == 0 or (_ for _ in ()).throw(OSError(ctypes.get_errno(), "unshare"))
        ),
    ),
    ("signal the grader", lambda: os.kill(TARGETS.get("grader_pid", 1), signal.SIGSTOP)),
    ("chmod the grader's files", lambda: os.chmod(TARGETS.get("repo", "/"), 0o777)),
):
    try:
        attempt()
        report(what, True)
    except Exception as e:
        report(what, False, type(e).__name__)


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
