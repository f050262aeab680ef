"""Bug: the initial state says the parity is already 1."""

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
    return {
        "W_ih": torch.tensor([[K], [K]]),
        "W_hh": torch.tensor([[K, -K], [K, -K]]),
        "b_ih": torch.tensor([-0.5 * K, -1.5 * K]),
        "b_hh": torch.zeros(2),
        "W_out": torch.tensor([[K, -K]]),
        "b_out": torch.tensor([-0.5 * K]),
        "h0": torch.tensor([1.0, 0.0]),
    }
