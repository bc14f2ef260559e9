"""A pre-LayerNorm Transformer layer whose MHSA and FFN units can be skipped per frame.

Three ways to run a unit, all computing the same function for hard gates:
- dense: every frame runs, the output is multiplied by the gate, and a skipped
  frame's key is removed by reweighting the attention weights with its gate
  (training; the straight-through gradient needs the unit's output on skipped
  frames too, and what removing a key costs);
- sparse, whole utterances: only executing frames are gathered, run and
  scattered back (offline inference: skipped frames cost nothing in the FFN and
  no Q/output projection in the MHSA);
- sparse, one chunk of each of N streams (``attention_streams``): the executing
  frames of every stream gathered into one set of products, each stream's keys
  and values of its visible left chunks from its own ``KeyValueCache``
  (streaming; batch 1 is N = 1).
Offline (dense and sparse), each chunk's queries are scored against its
attention window only (``_attend_windows``), never against the whole utterance.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from espnet_amortized._espnet import LayerNorm, MultiHeadedAttention, PositionwiseFeedForward


class KeyValueCache:
    """One stream's projected keys/values of one layer, for the chunks a streaming chunk may still see.

    ``key``/``value`` (1, H, N, d_k), ``sizes``: the columns each chunk added, oldest first. Every frame of a
    chunk sees every key of its window, so no positions are kept: a chunk's keys leave once it is more than
    ``left_chunks`` chunks back.
    """

    def __init__(self):
        self.key: Optional[torch.Tensor] = None
        self.value: Optional[torch.Tensor] = None
        self.sizes: List[int] = []

    def visible(self, left_chunks: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """(key, value) of the ``left_chunks`` chunks before the next one (-1: all), or None if none."""
        if left_chunks >= 0 and len(self.sizes) > left_chunks:
            dropped = sum(self.sizes[: len(self.sizes) - left_chunks])
            del self.sizes[: len(self.sizes) - left_chunks]
            if dropped:
                self.key, self.value = self.key[:, :, dropped:], self.value[:, :, dropped:]
        if self.key is None or self.key.size(2) == 0:
            return None
        return self.key, self.value

    def store(self, key: Optional[torch.Tensor], value: Optional[torch.Tensor], added: int) -> None:
        """The visible keys with this chunk's ``added`` columns at the end (what ``visible`` gave, extended)."""
        self.key, self.value = key, value
        self.sizes.append(added)


def window_chunk_size(chunk_size: int, length: int) -> int:
    """The block size for chunk windows: a chunk longer than the utterance is the utterance."""
    return max(1, min(chunk_size, length))


def chunk_blocks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(B, T, ...) -> (B, N, chunk_size, ...), padded at the end with zeros (False) to N chunks."""
    pad = (-x.size(1)) % chunk_size
    if pad:
        x = torch.cat([x, x.new_zeros(x.size(0), pad, *x.shape[2:])], dim=1)
    return x.view(x.size(0), -1, chunk_size, *x.shape[2:])


# The kept keys' share of the full softmax below which the keep gradient is bounded (see _kept_softmax).
MIN_KEPT_MASS = 1e-3


def _kept_softmax(scores: torch.Tensor, seen: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over the ``seen`` keys with ``keep`` 0/1 (straight-through) removing keys, renormalised.

    Forward: exactly the softmax over the kept keys, computed as a masked softmax (stable; every row
    keeps one key). Backward: the scores get that softmax's gradient, and ``keep`` the gradient of
    ``p * keep / sum(p * keep)`` (p: the softmax over every seen key), whose denominator is bounded
    below by ``MIN_KEPT_MASS``: when the removed keys hold nearly all of the attention, the gradient
    of 1 / (the kept mass) would overflow (inf gradients, every update skipped).
    """
    kept = keep.detach() > 0.5
    weights = torch.softmax(scores.masked_fill(~(seen & kept), float("-inf")), dim=-1)
    if not keep.requires_grad:
        return weights
    with torch.no_grad():
        full = torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1)
    mass = (full * keep).sum(dim=-1, keepdim=True)
    surrogate = full * keep / mass.clamp(min=MIN_KEPT_MASS)
    return weights + (surrogate - surrogate.detach())


def chunk_groups(select: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(G, C) bool per chunk -> the selected rows of the flattened (G * C) frames, in order (M,), and each
    chunk's block of them: slots (G, S) into those M rows, left-aligned, with their validity (S: the largest
    count; padding slots point at row 0)."""
    counts = select.sum(dim=1)
    rows = select.reshape(-1).nonzero().squeeze(1)
    width = int(counts.max()) if counts.numel() else 0
    slot = torch.arange(width, device=select.device)
    valid = slot < counts.unsqueeze(1)
    starts = torch.cumsum(counts, dim=0) - counts
    return rows, (starts.unsqueeze(1) + slot).masked_fill(~valid, 0), valid


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

    def _attend_windows(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_valid: torch.Tensor,
        left_chunks: int,
        query_valid: Optional[torch.Tensor] = None,
        key_keep: Optional[torch.Tensor] = None,
        own_key: bool = False,
    ) -> torch.Tensor:
        """Each chunk's queries against the keys of its window: itself and ``left_chunks`` chunks before it.

        query (B, N, Q, D), key/value (B, N, K, D): projected, one block per chunk; key_valid (B, N, K)
        bool. ``query_valid`` (B, N, Q): rows without a query see every key (finite, discarded).
        ``key_keep`` (B, N, K) reweights the softmax weights per key, then they are renormalised.
        ``own_key``: query i of a chunk is key i of the same chunk, always seen and kept. The window
        is never copied: the scores are L + 1 batched products with shifted views of the blocks,
        laid out chunks first. Returns the context (B, N, Q, D), before the output projection.
        """
        batch, chunks, queries, _ = query.shape
        keys = key.size(2)
        left = chunks - 1 if left_chunks < 0 else min(left_chunks, chunks - 1)

        def chunks_first(t, fill=0.0):  # (B, N, K, ...) -> (L + N, B, ..., K, ...), L empty chunks in front
            if t.dim() == 4:
                t = t.view(batch, chunks, t.size(2), self.heads, self.d_k).permute(1, 0, 3, 2, 4)
            else:
                t = t.transpose(0, 1)
            padded = t.new_full((left + chunks, *t.shape[1:]), fill)
            padded[left:] = t
            return padded

        query = query.view(batch, chunks, queries, self.heads, self.d_k).permute(1, 0, 3, 2, 4) / self.d_k**0.5
        key, value = chunks_first(key), chunks_first(value)
        shifts = range(left + 1)  # shift l: the chunk l - L before (l = L: the chunk itself)
        scores = torch.cat([query @ key[shift : shift + chunks].transpose(-1, -2) for shift in shifts], dim=-1)
        seen = chunks_first(key_valid, False)
        seen = torch.cat([seen[shift : shift + chunks] for shift in shifts], dim=-1)[:, :, None, None, :]
        own = None
        if own_key:
            own = torch.zeros(queries, (left + 1) * keys, dtype=torch.bool, device=query.device)
            own[:, left * keys :] = torch.eye(queries, keys, dtype=torch.bool, device=query.device)
            seen = seen | own
        if query_valid is not None:
            seen = seen | ~query_valid.transpose(0, 1)[:, :, None, :, None]
        if key_keep is None:
            weights = torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1)
        else:
            keep = chunks_first(key_keep)
            keep = torch.cat([keep[shift : shift + chunks] for shift in shifts], dim=-1)[:, :, None, None, :]
            if own is not None:
                keep = torch.where(own, torch.ones_like(keep), keep)
            weights = _kept_softmax(scores, seen, keep)
        if self.training and self.attention_dropout_rate > 0:
            weights = F.dropout(weights, self.attention_dropout_rate)
        context = sum(weights[..., shift * keys : (shift + 1) * keys] @ value[shift : shift + chunks] for shift in shifts)
        return context.permute(1, 0, 3, 2, 4).reshape(batch, chunks, queries, self.size)

    # -- dense (training, and the reference for the sparse path) ---------------
    def attention_dense(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        chunk_size: int,
        left_chunks: int,
        gate: Optional[torch.Tensor] = None,
        key_gate: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """All frames run; the output is scaled by ``gate`` (B, T) if given.

        Each chunk's queries are scored against the keys of its window only
        (``left_chunks`` chunks before it and itself; ``_attend_windows``), so the
        work is what the chunk mask allows, as the compute counter counts it.
        ``key_gate`` (B, T) 0/1 (``kv_from_skipped=False``) removes the keys of
        frames whose unit is skipped: the attention weights over the window's
        keys are multiplied by it and renormalised, which forward is exactly
        the softmax over the executing frames' keys (what the sparse path
        runs), and backward gives the gate the ASR loss's gradient for its
        key/value (straight-through, when ``key_gate`` carries one). Every
        frame keeps its own key so that rows of skipped frames stay finite
        (their output is multiplied by 0).
        """
        length = x.size(1)
        chunk_size = window_chunk_size(chunk_size, length)
        normed = self.norm_att(x)
        attn = self.self_attn

        def blocks(t):
            return chunk_blocks(t, chunk_size)

        query, key, value = blocks(attn.linear_q(normed)), blocks(attn.linear_k(normed)), blocks(attn.linear_v(normed))
        keep = None if key_gate is None else blocks(key_gate)
        context = self._attend_windows(query, key, value, blocks(valid), left_chunks, key_keep=keep, own_key=True)
        context = context.reshape(x.size(0), -1, self.size)
        out = self.dropout(attn.linear_out(context[:, :length]))
        return x + (out if gate is None else out * gate.unsqueeze(-1))

    def conv_dense(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        past: Optional[torch.Tensor] = None,
        gate: Optional[torch.Tensor] = None,
        rows: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The convolution unit on x (B, T, D); ``valid`` (B, T) bool.

        ``past`` (B, K-1, D): the depthwise conv's inputs of the frames before x
        (streaming; None: zeros, the utterance start). Returns x and the next ``past``.
        A gated unit (``gate`` (B, T), 0/1 with a straight-through gradient) runs
        where the gate is 1: a skipped frame adds nothing to x and gives the
        depthwise conv a zero input (as a skipped MHSA frame gives no key).
        ``rows`` (inference): the flat (B*T) indices of the frames that run it,
        the same function with the pointwise layers on those rows only (what the
        MAC counter counts); the depthwise conv runs over the whole window.
        """
        # Functional calls: at a streaming chunk's 16 frames the modules' call overhead was a large share.
        batch, length, size = x.shape
        conv_in, conv_out = self.conv_in, self.conv_out
        if rows is None:
            keep = valid.to(x.dtype) if gate is None else valid.to(x.dtype) * gate
            hidden = F.glu(F.linear(self._norm(self.norm_conv, x), conv_in.weight, conv_in.bias), dim=-1)
            hidden = hidden * keep.unsqueeze(-1)
        else:
            flat = x.reshape(-1, size)
            hidden = x.new_zeros(batch * length, size).index_copy(
                0, rows, F.glu(F.linear(self._norm(self.norm_conv, flat[rows]), conv_in.weight, conv_in.bias), dim=-1)
            ).view(batch, length, size)
        if past is None:
            past = hidden.new_zeros(batch, self.conv_kernel_size - 1, size)
        window = torch.cat([past, hidden], dim=1)
        next_past = window[:, window.size(1) - (self.conv_kernel_size - 1) :]
        depthwise = self.conv_depthwise
        out = F.conv1d(window.transpose(1, 2), depthwise.weight, depthwise.bias, groups=size)  # (B, D, T)
        layer_norm = self.conv_norm_type == "layer_norm"
        if rows is not None:
            out = out.transpose(1, 2).reshape(-1, size)[rows]
            # per row: LayerNorm, or BatchNorm's running statistics
            out = self._norm(self.conv_norm, out) if layer_norm else self.conv_norm(out)
            out = F.linear(F.silu(out), conv_out.weight, conv_out.bias)
            return flat.index_add(0, rows, out).view(batch, length, size), next_past
        if layer_norm:
            out = self._norm(self.conv_norm, out.transpose(1, 2))
        else:
            out = self.conv_norm(out).transpose(1, 2)
        out = F.dropout(F.linear(F.silu(out), conv_out.weight, conv_out.bias), self.dropout.p, self.training)
        return x + (out if gate is None else out * gate.unsqueeze(-1)), next_past

    def ffn_dense(self, x: torch.Tensor, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.dropout(self.feed_forward(self.norm_ffn(x)))
        return x + (out if gate is None else out * gate.unsqueeze(-1))

    # -- sparse (inference) -----------------------------------------------------
    def attention_windows(
        self,
        x: torch.Tensor,
        execute: torch.Tensor,
        provides_key: Optional[torch.Tensor],
        chunk_size: int,
        left_chunks: int,
    ) -> torch.Tensor:
        """Whole utterances: MHSA only for frames with ``execute`` (B, T) bool, chunk by chunk.

        Per chunk, the executing frames are gathered (``chunk_groups``), and
        their queries are scored against the gathered keys of the chunk's
        window (``left_chunks`` chunks before it and itself): keys of frames
        with ``provides_key`` (B, T) bool (every valid frame), or None: of the
        executing frames. The work is what the compute counter counts.
        """
        batch, length, size = x.shape
        chunk_size = window_chunk_size(chunk_size, length)
        chunks = -(-length // chunk_size)
        frames = chunk_blocks(x, chunk_size).reshape(-1, size)  # (B * N * C, D), chunk-major within each utterance
        query_rows, query_slots, query_valid = chunk_groups(chunk_blocks(execute, chunk_size).reshape(batch * chunks, -1))
        if query_rows.numel() == 0:
            return x
        attn = self.self_attn
        # Projections run on the selected frames only; each chunk's then fill its block, left-aligned.
        normed_query = self.norm_att(frames[query_rows])
        if provides_key is None:  # keys only from executing frames: same rows
            key_slots, key_valid, normed_keys = query_slots, query_valid, normed_query
        else:
            key_rows, key_slots, key_valid = chunk_groups(chunk_blocks(provides_key, chunk_size).reshape(batch * chunks, -1))
            normed_keys = self.norm_att(frames[key_rows])

        def per_chunk(t):
            return t.reshape(batch, chunks, *t.shape[1:])

        query_valid = per_chunk(query_valid)
        context = self._attend_windows(
            per_chunk(attn.linear_q(normed_query)[query_slots]), per_chunk(attn.linear_k(normed_keys)[key_slots]),
            per_chunk(attn.linear_v(normed_keys)[key_slots]), per_chunk(key_valid), left_chunks,
            query_valid=query_valid,
        )
        out = attn.linear_out(context[query_valid])  # the selected frames, in query_rows' order
        frames = frames.index_add(0, query_rows, out)
        return frames.view(batch, chunks * chunk_size, size)[:, :length]

    # -- one chunk of each of N streams (streaming; batch 1 is N = 1) ---------------------
    # Functional calls instead of module calls: at a chunk's few rows the per-call overhead is the cost.
    def _norm(self, norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def attention_streams(
        self,
        x: torch.Tensor,
        execute: torch.Tensor,
        provides_key: Optional[torch.Tensor],
        caches: List[KeyValueCache],
        left_chunks: int,
    ) -> torch.Tensor:
        """MHSA for one chunk x (N, C, D) of each of N streams, for the frames with ``execute`` (N, C) bool.

        Keys/values are projected for the frames with ``provides_key`` (N, C) bool, which includes every
        executing frame (None: the executing ones) and come also from ``caches[n]``, stream n's keys of its visible left chunks (``left_chunks``);
        every frame of a chunk sees every key of its stream's window. The selected frames of all streams go
        through one set of projections and one batched attention (the windows padded to the longest), so
        the skipped frames of every stream shrink the products. Each cache gets its stream's new keys.
        """
        batch, length, size = x.shape
        attn = self.self_attn
        flat = x.reshape(-1, size)
        query_counts = execute.sum(dim=1).tolist()
        queries = sum(query_counts)
        if queries == 0 and provides_key is None:  # no query and no new key: the caches only age
            for cache in caches:
                past = cache.visible(left_chunks)
                cache.store(*(past if past is not None else (None, None)), 0)
            return x
        every = queries == batch * length  # every frame of every stream runs: no gather, no scatter
        if every:
            query_rows = None
        elif batch == 1:
            query_rows = execute.reshape(-1).nonzero().squeeze(1)
        else:  # and each stream's block of them, left-aligned
            query_rows, query_slots, query_valid = chunk_groups(execute)
        picked = flat if every else flat.index_select(0, query_rows)
        if provides_key is None or every:  # queries, keys and values from the same rows: one fused projection
            key_counts = query_counts
            weight, bias = self._fused_qkv()
            query, key, value = F.linear(self._norm(self.norm_att, picked), weight, bias).chunk(3, dim=-1)
        else:
            key_counts = provides_key.sum(dim=1).tolist()
            normed = self._norm(self.norm_att, flat if every else flat[provides_key.reshape(-1)])
            key = F.linear(normed, attn.linear_k.weight, attn.linear_k.bias)
            value = F.linear(normed, attn.linear_v.weight, attn.linear_v.bias)
            normed_query = normed if every else self._norm(self.norm_att, picked)  # every frame provides a key
            query = F.linear(normed_query, attn.linear_q.weight, attn.linear_q.bias)
        # The selected rows are stream-major, so each stream's new keys are one slice.
        key = key.reshape(-1, self.heads, self.d_k).transpose(0, 1)  # (H, M, d_k)
        value = value.reshape(-1, self.heads, self.d_k).transpose(0, 1)
        windows = []
        first = 0
        for cache, count in zip(caches, key_counts):
            past = cache.visible(left_chunks)
            if count:
                new_key, new_value = key[None, :, first : first + count], value[None, :, first : first + count]
                first += count
                if past is not None:
                    new_key, new_value = torch.cat([past[0], new_key], dim=2), torch.cat([past[1], new_value], dim=2)
            else:
                new_key, new_value = past if past is not None else (None, None)
            cache.store(new_key, new_value, count)
            windows.append((new_key, new_value))
        if queries == 0:
            return x
        if batch == 1:  # every key is the stream's and every slot a query: no mask
            window_key, window_value = windows[0]
            query = query.view(1, -1, self.heads, self.d_k).transpose(1, 2)
            context = F.scaled_dot_product_attention(query, window_key, window_value)
            context = context.transpose(1, 2).reshape(-1, size)
        else:
            # A stream whose chunk runs no query has a key window (its own chunk provides none) only if its cache has.
            empty = x.new_zeros(self.heads, 0, self.d_k)
            widths = torch.tensor([0 if k is None else k.size(2) for k, _ in windows], device=x.device)
            window_key = pad_sequence([empty.transpose(0, 1) if k is None else k[0].transpose(0, 1) for k, _ in windows],
                                      batch_first=True).transpose(1, 2)
            window_value = pad_sequence([empty.transpose(0, 1) if v is None else v[0].transpose(0, 1) for _, v in windows],
                                        batch_first=True).transpose(1, 2)
            mask = (torch.arange(window_key.size(2), device=x.device) < widths.unsqueeze(1)).unsqueeze(1)  # (N, 1, W)
            if every:
                query = query.view(batch, length, self.heads, self.d_k).transpose(1, 2)
            else:
                # Padding query slots (no real query) would see no key in an empty window: let them see everything.
                mask = mask | ~query_valid.unsqueeze(-1)
                query = query[query_slots].view(batch, -1, self.heads, self.d_k).transpose(1, 2)
            context = F.scaled_dot_product_attention(query, window_key, window_value, attn_mask=mask.unsqueeze(1))
            context = context.transpose(1, 2).reshape(batch, -1, size)
            context = context.reshape(-1, size) if every else context[query_valid]  # in the selected rows' order
        out = F.linear(context, attn.linear_out.weight, attn.linear_out.bias)
        return (flat + out if every else flat.index_add(0, query_rows, out)).view_as(x)

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

    def ffn_sparse(self, x: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """FFN (inference) on the frames at ``rows``, indices into x's flattened (B * T) frames (None: all).

        One path for whole utterances and streaming chunks; functional calls, since at a
        chunk's few rows the per-call overhead is the cost.
        """
        ffn = self.feed_forward
        flat = x.reshape(-1, self.size)
        picked = flat if rows is None else flat.index_select(0, rows)
        hidden = ffn.activation(F.linear(self._norm(self.norm_ffn, picked), ffn.w_1.weight, ffn.w_1.bias))
        out = F.linear(hidden, ffn.w_2.weight, ffn.w_2.bias)
        return (flat + out if rows is None else flat.index_add(0, rows, out)).view_as(x)
