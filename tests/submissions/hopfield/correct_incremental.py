"""Correct, vectorised storage and an incremental energy: E changes by -(s_i' - s_i) h_i per update."""

import torch


def hebbian_weights(patterns):
    W = torch.einsum("pi,pj->ij", patterns, patterns)
    return W * (1 - torch.eye(W.shape[0], dtype=W.dtype))


def energy(W, b, s):
    return -(s * (W @ s)).sum() / 2 - (b * s).sum()


def recall(W, b, s0, order, max_sweeps):
    s = s0.clone()
    E = energy(W, b, s)
    trace = []
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        flips = 0
        for i in order:
            h = torch.dot(W[i], s) + b[i]
            new = torch.where(h > 0, 1.0, -1.0).to(s.dtype)
            if new != s[i]:
                E = E - (new - s[i]) * h
                s[i] = new
                flips += 1
            trace.append(E.clone())
        if flips == 0:
            break
    return s, torch.stack(trace)
