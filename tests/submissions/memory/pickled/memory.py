"""memory: train a recurrent model that remembers the first token of a 100-token sequence.

You submit a folder with this file and your trained weights, memory_weights.pt (or memory_weights.npz).
The grader imports this file (keep the training under `if __name__ == "__main__":`) and evaluates
MemoryModel with your weights on 2000 hidden sequences. Do not change MemoryModel's layers or names:
the grader reads the keys of its state_dict.

    python memory.py                     # train, report accuracy, save memory_weights.pt
    seqgrade check memory .              # grade the saved weights on the 500 public sequences
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 4  # tokens 0..3; also the number of classes
LENGTH = 100  # the label is the first token, 99 steps before the end
DECOY = 0.3  # how often the last token is overwritten by the label


def make_batch(gen: torch.Generator, B: int, T: int = LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """B sequences of the task (the grader's, too): every token uniform over 0..3; the label is the first
    token; in a random 30% of the sequences the last token is overwritten by the label (the decoy).

    Shapes: -> tokens (B, T) int64, labels (B,) int64.
    """
    tokens = torch.randint(0, VOCAB, (B, T), generator=gen)
    labels = tokens[:, 0].clone()
    copy = torch.rand(B, generator=gen, dtype=torch.float64) < DECOY
    tokens[copy, -1] = labels[copy]
    return tokens, labels


class MemoryModel(nn.Module):
    """One-hot tokens -> one recurrent layer -> linear read-out of the last hidden state.

    cell: "lstm", "gru" or "rnn" (the grader tells them apart by the shapes); keep the names `rnn` and `fc`.
    Shapes: tokens (B, T) int64 -> logits (B, 4).
    """

    def __init__(self, cell: str = "lstm", hidden: int = 64):
        super().__init__()
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = rnn_class(VOCAB, hidden, batch_first=True)  # one layer, h0 = 0
        self.fc = nn.Linear(hidden, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = nn.functional.one_hot(tokens, VOCAB).float()  # (B, T, V)
        hs, _ = self.rnn(x)  # (B, T, H)
        return self.fc(hs[:, -1])  # (B, V)


def accuracy(model: MemoryModel, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(tokens).argmax(dim=1) == labels).float().mean().item()


def train(model: MemoryModel, *, steps: int, batch: int = 64, lr: float = 1e-3, seed: int = 0) -> MemoryModel:
    """Train on fresh batches from make_batch with cross-entropy, Adam and gradient clipping."""
    gen = torch.Generator().manual_seed(seed)
    val_tokens, val_labels = make_batch(torch.Generator().manual_seed(seed + 1), 500)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(1, steps + 1):
        tokens, labels = make_batch(gen, batch)
        loss = nn.functional.cross_entropy(model(tokens), labels)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            acc = accuracy(model, val_tokens, val_labels)
            print(f"step {step}  loss {loss.item():.3f}  held-out accuracy {acc:.3f}", flush=True)
            if acc >= 0.99:
                break
    return model


if __name__ == "__main__":
    torch.set_num_threads(1)  # small matrices: one thread is fastest
    torch.manual_seed(0)
    model = MemoryModel("lstm", hidden=64)
    with torch.no_grad():  # forget-gate bias 4 (rows H:2H): f_t starts near 0.98, so c_t keeps c_{t-1}
        model.rnn.bias_hh_l0[64:128] += 4.0
    train(model, steps=1500)
    val_tokens, val_labels = make_batch(torch.Generator().manual_seed(1234), 1000)
    print(f"held-out accuracy: {accuracy(model, val_tokens, val_labels):.3f}")
    torch.save(model.state_dict(), "memory_weights.pt")
