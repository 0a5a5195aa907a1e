#!/usr/bin/env python3
"""PyTorch reference for `repdef bench train` (see bench/README.md for the full protocol).

Times full training steps -- mask -> forward -> backward -> AdamW update -- for the two
objectives at preset `mini`, with the same shapes and work as src/bench.rs:

* model: HF `BertModel` (post-LN, no pooler), 4 layers, d_model 256, 4 heads, d_mlp 1024,
  GELU (erf), vocab 8192, 512 positions, dropout 0.1, LayerNorm eps 1e-12, init N(0, 0.02);
* batch: 32 x 128 random ids in 5..vocab-1 ([CLS]=2 first, [SEP]=3 last), drawn once;
* masking (every step, inside the timed region): per row floor(0.15 * 126 + U[0,1)) (>= 1) of
  the non-special positions, all replaced by [MASK]=4;
* `mlm`: encoder over the full masked sequence; the MLM head (HF `BertLMPredictionHead`:
  dense -> GELU -> LayerNorm -> projection tied to the word embeddings + bias) only on the
  gathered picked rows; mean cross-entropy;
* `mae-lm`: picked positions are removed from the encoder input (kept tokens compacted left,
  padded to the longest row with an attention mask, each with its ORIGINAL position id);
  encoder outputs are scattered back to [batch, seq_len, d_model] with the [MASK] row of the
  word-embedding table at removed positions; a decoder (own position embeddings + LayerNorm,
  2 post-LN BERT layers, dropout 0) runs over the full length; same head at picked rows;
* AdamW: lr 1e-4, betas (0.9, 0.98), eps 1e-6, weight decay 0.01 except biases and LayerNorm.

Other shapes (`repdef bench train --budget quick` passes the reproduction's): --hidden-size,
--layers, --heads, --intermediate-size, --decoder-layers; --relative-buckets N adds the official
encoders' T5-style relative-position bias (one learned [N, heads] table shared by the encoder's
layers, buckets as repdef's `relative_position::bucket`, from each token's position id, so
MAE-LM's compacted rows use their original positions), and --decoder-relative gives MAE-LM's
decoder its own table. The bias enters HF attention as a float 4-D additive attention mask
(padding folded in), through which it gets its gradient.

Per objective: 1 untimed warm-up step, then --steps timed steps; the median ms/step of the timed
steps (as repdef reports its own: a step slowed by another process does not move it) is reported
and written as JSON to --out for `repdef bench train --reference`.

Attention: HF's "sdpa" implementation by default (what `BertModel` picks on its own in
transformers 4.46, and the faster PyTorch path, so the reference is the stronger baseline);
`--attn eager` gives the explicit matmul -> softmax -> dropout -> matmul that mirrors repdef.
"""

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEncoder, BertLMPredictionHead

PAD, CLS, SEP, MASK, FIRST_ORDINARY = 0, 2, 3, 4, 5


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (candle's default thread count)."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology.joinpath("physical_package_id").read_text(), topology.joinpath("core_id").read_text()))
        except OSError:
            return len(os.sched_getaffinity(0))
    return max(1, len(cores))


def relative_bucket(distance: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """repdef's `relative_position::bucket`: sign-symmetric, exact below buckets/4, log beyond."""
    half = buckets // 2
    max_exact = half // 2
    n = distance.abs()
    scale = math.log((max_distance - 1) / max_exact)
    large = max_exact + torch.ceil(torch.log(n.clamp(min=1).double() / max_exact) / scale * (half - 1 - max_exact)).long()
    magnitude = torch.where(n < max_exact, n, large.clamp(max=half - 1))
    return magnitude * distance.sign() + half - 1


class RelativeBias(nn.Module):
    """One learned [buckets, heads] table; `forward` gives the additive [batch, heads, q, k] term."""

    def __init__(self, buckets: int, heads: int, max_distance: int):
        super().__init__()
        self.table = nn.Embedding(buckets, heads)
        self.buckets, self.max_distance = buckets, max_distance

    def forward(self, position_ids: torch.Tensor, key_mask: torch.Tensor = None) -> torch.Tensor:
        distance = position_ids[:, None, :] - position_ids[:, :, None]  # key - query: [batch, q, k]
        bias = self.table(relative_bucket(distance, self.buckets, self.max_distance)).permute(0, 3, 1, 2)
        if key_mask is not None:  # padding keys: a large negative, as repdef's mask
            bias = bias + (~key_mask)[:, None, None, :].to(bias.dtype) * -1e9
        return bias


class Pretraining(nn.Module):
    def __init__(self, config: BertConfig, decoder_layers: int, buckets: int, max_distance: int, decoder_relative: bool):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        heads = config.num_attention_heads
        self.bias = RelativeBias(buckets, heads, max_distance) if buckets else None
        self.dec_bias = RelativeBias(buckets, heads, max_distance) if buckets and decoder_relative and decoder_layers else None
        self.head = BertLMPredictionHead(config)
        self.head.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied
        self.decoder = None
        if decoder_layers:
            # `to_dict` leaves out the attention implementation, which would leave the decoder
            # on HF's fallback (eager) instead of the encoder's.
            dec = BertConfig(**{**config.to_dict(), "num_hidden_layers": decoder_layers, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                                "attn_implementation": config._attn_implementation})
            self.dec_position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
            self.dec_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.decoder = BertEncoder(dec)
        self.apply(self.bert._init_weights)

    def loss(self, ids: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        """`ids`: original [batch, pos] ids; `picked`: [batch, pos] bool."""
        batch, pos = ids.shape
        corrupted = ids.masked_fill(picked, MASK)
        if self.decoder is None:
            # No padding in the batch, so no attention mask (HF would drop an all-ones mask anyway).
            mask = self.bias(torch.arange(pos).unsqueeze(0)) if self.bias is not None else None
            hidden = self.bert(input_ids=corrupted, attention_mask=mask).last_hidden_state
        else:
            hidden = self.mae_lm_hidden(corrupted, picked)
        at_picked = hidden.reshape(batch * pos, -1)[picked.reshape(-1)]
        return F.cross_entropy(self.head(at_picked), ids[picked])

    def mae_lm_hidden(self, corrupted: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        batch, pos = corrupted.shape
        visible = ~picked
        kept_len = int(visible.sum(1).max())
        # Visible positions first, in their original order (stable sort), cut to the longest row.
        order = torch.sort(picked.to(torch.uint8), dim=1, stable=True).indices[:, :kept_len]
        attention_mask = visible.gather(1, order)
        enc_ids = corrupted.gather(1, order).masked_fill(~attention_mask, PAD)
        position_ids = order.masked_fill(~attention_mask, 0)
        mask = self.bias(position_ids, attention_mask) if self.bias is not None else attention_mask.long()
        encoded = self.bert(input_ids=enc_ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
        # Scatter back: each visible position takes its slot's row, removed ones the [MASK] row.
        slot = torch.arange(batch).unsqueeze(1) * kept_len + visible.cumsum(1) - 1
        scatter_index = torch.where(visible, slot, batch * kept_len).reshape(-1)
        mask_row = self.bert.embeddings.word_embeddings.weight[MASK : MASK + 1]
        rows = torch.cat([encoded.reshape(batch * kept_len, -1), mask_row])
        scattered = rows.index_select(0, scatter_index).reshape(batch, pos, -1)
        hidden = self.dec_norm(scattered + self.dec_position(torch.arange(pos)))
        # Full length, no [PAD] in the batch: the decoder needs no attention mask.
        mask = self.dec_bias(torch.arange(pos).unsqueeze(0)) if self.dec_bias is not None else None
        return self.decoder(hidden, attention_mask=mask).last_hidden_state


def pick(batch: int, pos: int, prob: float = 0.15) -> torch.Tensor:
    """[batch, pos] bool: floor(prob * n + U) (>= 1) distinct picks among positions 1..pos-2."""
    n_candidates = pos - 2
    counts = (prob * n_candidates + torch.rand(batch, 1)).floor().clamp(min=1)
    ranks = torch.rand(batch, n_candidates).argsort(1).argsort(1)  # a random permutation per row
    picked = torch.zeros(batch, pos, dtype=torch.bool)
    picked[:, 1:-1] = ranks < counts
    return picked


def ms_per_step(objective: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.intermediate_size, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, initializer_range=0.02,
        pad_token_id=PAD, attn_implementation=args.attn,
    )
    decoder_layers = args.decoder_layers if objective == "mae-lm" else 0
    model = Pretraining(config, decoder_layers, args.relative_buckets, args.relative_max_distance, args.decoder_relative).train()
    params = list(model.parameters())  # tied weights appear once
    # Biases and LayerNorm parameters (exactly the 1-D ones) are not decayed.
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
         {"params": [p for p in params if p.ndim == 1], "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.98), eps=1e-6,
    )
    ids = torch.randint(FIRST_ORDINARY, args.vocab_size, (args.batch_size, args.seq_len))
    ids[:, 0], ids[:, -1] = CLS, SEP
    step_ms = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        picked = pick(args.batch_size, args.seq_len)
        loss = model.loss(ids, picked)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step > 0:  # step 0 is the warm-up
            step_ms.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(step_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per objective, after 1 warm-up step")
    parser.add_argument("--threads", type=int, default=physical_cores(), help="torch intra-op threads (default: physical cores)")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="HF attention implementation")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=1024)
    parser.add_argument("--decoder-layers", type=int, default=2, help="MAE-LM's decoder depth")
    parser.add_argument("--relative-buckets", type=int, default=0, help="relative-position bias buckets (0: none)")
    parser.add_argument("--relative-max-distance", type=int, default=128)
    parser.add_argument("--decoder-relative", action="store_true", help="MAE-LM's decoder gets its own bias table")
    parser.add_argument("--out", type=Path, default=Path("bench/reference_train.json"))
    args = parser.parse_args()
    assert 3 <= args.seq_len <= 512 and args.vocab_size > FIRST_ORDINARY and args.steps > 0

    torch.set_num_threads(args.threads)
    tokens = args.batch_size * args.seq_len
    shape = f"{args.layers} x {args.hidden_size}, {args.heads} heads, d_mlp {args.intermediate_size}, relative buckets {args.relative_buckets}"
    print(f"torch {torch.__version__}, {args.threads} threads, attention {args.attn}, {shape}, "
          f"batch {args.batch_size} x {args.seq_len} tokens, vocab {args.vocab_size}, {args.steps} timed steps")
    print(f"{'objective':<9} {'ms/step':>10} {'tokens/s':>10}")
    result = {}
    for objective in ["mlm", "mae-lm"]:
        ms = ms_per_step(objective, args)
        result[objective] = ms
        print(f"{objective:<9} {ms:>10.1f} {tokens / (ms / 1000):>10.0f}")
    result.update({"torch": torch.__version__, "threads": args.threads, "attn": args.attn, "model": shape,
                   "batch_size": args.batch_size, "seq_len": args.seq_len})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
