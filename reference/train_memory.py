"""Train the `memory` model to the top accuracy band on the CPU and save its weights.

    python -m reference.train_memory --out memory_weights.npz            # LSTM, H = 32, forget bias 3
    python -m reference.train_memory --cell rnn --out rnn_weights.npz    # the plain RNN, for comparison

Trains MemoryModel (the handout's architecture) with Adam and gradient clipping on fresh batches of the task
in reference.memory, evaluates on held-out sequences every `--every` steps, and stops at `--target` accuracy
or after `--max-steps`. Prints one line per evaluation and a final JSON line with the accuracy and time.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from reference.memory import CLASSES, LENGTH, VOCAB, accuracy, make_batch

RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class MemoryModel(nn.Module):
    """One-hot tokens -> one recurrent layer -> linear read-out of the last hidden state (the handout's)."""

    def __init__(self, cell: str = "lstm", hidden: int = 32):
        super().__init__()
        self.rnn = RNN_CLASSES[cell](VOCAB, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = nn.functional.one_hot(tokens, VOCAB).float()  # (B, T, V)
        hs, _ = self.rnn(x)  # (B, T, H)
        return self.fc(hs[:, -1])  # (B, K)


def train(
    *,
    cell: str = "lstm",
    hidden: int = 32,
    steps: int = 3000,
    batch: int = 64,
    lr: float = 3e-3,
    clip: float = 1.0,
    forget_bias: float = 3.0,
    length: int = LENGTH,
    seed: int = 0,
    target: float = 0.99,
    every: int = 100,
    log: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train; return (state dict as float32 numpy arrays, {"accuracy", "steps", "seconds"})."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    val_tokens, val_labels = make_batch(torch.Generator().manual_seed(seed + 1), 1000, length)
    model = MemoryModel(cell, hidden)
    if cell == "lstm" and forget_bias:
        with (
            torch.no_grad()
        ):  # a positive forget-gate bias: c_t keeps c_{t-1} from the start (Gers et al., 2000)
            model.rnn.bias_hh_l0[hidden : 2 * hidden] = forget_bias
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    acc, step = 0.0, 0
    for step in range(1, steps + 1):
        tokens, labels = make_batch(gen, batch, length)
        loss = nn.functional.cross_entropy(model(tokens), labels)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if step % every == 0:
            weights = {k: v.detach().double() for k, v in model.state_dict().items()}
            acc = accuracy(weights, val_tokens, val_labels)
            if log:
                print(
                    f"step {step:5d}  loss {loss.item():.4f}  val accuracy {acc:.3f}  "
                    f"{time.perf_counter() - start:.0f}s",
                    flush=True,
                )
            if acc >= target:
                break
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    return state, {"accuracy": acc, "steps": step, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", choices=sorted(RNN_CLASSES), default="lstm")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--forget-bias", type=float, default=3.0)
    p.add_argument("--length", type=int, default=LENGTH)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--out", default="")
    a = p.parse_args()
    state, info = train(
        cell=a.cell,
        hidden=a.hidden,
        steps=a.max_steps,
        batch=a.batch,
        lr=a.lr,
        seed=a.seed,
        forget_bias=a.forget_bias,
        length=a.length,
        target=a.target,
        every=a.every,
    )
    if a.out:
        np.savez(a.out, **state)
    print(json.dumps({"cell": a.cell, "hidden": a.hidden, **info}))


if __name__ == "__main__":
    main()
