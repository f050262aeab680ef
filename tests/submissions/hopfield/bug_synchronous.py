"""Bug: synchronous updates (every unit from the old state at once), energy recorded N times per sweep."""

import torch


def hebbian_weights(patterns):
    W = patterns.T @ patterns
    return W - torch.diag(torch.diagonal(W))


def energy(W, b, s):
    return -0.5 * s @ W @ s - b @ s


def recall(W, b, s0, order, max_sweeps):
    s = s0.clone()
    energies = []
    for _ in range(max_sweeps):
        new = torch.where(W @ s + b > 0, 1.0, -1.0).to(s.dtype)
        changed = not torch.equal(new, s)
        s = new
        energies += [energy(W, b, s)] * len(s)
        if not changed:
            break
    return s, torch.stack(energies)
