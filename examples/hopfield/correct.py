"""Correct, written with plain loops (as in the lecture)."""

import torch


def hebbian_weights(patterns):
    P, N = patterns.shape
    W = torch.zeros(N, N, dtype=patterns.dtype)
    for p in range(P):
        for i in range(N):
            for j in range(N):
                if i != j:
                    W[i, j] += patterns[p, i] * patterns[p, j]
    return W


def energy(W, b, s):
    return -0.5 * s @ W @ s - b @ s


def recall(W, b, s0, order, max_sweeps):
    s = s0.clone()
    energies = []
    for _ in range(max_sweeps):
        changed = False
        for i in order.tolist():
            h = W[i] @ s + b[i]
            new = 1.0 if h > 0 else -1.0
            if s[i] != new:
                changed = True
                s[i] = new
            energies.append(energy(W, b, s))
        if not changed:
            break
    return s, torch.stack(energies)
