"""A pre-LayerNorm Transformer layer whose MHSA and FFN units can be skipped per frame.

Three ways to run a unit, all computing the same function for hard gates:
- dense: every frame runs, the output is multiplied by the gate (training; the
  straight-through gradient needs the unit's output on skipped frames too);
- sparse: only executing frames are gathered, run and scattered back
  (inference: skipped frames cost nothing in the FFN and no Q/output
  projection in the MHSA);
- sparse with cached keys/values from earlier chunks (streaming).
"""

from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_amortized._espnet import LayerNorm, MultiHeadedAttention, PositionwiseFeedForward


class KeyValues(NamedTuple):
    """Projected keys/values of the frames that provide them, with their positions."""

    key: torch.Tensor  # (B, H, N, d_k)
    value: torch.Tensor  # (B, H, N, d_k)
    position: torch.Tensor  # (B, N) absolute frame index
    valid: torch.Tensor  # (B, N) bool; False marks padding


def compact_indices(select: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, T) bool -> indices (B, M) of the selected frames, left-aligned, and their validity.

    M is the largest per-utterance count; shorter rows are padded with index 0
    and ``valid = False``.
    """
    counts = select.sum(dim=1)
    max_count = int(counts.max()) if select.numel() else 0
    if select.size(0) == 1:
        index = select[0].nonzero().view(1, -1)
        return index, torch.ones_like(index, dtype=torch.bool)
    # A stable sort keeps selected frames first and in time order.
    order = torch.argsort((~select).to(torch.int8), dim=1, stable=True)[:, :max_count]
    valid = torch.arange(max_count, device=select.device).unsqueeze(0) < counts.unsqueeze(1)
    return order.masked_fill(~valid, 0), valid


def _gather_frames(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


class GatedTransformerLayer(torch.nn.Module):
    """``x = x + g_att * MHSA(LN(x))``; ``x = x + g_ffn * FFN(LN(x))``."""

    def __init__(
        self,
        size: int,
        attention_heads: int,
        linear_units: int,
        dropout_rate: float,
        attention_dropout_rate: float,
        local_gates: int = 0,
        conv_kernel_size: int = 0,
        conv_norm_type: str = "layer_norm",
    ):
        super().__init__()
        if size % attention_heads != 0:
            raise ValueError(
                f"output_size ({size}) must be divisible by attention_heads ({attention_heads})"
            )
        self.size = size
        self.heads = attention_heads
        self.d_k = size // attention_heads
        self.attention_dropout_rate = attention_dropout_rate
        self.norm_att = LayerNorm(size)
        self.self_attn = MultiHeadedAttention(attention_heads, size, attention_dropout_rate)
        self.norm_ffn = LayerNorm(size)
        self.feed_forward = PositionwiseFeedForward(size, linear_units, dropout_rate)
        self.dropout = torch.nn.Dropout(dropout_rate)
        # Optional causal convolution unit (as the Conformer's, with LayerNorm for
        # streaming): LN -> pointwise GLU -> causal depthwise conv -> LN -> swish -> pointwise.
        # conv_norm_type "batch_norm" puts ESPnet's conformer BatchNorm (statistics over the
        # padded batch) after the depthwise conv instead: an ablation (RESULTS.md, issue 12).
        self.conv_kernel_size = conv_kernel_size
        self.conv_norm_type = conv_norm_type
        if conv_kernel_size:
            self.norm_conv = LayerNorm(size)
            self.conv_in = torch.nn.Linear(size, 2 * size)
            self.conv_depthwise = torch.nn.Conv1d(size, size, conv_kernel_size, groups=size)
            self.conv_norm = LayerNorm(size) if conv_norm_type == "layer_norm" else torch.nn.BatchNorm1d(size)
            self.conv_out = torch.nn.Linear(size, size)
        # Per-layer ("local") arbitration: a logit per unit from the unit's own input.
        self.local_gate = torch.nn.Linear(size, local_gates) if local_gates else None
        if self.local_gate is not None:
            torch.nn.init.normal_(self.local_gate.weight, std=0.01)
            torch.nn.init.constant_(self.local_gate.bias, 3.0)

    # -- shared pieces --------------------------------------------------------
    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), self.heads, self.d_k).transpose(1, 2)

    def project_key_value(self, normed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return (
            self._split_heads(self.self_attn.linear_k(normed)),
            self._split_heads(self.self_attn.linear_v(normed)),
        )

    def _attend(
        self, normed_query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """normed_query (B, M, D), key/value (B, H, N, d_k), mask (B, M, N) bool."""
        query = self._split_heads(self.self_attn.linear_q(normed_query))
        dropout = self.attention_dropout_rate if self.training else 0.0
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask.unsqueeze(1), dropout_p=dropout
        )
        batch, _, length, _ = context.shape
        return self.self_attn.linear_out(context.transpose(1, 2).reshape(batch, length, self.size))

    # -- dense (training, and the reference for the sparse path) ---------------
    def attention_dense(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        valid: torch.Tensor,
        gate: Optional[torch.Tensor] = None,
        key_gate: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """All frames run; the output is scaled by ``gate`` (B, T) if given.

        ``key_gate`` (B, T) bool restricts keys to frames whose unit executes
        (``kv_from_skipped=False``); every frame keeps its own key so that rows
        of skipped frames stay finite (their output is multiplied by 0).
        """
        normed = self.norm_att(x)
        key, value = self.project_key_value(normed)
        mask = allowed.unsqueeze(0) & valid.unsqueeze(1)
        if key_gate is not None:
            mask = mask & key_gate.unsqueeze(1)
        eye = torch.eye(x.size(1), dtype=torch.bool, device=x.device)
        out = self.dropout(self._attend(normed, key, value, mask | eye))
        return x + (out if gate is None else out * gate.unsqueeze(-1))

    def conv_dense(
        self, x: torch.Tensor, valid: torch.Tensor, past: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The convolution unit on every frame of x (B, T, D); ``valid`` (B, T) bool.

        ``past`` (B, K-1, D): the depthwise conv's inputs of the frames before x
        (streaming; None: zeros, the utterance start). Returns x and the next ``past``.
        """
        hidden = F.glu(self.conv_in(self.norm_conv(x)), dim=-1) * valid.unsqueeze(-1).to(x.dtype)
        if past is None:
            past = hidden.new_zeros(hidden.size(0), self.conv_kernel_size - 1, hidden.size(2))
        window = torch.cat([past, hidden], dim=1)
        out = self.conv_depthwise(window.transpose(1, 2))
        if self.conv_norm_type == "batch_norm":
            out = self.conv_norm(out).transpose(1, 2)
        else:
            out = self.conv_norm(out.transpose(1, 2))
        out = self.conv_out(F.silu(out))
        return x + self.dropout(out), window[:, window.size(1) - (self.conv_kernel_size - 1) :]

    def ffn_dense(self, x: torch.Tensor, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.dropout(self.feed_forward(self.norm_ffn(x)))
        return x + (out if gate is None else out * gate.unsqueeze(-1))

    # -- sparse (inference) -----------------------------------------------------
    def attention_sparse(
        self,
        x: torch.Tensor,
        execute: torch.Tensor,
        provides_key: Optional[torch.Tensor],
        visible: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        position: torch.Tensor,
        past: Optional[KeyValues] = None,
    ) -> Tuple[torch.Tensor, KeyValues]:
        """Run MHSA only for frames with ``execute`` (B, T) bool.

        Keys/values are projected for frames with ``provides_key`` (B, T) bool
        (every valid frame; None: only the executing ones) and, when streaming, come
        also from ``past`` (already restricted to the allowed window).
        ``visible(query_positions, key_positions)`` is the chunk mask, evaluated
        on the absolute positions ``position`` (T,) of the selected frames.
        Returns the updated ``x`` and the new frames' keys/values for the cache.
        """
        if x.size(0) == 1:
            keys = None if provides_key is None else provides_key[0]
            return self._attention_sparse_single(x, execute[0], keys, visible, position, past)
        query_index, query_valid = compact_indices(execute)
        normed_query = self.norm_att(_gather_frames(x, query_index))
        if provides_key is None:  # keys only from executing frames: same gather
            key_index, key_valid, normed_keys = query_index, query_valid, normed_query
        else:
            key_index, key_valid = compact_indices(provides_key)
            normed_keys = self.norm_att(_gather_frames(x, key_index))
        key, value = self.project_key_value(normed_keys)
        new = KeyValues(key, value, position[key_index], key_valid)
        if query_index.size(1) == 0:
            return x, new
        mask = visible(position[query_index].unsqueeze(-1), new.position.unsqueeze(1))
        mask = mask & key_valid.unsqueeze(1)
        if past is not None:
            key = torch.cat([past.key, key], dim=2)
            value = torch.cat([past.value, value], dim=2)
            past_mask = past.valid.unsqueeze(1).expand(-1, mask.size(1), -1)
            mask = torch.cat([past_mask, mask], dim=2)
        # Padding rows (no real query) would be all-False: let them see everything.
        mask = mask | ~query_valid.unsqueeze(-1)
        out = self._attend(normed_query, key, value, mask) * query_valid.unsqueeze(-1)
        scatter_index = query_index.unsqueeze(-1).expand(-1, -1, self.size)
        return x.scatter_add(1, scatter_index, out), new

    def _attention_sparse_single(self, x, execute, provides_key, visible, position, past):
        """Batch of one (streaming, batch-1 decoding): no padding, plain index ops."""
        query_index = execute.nonzero().squeeze(1)
        normed_query = self.norm_att(x.index_select(1, query_index))
        if provides_key is None:
            key_index, normed_keys = query_index, normed_query
        else:
            key_index = provides_key.nonzero().squeeze(1)
            normed_keys = self.norm_att(x.index_select(1, key_index))
        key, value = self.project_key_value(normed_keys)
        new = KeyValues(key, value, position[key_index].unsqueeze(0), torch.ones_like(key_index, dtype=torch.bool).unsqueeze(0))
        if query_index.numel() == 0:
            return x, new
        mask = visible(position[query_index].unsqueeze(-1), position[key_index].unsqueeze(0)).unsqueeze(0)
        if past is not None:
            key = torch.cat([past.key, key], dim=2)
            value = torch.cat([past.value, value], dim=2)
            mask = torch.cat([past.valid.unsqueeze(1).expand(-1, mask.size(1), -1), mask], dim=2)
        out = self._attend(normed_query, key, value, mask)
        return x.index_add(1, query_index, out), new

    # -- one streaming chunk, batch 1 (the product's hot path) ----------------------
    # The frames of a chunk all see each other and every cached key (the cache holds
    # exactly the visible left chunks), so no mask is built. Functional calls instead
    # of module calls: at 16 frames per chunk the per-call overhead is the cost.
    def _norm(self, norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def attention_chunk(
        self,
        x: torch.Tensor,
        execute: Optional[torch.Tensor],
        keys_from_all: bool,
        past: Optional[Tuple[torch.Tensor, torch.Tensor]],
    ) -> Tuple[torch.Tensor, Optional[Tuple[torch.Tensor, torch.Tensor]]]:
        """MHSA for one chunk x (1, C, D) of a single utterance.

        ``execute``: indices of the frames that run the unit (non-empty), or None
        for all of them. Keys/values come from every frame if ``keys_from_all``,
        else from the executing frames, and from ``past`` (cached (key, value) of
        the visible left chunks). Returns x and (key, value) of ``past`` and
        this chunk together (the next cache).
        """
        attn = self.self_attn
        if execute is None or not keys_from_all:
            # Queries, keys and values from the same rows: one fused projection.
            rows = x if execute is None else x.index_select(1, execute)
            weight, bias = self._fused_qkv()
            projected = F.linear(self._norm(self.norm_att, rows), weight, bias)
            heads = projected.view(1, rows.size(1), 3 * self.heads, self.d_k).transpose(1, 2)
            query, key, value = heads.chunk(3, dim=1)
        else:
            normed_keys = self._norm(self.norm_att, x)
            key = self._split_heads(F.linear(normed_keys, attn.linear_k.weight, attn.linear_k.bias))
            value = self._split_heads(F.linear(normed_keys, attn.linear_v.weight, attn.linear_v.bias))
            normed_query = normed_keys.index_select(1, execute)
            query = self._split_heads(F.linear(normed_query, attn.linear_q.weight, attn.linear_q.bias))
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        context = F.scaled_dot_product_attention(query, key, value)
        out = F.linear(
            context.transpose(1, 2).reshape(1, query.size(2), self.size), attn.linear_out.weight, attn.linear_out.bias
        )
        return (x + out if execute is None else x.index_add(1, execute, out)), (key, value)

    def _fused_qkv(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """[W_q; W_k; W_v] and their biases, rebuilt whenever a weight changes."""
        attn = self.self_attn
        params = [attn.linear_q.weight, attn.linear_k.weight, attn.linear_v.weight,
                  attn.linear_q.bias, attn.linear_k.bias, attn.linear_v.bias]
        stamp = tuple((p.data_ptr(), p._version) for p in params)
        if getattr(self, "_qkv_stamp", None) != stamp:
            self._qkv = (torch.cat(params[:3]).detach(), torch.cat(params[3:]).detach())
            self._qkv_stamp = stamp
        return self._qkv

    def key_value_chunk(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of every frame of a chunk whose MHSA is skipped (``kv_from_skipped``)."""
        attn = self.self_attn
        normed = self._norm(self.norm_att, x)
        return (
            self._split_heads(F.linear(normed, attn.linear_k.weight, attn.linear_k.bias)),
            self._split_heads(F.linear(normed, attn.linear_v.weight, attn.linear_v.bias)),
        )

    def ffn_chunk(self, x: torch.Tensor, execute: Optional[torch.Tensor]) -> torch.Tensor:
        """FFN for one chunk x (1, C, D): the frames at ``execute`` (non-empty), or all (None)."""
        ffn = self.feed_forward
        rows = x if execute is None else x.index_select(1, execute)
        hidden = ffn.activation(F.linear(self._norm(self.norm_ffn, rows), ffn.w_1.weight, ffn.w_1.bias))
        out = F.linear(hidden, ffn.w_2.weight, ffn.w_2.bias)
        return x + out if execute is None else x.index_add(1, execute, out)

    def ffn_sparse(self, x: torch.Tensor, execute: torch.Tensor) -> torch.Tensor:
        if x.size(0) == 1:
            index = execute[0].nonzero().squeeze(1)
            if index.numel() == 0:
                return x
            return x.index_add(1, index, self.feed_forward(self.norm_ffn(x.index_select(1, index))))
        flat = x.reshape(-1, self.size)
        index = execute.reshape(-1).nonzero().squeeze(1)
        if index.numel() == 0:
            return x
        out = self.feed_forward(self.norm_ffn(flat.index_select(0, index)))
        return flat.index_add(0, index, out).view_as(x)
