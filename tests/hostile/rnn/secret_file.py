"""Secrets: tries to read the instructor's secret (the file, the environment, the grading
process's /proc environ, cmdline and memory) and searches its own memory for the secret's value. Its functions
are correct: full marks, and every attempt is BLOCKED.
"""

import os
import re

import torch

TARGETS = {}  # filled in by tests/test_containment.py: paths and values to go after


def report(what, ok, detail=""):
    """One line per attempt: LEAK when the attack worked, BLOCKED when it did not."""
    print(("LEAK " if ok else "BLOCKED ") + what + (": " + str(detail)[:120] if detail else ""), flush=True)


for key in ("SEQGRADE_SECRET",):
    report("env " + key, key in os.environ, os.environ.get(key, ""))
try:
    with open(TARGETS.get("secret_file", "/nonexistent"), "rb") as f:
        report("read secret file", True, f.read(40))
except OSError as e:
    report("read secret file", False, type(e).__name__)
pid = TARGETS.get("grader_pid", os.getppid())
for what in ("environ", "mem", "maps", "cwd/.seqgrade/secret", "root/etc/shadow"):
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            data = f.read(4096)
        report(f"read /proc/<grader>/{what}", True, data[:60])
    except OSError as e:
        report(f"read /proc/<grader>/{what}", False, type(e).__name__)
try:
    with open("/etc/shadow", "rb") as f:
        report("read /etc/shadow", True, f.read(20))
except OSError as e:
    report("read /etc/shadow", False, type(e).__name__)
needle = TARGETS.get("secret_value", "").encode()
found = False
if needle:
    try:
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
                if not m or "[vvar]" in line or "[vsyscall]" in line:
                    continue
                lo, hi = int(m.group(1), 16), int(m.group(2), 16)
                if hi - lo > 1 << 28:
                    continue
                try:
                    mem.seek(lo)
                    if needle in mem.read(hi - lo):
                        found = True
                        break
                except OSError:
                    pass
    except OSError as e:
        report("scan own memory", False, type(e).__name__)
report("secret in own memory", found)


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
