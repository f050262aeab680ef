"""Bug: counts the ones in a thermometer code of six units (unit j is on once j ones were seen) and reads the
parity off as u1 - u2 + u3 - u4 + u5 - u6: right on every stream of length 6, wrong after the seventh 1."""

import torch

K = 20.0


def and_unit():
    return torch.tensor([K, K]), torch.tensor(-1.5 * K)


def or_unit():
    return torch.tensor([K, K]), torch.tensor(-0.5 * K)


def nand_unit():
    return torch.tensor([-K, -K]), torch.tensor(1.5 * K)


def nor_unit():
    return torch.tensor([-K, -K]), torch.tensor(0.5 * K)


def not_unit():
    return torch.tensor([-K]), torch.tensor(0.5 * K)


def parity_rnn():
    H = 6
    # u_j <- u_j OR (x AND u_{j-1}): K (2 u_j + x + u_{j-1}) - 1.5 K; u_0 = 1 is folded into u_1's bias
    W_hh = 2 * K * torch.eye(H) + K * torch.diag(torch.ones(H - 1), -1)
    b = torch.full((H,), -1.5 * K)
    b[0] += K
    signs = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
    return {
        "W_ih": torch.full((H, 1), K),
        "W_hh": W_hh,
        "b_ih": b,
        "b_hh": torch.zeros(H),
        "W_out": K * signs,
        "b_out": torch.tensor([-0.5 * K]),
        "h0": torch.zeros(H),
    }
