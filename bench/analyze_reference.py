#!/usr/bin/env python3
"""transformers + numpy reference for `repdef bench analyze` (protocol: bench/ANALYZE.md).

The straightforward way to measure the paper's per-layer effective rank (Meng et al. 2023),
with the same shapes and work as src/bench_analysis.rs:

* model: random-init HF `BertModel`, by default at preset `mini` (vocab 8192, d_model 256,
  4 layers, 4 heads, d_mlp 1024, 512 positions, no pooler; --layers, --hidden-size, --heads and
  --intermediate-size change the shape, e.g. all-MiniLM-L6-v2's 6 x 384, 12 heads, 1536),
  `torch.manual_seed(0)`, eval mode;
* data: ceil(--tokens / --seq-len) sequences of random ids in 5..8191, [CLS]=2 first,
  [SEP]=3 last, no padding; the token count reported is that many whole sequences
  (10000 -> 10112), the same count repdef reports;
* masking: per sequence floor(0.15 * n + U[0,1)) (>= 1) of the n non-special positions,
  picked uniformly without replacement (numpy RNG, seed 0), all replaced by [MASK]=4;
* two conditions per batch of --batch-size sequences: "masked" (corrupted ids) and "clean"
  (original ids), each one `model(ids, attention_mask, output_hidden_states=True)` under
  `torch.inference_mode()`; every layer's hidden states (HF `hidden_states[0..layers]`) are split
  into groups and kept as float32 arrays: masked/all (every non-pad position, [CLS]/[SEP]
  included), masked/real (unpicked non-special), masked/mask (picked), clean/all, clean/real
  (the same positions as masked/real);
* spectra, per (condition, group, layer), by one of two routes (--route):
  - `gram` (default, streaming, the cheaper way): each batch's rows are cast to float64 and
    added as H^T H to that key's Gram matrix; at the end `np.linalg.eigvalsh(G)`. Memory stays
    flat (5 x (layers + 1) matrices of d_model x d_model);
  - `svd` (the most direct way): every batch's rows are kept; at the end `np.concatenate` ->
    float64 -> `np.linalg.svd(H, compute_uv=False)`, squared. Memory grows with the token count
    (~4 KiB of float32 per token per layer, plus the float64 copy of the group being decomposed);
* var@0.9 = smallest k with sum_{i<=k} lambda_i >= 0.9 sum lambda_i (uncentred, lambda descending).

Timed: masking, both conditions' forward passes, the Gram updates or the collection, stacking
and SVDs, and the 25 spectra (data generation and model construction are not).

Prints and writes (--out) {"tokens", "seconds", "tokens_per_s", "peak_rss_mib", "route",
"torch", "numpy", "threads"}; peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss` (KiB on Linux).
"""

import argparse
import json
import os
import resource
import time
from pathlib import Path

PAD, CLS, SEP, MASK, FIRST_ORDINARY, VOCAB = 0, 2, 3, 4, 5, 8192


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and OpenBLAS threads (default: all CPUs)")
    parser.add_argument("--route", choices=["gram", "svd"], default="gram", help="streamed float64 Gram + eigvalsh, or stacked SVD")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, help="write the measurement here as JSON")
    args = parser.parse_args()

    # numpy's OpenBLAS reads its thread count at import time.
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    from transformers import BertConfig, BertModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=PAD,
    )
    model = BertModel(config, add_pooling_layer=False).eval()

    rng = np.random.default_rng(0)
    n_seqs = -(-args.tokens // args.seq_len)
    ids = rng.integers(FIRST_ORDINARY, VOCAB, size=(n_seqs, args.seq_len))
    ids[:, 0], ids[:, -1] = CLS, SEP
    tokens = ids.size
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} threads, {args.layers} x {args.hidden_size}, "
          f"{n_seqs} x {args.seq_len} = {tokens} tokens, batch {args.batch_size}, route {args.route}")

    start = time.perf_counter()
    hidden = {}  # svd route: (condition, group, layer) -> list of [rows, d_model] float32 arrays
    gram = {}  # gram route: (condition, group, layer) -> [d_model, d_model] float64
    for first in range(0, n_seqs, args.batch_size):
        clean = ids[first : first + args.batch_size]
        n_candidates = args.seq_len - 2
        picked = np.zeros(clean.shape, dtype=bool)
        for row in picked:
            n_pick = max(1, int(np.floor(0.15 * n_candidates + rng.random())))
            row[1 + rng.choice(n_candidates, n_pick, replace=False)] = True
        masked = np.where(picked, MASK, clean)
        non_pad = clean != PAD
        real = non_pad & ~picked & (clean != CLS) & (clean != SEP)
        conditions = {"masked": (masked, {"all": non_pad, "real": real, "mask": picked}),
                      "clean": (clean, {"all": non_pad, "real": real})}
        for condition, (batch_ids, groups) in conditions.items():
            with torch.inference_mode():
                out = model(input_ids=torch.from_numpy(batch_ids), attention_mask=torch.from_numpy(non_pad).long(),
                            output_hidden_states=True)
            for layer, states in enumerate(out.hidden_states):
                states = states.numpy()
                for group, where in groups.items():
                    key = (condition, group, layer)
                    if args.route == "gram":
                        rows = states[where].astype(np.float64)
                        gram[key] = gram.get(key, 0.0) + rows.T @ rows
                    else:
                        hidden.setdefault(key, []).append(states[where])

    forward_seconds = time.perf_counter() - start
    ranks = {}
    for key in list(gram) + list(hidden):
        if args.route == "gram":
            spectrum = np.linalg.eigvalsh(gram.pop(key))[::-1]
        else:
            spectrum = np.linalg.svd(np.concatenate(hidden.pop(key)).astype(np.float64), compute_uv=False) ** 2
        energy = np.cumsum(spectrum)
        ranks[key] = int(np.searchsorted(energy, 0.9 * energy[-1]) + 1)  # var@0.9
    seconds = time.perf_counter() - start
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("var@0.9 by layer: " + "; ".join(
        f"{c}/{g} " + " ".join(str(ranks[(c, g, l)]) for l in range(config.num_hidden_layers + 1))
        for c, g in dict.fromkeys(k[:2] for k in ranks)))
    print(f"{'tokens':>10} {'seconds':>10} {'(forward':>10} {'spectra)':>9} {'tokens/s':>10} {'peak RSS MiB':>13}")
    print(f"{tokens:>10} {seconds:>10.2f} {forward_seconds:>10.2f} {seconds - forward_seconds:>9.2f} "
          f"{tokens / seconds:>10.0f} {peak_rss_mib:>13.0f}")
    if args.out:
        result = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_mib": peak_rss_mib,
                  "route": args.route, "torch": torch.__version__, "numpy": np.__version__, "threads": args.threads}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
