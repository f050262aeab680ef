"""Network: tries TCP to a listener on the host's 127.0.0.1, UDP to a public resolver, raw and netlink
sockets. Its functions are correct: full marks, and every attempt is BLOCKED.
"""

import socket

import torch

TARGETS = {}  # filled in by tests/test_containment.py: paths and values to go after


def report(what, ok, detail=""):
    """One line per attempt: LEAK when the attack worked, BLOCKED when it did not."""
    print(("LEAK " if ok else "BLOCKED ") + what + (": " + str(detail)[:120] if detail else ""), flush=True)


try:
    with socket.create_connection(("127.0.0.1", TARGETS.get("port", 9)), timeout=0.5) as s:
        s.sendall(b"LEAK from the worker")
    report("tcp to the host", True)
except OSError as e:
    report("tcp to the host", False, type(e).__name__)
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("8.8.8.8", 53))
    report("udp out", True)
except OSError as e:
    report("udp out", False, type(e).__name__)
for fam, typ in (
    (socket.AF_INET6, socket.SOCK_STREAM),
    (socket.AF_NETLINK, socket.SOCK_RAW),
    (socket.AF_PACKET, socket.SOCK_RAW),
):
    try:
        socket.socket(fam, typ).close()
        report(f"socket {fam.name}", True)
    except OSError as e:
        report(f"socket {fam.name}", False, type(e).__name__)


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
