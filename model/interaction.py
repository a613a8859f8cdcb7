"""HFL-Net's interaction (cross-attention) blocks between hand and object features.

A block takes a query map and a key/value map of the same shape ``(B, C, H, W)``, treats
the ``H*W`` cells as tokens, and adds multi-head attention (queries from the first map,
keys and values from the second, all three by 1x1 convolutions, no output projection)
and then a LayerNorm -> MLP branch to the query, both as residuals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """``(..., dim)`` -> ``(..., dim)``: Linear -> exact GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class CrossAttentionBlock(nn.Module):
    """One interaction block: ``(query, key_value)`` maps ``(B, C, H, W)`` -> ``(B, C, H, W)``.

    Attention uses ``num_heads`` heads over consecutive channel groups and the
    ``head_dim ** -0.5`` softmax scale.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.encode_value = nn.Conv2d(dim, dim, 1)
        self.encode_query = nn.Conv2d(dim, dim, 1)
        self.encode_key = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, heads, H*W, C/heads)``."""
        b, c = x.shape[:2]
        return x.reshape(b, self.num_heads, c // self.num_heads, -1).transpose(-1, -2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        b, c, h, w = query.shape
        q = self._heads(self.encode_query(query))
        k = self._heads(self.encode_key(key_value))
        v = self._heads(self.encode_value(key_value))
        # The fused kernel picks flash / memory-efficient attention on GPUs.
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        tokens = query.flatten(2).transpose(1, 2) + attended.transpose(1, 2).reshape(b, h * w, c)
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class CrossAttention(nn.Module):
    """A stack of ``depth`` blocks; each refines the query against the same key/value map."""

    def __init__(self, dim: int, depth: int = 1, num_heads: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossAttentionBlock(dim, num_heads) for _ in range(depth))

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        """``query``, ``key_value``: ``(B, dim, H, W)`` -> ``(B, dim, H, W)``."""
        out = query
        for layer in self.layers:
            out = layer(out, key_value)
        return out
