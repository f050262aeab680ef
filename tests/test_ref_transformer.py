"""reference/transformer.py vs torch.nn and torch.nn.functional in float64 (copied weights), gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference.transformer import (
    BLOCK_WEIGHTS,
    causal_mask,
    causal_self_attention,
    gpt_block,
    gpt_forward,
    layer_norm,
    scaled_dot_product_attention,
    sinusoidal_positions,
)

DT = torch.float64


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= tol, (a - b).abs().max().item()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=DT)


def block_params(layer: nn.TransformerEncoderLayer) -> dict[str, torch.Tensor]:
    p = dict(layer.named_parameters())
    return {
        name: p[name.replace("in_proj", "self_attn.in_proj").replace("out_proj_", "self_attn.out_proj.")
                .replace("norm1_", "norm1.").replace("norm2_", "norm2.")
                .replace("linear1_", "linear1.").replace("linear2_", "linear2.")]
        for name in BLOCK_WEIGHTS
    }  # fmt: skip


def randomise(module: nn.Module, gen: torch.Generator, scale: float = 0.5) -> nn.Module:
    """Non-trivial weights everywhere (biases and layer-norm gains are 0 and 1 by default)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            gain = name.startswith("norm") or name == "weight" and p.ndim == 1  # layer-norm gains near 1
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DT) * scale + (1.0 if gain else 0.0))
    return module


# ----------------------------------------------------------------------------------------------- masks


def test_causal_mask() -> None:
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    for t in range(4):
        for s in range(4):
            assert bool(m[t, s]) == (s <= t)
    assert causal_mask(1).tolist() == [[True]]


# ----------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_matches_torch(gen: torch.Generator, masked: bool) -> None:
    q, k, v = randn(gen, 2, 3, 5, 4), randn(gen, 2, 3, 6, 4), randn(gen, 2, 3, 6, 7)
    mask = (torch.rand(5, 6, generator=gen) > 0.4) | torch.eye(5, 6, dtype=torch.bool) if masked else None
    out, w = scaled_dot_product_attention(q, k, v, mask)
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    close(w.sum(-1), torch.ones(2, 3, 5, dtype=DT))
    scores = q @ k.transpose(-2, -1) / 2.0  # sqrt(hd) = 2
    manual = torch.softmax(scores if mask is None else torch.where(mask, scores, -math.inf), -1)
    close(w, manual)


def test_sdpa_causal_matches_is_causal(gen: torch.Generator) -> None:
    q, k, v = randn(gen, 3, 2, 6, 5), randn(gen, 3, 2, 6, 5), randn(gen, 3, 2, 6, 5)
    out, w = scaled_dot_product_attention(q, k, v, causal_mask(6))
    close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert (w.triu(1) == 0).all()


def test_sdpa_gradcheck(gen: torch.Generator) -> None:
    q, k, v = (randn(gen, 2, 4, 3).requires_grad_() for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda q, k, v: scaled_dot_product_attention(q, k, v, causal_mask(4)), (q, k, v)
    )


@pytest.mark.parametrize(("B", "T", "D", "nh"), [(2, 5, 6, 2), (3, 4, 12, 3), (1, 7, 8, 4)])
def test_causal_self_attention_matches_multihead_attention(gen, B, T, D, nh) -> None:
    mha = randomise(nn.MultiheadAttention(D, nh, batch_first=True, dtype=DT), gen)
    x = randn(gen, B, T, D)
    y, w = causal_self_attention(
        x, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias, nh
    )
    # nn.MultiheadAttention's boolean attn_mask means "may NOT attend": the opposite polarity.
    y_t, w_t = mha(x, x, x, attn_mask=~causal_mask(T), need_weights=True, average_attn_weights=False)
    close(y, y_t)
    close(w, w_t)
    assert w.shape == (B, nh, T, T)


def test_causal_self_attention_matches_sdpa_is_causal(gen: torch.Generator) -> None:
    B, T, D, nh = 2, 5, 6, 3
    W_in, b_in, W_out, b_out = randn(gen, 3 * D, D), randn(gen, 3 * D), randn(gen, D, D), randn(gen, D)
    x = randn(gen, B, T, D)
    q, k, v = (x @ W_in.T + b_in).split(D, -1)
    heads = [t.view(B, T, nh, D // nh).transpose(1, 2) for t in (q, k, v)]
    y_t = (
        F.scaled_dot_product_attention(*heads, is_causal=True).transpose(1, 2).reshape(B, T, D) @ W_out.T
        + b_out
    )
    y, _ = causal_self_attention(x, W_in, b_in, W_out, b_out, nh)
    close(y, y_t)


def test_causal_self_attention_gradcheck(gen: torch.Generator) -> None:
    B, T, D, nh = 2, 3, 4, 2
    args = [randn(gen, B, T, D), randn(gen, 3 * D, D), randn(gen, 3 * D), randn(gen, D, D), randn(gen, D)]
    args = [a.requires_grad_() for a in args]
    assert torch.autograd.gradcheck(lambda *a: causal_self_attention(*a, nh), args)


# ----------------------------------------------------------------------------------------------- positions


def test_sinusoidal_positions() -> None:
    P = sinusoidal_positions(7, 6)
    assert P.dtype == torch.float32 and P.shape == (7, 6)
    for t in range(7):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert abs(P[t, 2 * i].item() - math.sin(angle)) < 1e-7
            assert abs(P[t, 2 * i + 1].item() - math.cos(angle)) < 1e-7
    odd = sinusoidal_positions(4, 5)
    assert odd.shape == (4, 5)
    assert abs(odd[3, 4].item() - math.sin(3 / 10000 ** (4 / 5))) < 1e-7


# ----------------------------------------------------------------------------------------------- layer norm


@pytest.mark.parametrize("D", [2, 3, 16])
def test_layer_norm_matches_nn(gen: torch.Generator, D: int) -> None:
    ln = randomise(nn.LayerNorm(D, dtype=DT), gen)
    x = randn(gen, 3, 4, D)
    x[0] = 0.7 + 1e-3 * x[0]  # low-variance rows: eps matters
    close(layer_norm(x, ln.weight, ln.bias), ln(x))
    close(layer_norm(x, ln.weight, ln.bias), F.layer_norm(x, (D,), ln.weight, ln.bias, 1e-5))


def test_layer_norm_gradcheck(gen: torch.Generator) -> None:
    x, w, b = randn(gen, 2, 3, 4), randn(gen, 4), randn(gen, 4)
    assert torch.autograd.gradcheck(layer_norm, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_()))


# ----------------------------------------------------------------------------------------------- block, GPT


def encoder_layer(D: int, nh: int, Fw: int, gen: torch.Generator) -> nn.TransformerEncoderLayer:
    layer = nn.TransformerEncoderLayer(
        D, nh, Fw, dropout=0.0, activation="gelu", batch_first=True, norm_first=True, dtype=DT
    )
    return randomise(layer, gen, 0.4).train()  # train(): the slow path, identical maths with dropout 0


@pytest.mark.parametrize(("B", "T", "D", "nh", "Fw"), [(2, 5, 6, 2, 10), (3, 4, 8, 4, 16)])
def test_gpt_block_matches_transformer_encoder_layer(gen, B, T, D, nh, Fw) -> None:
    layer = encoder_layer(D, nh, Fw, gen)
    x = randn(gen, B, T, D)
    y = gpt_block(x, *block_params(layer).values(), nh)
    close(y, layer(x, src_mask=~causal_mask(T)))
    close(y, layer(x, src_mask=nn.Transformer.generate_square_subsequent_mask(T, dtype=DT), is_causal=True))


def test_gpt_block_gradcheck(gen: torch.Generator) -> None:
    layer = encoder_layer(4, 2, 6, gen)
    params = [p.detach().clone().requires_grad_() for p in block_params(layer).values()]
    x = randn(gen, 2, 3, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, *p: gpt_block(x, *p, 2), [x, *params])


def test_gpt_forward_matches_nn(gen: torch.Generator) -> None:
    B, T, T_max, D, nh, Fw, V, L = 2, 5, 7, 6, 3, 12, 11, 2
    layers = [encoder_layer(D, nh, Fw, gen) for _ in range(L)]
    wte, wpe = randn(gen, V, D), randn(gen, T_max, D)
    ln_f = randomise(nn.LayerNorm(D, dtype=DT), gen)
    head = randomise(nn.Linear(D, V, bias=False, dtype=DT), gen)
    tokens = torch.randint(0, V, (B, T), generator=gen)

    x = nn.functional.embedding(tokens, wte) + wpe[:T]
    for layer in layers:
        x = layer(x, src_mask=~causal_mask(T))
    expected = head(ln_f(x))

    blocks = [{k: v.detach() for k, v in block_params(layer).items()} for layer in layers]
    logits = gpt_forward(tokens, wte, wpe, blocks, ln_f.weight, ln_f.bias, head.weight, nh)
    close(logits, expected)


def test_gpt_forward_gradcheck(gen: torch.Generator) -> None:
    layer = encoder_layer(4, 2, 6, gen)
    blocks = [{k: v.detach() for k, v in block_params(layer).items()}]
    tokens = torch.tensor([[1, 0, 2], [2, 2, 1]])
    args = [randn(gen, 3, 4), randn(gen, 3, 4), randn(gen, 4), randn(gen, 4), randn(gen, 3, 4)]
    args = [a.requires_grad_() for a in args]

    def f(wte, wpe, g, b, head):
        return gpt_forward(tokens, wte, wpe, blocks, g, b, head, 2)

    assert torch.autograd.gradcheck(f, args)


def test_gpt_forward_is_causal(gen: torch.Generator) -> None:
    layer = encoder_layer(4, 2, 6, gen)
    blocks = [{k: v.detach() for k, v in block_params(layer).items()}]
    wte, wpe, g, b, head = randn(gen, 5, 4), randn(gen, 6, 4), randn(gen, 4), randn(gen, 4), randn(gen, 5, 4)
    tokens = torch.tensor([[1, 0, 2, 4, 3]])
    changed = tokens.clone()
    changed[0, 3:] = torch.tensor([0, 0])
    a = gpt_forward(tokens, wte, wpe, blocks, g, b, head, 2)
    c = gpt_forward(changed, wte, wpe, blocks, g, b, head, 2)
    assert torch.equal(a[:, :3], c[:, :3])
    assert not torch.allclose(a[:, 3:], c[:, 3:])
