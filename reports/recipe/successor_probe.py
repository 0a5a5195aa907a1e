"""Can the objective learn to use context at all at toy scale? An independent PyTorch check.

Task: rows of 64 tokens that count upwards through 60 words (token t+1 is always the successor
of token t), 15% of positions picked. A model that uses either neighbour predicts every picked
token exactly; one that ignores context stays at ln 60 = 4.094 nats. Both objectives use the
same tiny post-LN encoder (2 × 64, 2 heads, BERT init N(0, σ), dropout 0, absolute positions,
optionally the relative-position bias of make_relpos_golden.py), AdamW (0.9/0.98, 1e-6, wd 0.01),
batch 16, linear warmup 100 then decay to 0 at 1500 steps:
- MLM: picked positions become [MASK]; MAE-LM: they are dropped from the encoder, whose kept
  tokens keep their original positions; a 1-layer decoder (own positions, LayerNorm, dropout 0)
  gets the encoder outputs scattered back with the [MASK] embedding row at dropped positions.

Run from the repo root (CPU, one thread, about a minute per run):

    python3 reports/recipe/successor_probe.py

It prints the mean loss and accuracy of the last 100 steps for each objective, lr and init σ:
BERT's 0.02, and 0.069 = 0.02 · √(768 / 64), the per-matrix gain 0.02 has at BERT-base's width. The numbers
are quoted in reports/recipe/README.md beside repdef's own runs on the same task, whose corpus
`python3 reports/recipe/successor_probe.py --write-corpus FILE` writes (200 documents of 100
lines, each line 20–39 successive words).
"""

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures" / "golden"))
from make_relpos_golden import block  # noqa: E402

D, HEADS, FFN, LAYERS, VOCAB, WORDS, POS, BATCH, STEPS, MASK = 64, 2, 256, 2, 80, 60, 64, 16, 1500, 4
CFG = {"layer_norm_eps": 1e-12, "num_attention_heads": HEADS}


def parameters(decoder_layers, std):
    g = torch.Generator().manual_seed(0)
    w = {}

    def normal(name, *shape):
        w[name] = torch.randn(*shape, generator=g) * std

    def layer(p):
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            normal(p + n + ".weight", D, D)
            w[p + n + ".bias"] = torch.zeros(D)
        normal(p + "intermediate.dense.weight", FFN, D)
        w[p + "intermediate.dense.bias"] = torch.zeros(FFN)
        normal(p + "output.dense.weight", D, FFN)
        w[p + "output.dense.bias"] = torch.zeros(D)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + n + ".weight"], w[p + n + ".bias"] = torch.ones(D), torch.zeros(D)

    normal("word", VOCAB, D)
    normal("position", POS, D)
    normal("decoder.position", POS, D)
    for n in ("ln", "decoder.ln", "head.ln"):
        w[n + ".weight"], w[n + ".bias"] = torch.ones(D), torch.zeros(D)
    normal("head.dense.weight", D, D)
    w["head.dense.bias"], w["head.bias"] = torch.zeros(D), torch.zeros(VOCAB)
    for i in range(LAYERS):
        layer(f"encoder.{i}.")
    for i in range(decoder_layers):
        layer(f"decoder.{i}.")
    return {k: v.requires_grad_(True) for k, v in w.items()}


def ln(w, x, name):
    return F.layer_norm(x, (D,), w[name + ".weight"], w[name + ".bias"], 1e-12)


def stack(w, prefix, n, x, pad):
    bias = (pad[:, None, None, :].float()) * -1e9
    for i in range(n):
        x = block(w, CFG, f"{prefix}.{i}.", x, bias)
    return x


def batch(g):
    start = torch.randint(0, WORDS, (BATCH, 1), generator=g)
    ids = 10 + (start + torch.arange(POS)) % WORDS
    picked = torch.zeros(BATCH, POS, dtype=torch.bool)
    for r in range(BATCH):
        n = int(0.15 * POS + torch.rand(1, generator=g).item())
        picked[r, torch.randperm(POS, generator=g)[:n]] = True
    return ids, picked


def logits_at_picked(w, objective, ids, picked):
    positions = torch.arange(POS).expand(BATCH, POS)
    if objective == "mlm":
        x = ln(w, w["word"][torch.where(picked, MASK, ids)] + w["position"][positions], "ln")
        hidden = stack(w, "encoder", LAYERS, x, torch.zeros_like(picked))
    else:
        kept = ~picked
        kept_len = int(kept.sum(1).max())
        order = torch.argsort((~kept).int(), dim=1, stable=True)[:, :kept_len]  # kept first, in order
        c_ids, c_pos = ids.gather(1, order), order
        c_pad = torch.arange(kept_len)[None, :] >= kept.sum(1, keepdim=True)
        encoded = stack(w, "encoder", LAYERS, ln(w, w["word"][c_ids] + w["position"][c_pos], "ln"), c_pad)
        full = w["word"][MASK].expand(BATCH, POS, D).clone()
        rows = torch.arange(BATCH)[:, None].expand(BATCH, kept_len)
        full[rows[~c_pad], c_pos[~c_pad]] = encoded[~c_pad]
        x = ln(w, full + w["decoder.position"][positions], "decoder.ln")
        hidden = stack(w, "decoder", 1, x, torch.zeros_like(picked))
    h = ln(w, F.gelu(hidden[picked] @ w["head.dense.weight"].T + w["head.dense.bias"]), "head.ln")
    return h @ w["word"].T + w["head.bias"]


def train(objective, lr, std):
    torch.manual_seed(0)
    w = parameters(decoder_layers=1 if objective == "mae-lm" else 0, std=std)
    decay = [p for k, p in w.items() if not (k.endswith("bias") or ".ln" in k or k.startswith("ln") or "LayerNorm" in k)]
    rest = [p for p in w.values() if all(p is not q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 100, max(0.0, (STEPS - s) / (STEPS - 100))))
    g = torch.Generator().manual_seed(1)
    tail = []
    for step in range(STEPS):
        ids, picked = batch(g)
        logits = logits_at_picked(w, objective, ids, picked)
        loss = F.cross_entropy(logits, ids[picked])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        opt.step()
        sched.step()
        if step >= STEPS - 100:
            tail.append((loss.item(), (logits.argmax(1) == ids[picked]).float().mean().item()))
    loss, acc = (sum(t[i] for t in tail) / len(tail) for i in (0, 1))
    print(f"{objective:6} lr {lr:.0e} init {std}: last-100-step loss {loss:.3f} (ln {WORDS} = {math.log(WORDS):.3f}), accuracy {acc:.3f}", flush=True)


def write_corpus(path):
    import random

    rng = random.Random(0)
    words = [f"w{i}x" for i in range(WORDS)]
    with open(path, "w") as f:
        for _ in range(200):
            for _ in range(100):
                start, n = rng.randrange(WORDS), rng.randrange(20, 40)
                f.write(" ".join(words[(start + k) % WORDS] for k in range(n)) + "\n")
            f.write("\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-corpus"]:
        write_corpus(sys.argv[2])
        sys.exit()
    torch.set_num_threads(1)
    for std in (0.02, 0.069):
        for lr in (2e-3, 5e-4):
            for objective in ("mlm", "mae-lm"):
                train(objective, lr, std)
