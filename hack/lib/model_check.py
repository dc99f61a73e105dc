#!/usr/bin/env python3
"""Use all-MiniLM-L6-v2 from a directory (an imgvol mount, or an unpacked
image) the way a model server would: open the safetensors weights (mmap),
summarise them, and compute sentence embeddings with a small numpy BERT.

  model_check.py MODEL_DIR [--reference DIR]

--reference DIR: first check that every file under DIR has an identical copy
under MODEL_DIR (sha256). Needs numpy and safetensors; nothing else (no torch,
no tokenizers: the uncased WordPiece tokenizer is a few lines here).
Exits non-zero if a file differs or the weights cannot be loaded.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
import unicodedata

import numpy as np
from safetensors import safe_open

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The new film is so great.",
    "A monkey is playing drums.",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def compare(ref, got):
    n = size = 0
    bad = []
    for dirpath, _, files in os.walk(ref):
        for fn in files:
            rel = os.path.relpath(os.path.join(dirpath, fn), ref)
            r, g = os.path.join(ref, rel), os.path.join(got, rel)
            n += 1
            size += os.path.getsize(r)
            if not os.path.isfile(g):
                bad.append(rel + " (missing)")
            elif sha256(r) != sha256(g):
                bad.append(rel + " (content differs)")
    return n, size, bad


# ---- tokenizer: BERT uncased basic tokenizer + greedy WordPiece -------------

def _is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokens(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out, cur = [], ""
    for ch in text:
        if ch.isspace():
            if cur:
                out.append(cur)
            cur = ""
        elif _is_punct(ch):
            if cur:
                out.append(cur)
            out.append(ch)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def wordpiece(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                pieces.append(sub)
                break
            end -= 1
        else:
            return ["[UNK]"]
        start = end
    return pieces


def tokenize(text, vocab, max_len=256):
    toks = ["[CLS]"]
    for w in basic_tokens(text):
        toks += wordpiece(w, vocab)
    toks = toks[:max_len - 1] + ["[SEP]"]
    return [vocab[t] for t in toks]


# ---- BERT encoder in numpy ---------------------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def encode(ids, W, cfg):
    """Mean-pooled, L2-normalised sentence embedding of one token id list."""
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    ids = np.asarray(ids)
    n = len(ids)
    x = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.position_embeddings.weight"][:n]
         + W["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)
    d = x.shape[1] // heads

    def lin(v, name):
        return v @ W[name + ".weight"].T + W[name + ".bias"]

    for i in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % i
        q, k, v = (lin(x, p + "attention.self." + t).reshape(n, heads, d).transpose(1, 0, 2)
                   for t in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
        x = layer_norm(lin(ctx, p + "attention.output.dense") + x,
                       W[p + "attention.output.LayerNorm.weight"],
                       W[p + "attention.output.LayerNorm.bias"], eps)
        h = gelu(lin(x, p + "intermediate.dense"))
        x = layer_norm(lin(h, p + "output.dense") + x,
                       W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps)
    e = x.mean(0)
    return e / np.linalg.norm(e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--reference")
    a = ap.parse_args()
    md = a.model_dir
    ok = True

    if a.reference:
        n, size, bad = compare(a.reference, md)
        if bad:
            ok = False
            print("  %d of %d files differ from the source:" % (len(bad), n))
            for b in bad[:10]:
                print("    " + b)
        else:
            print("  %d files, %.1f MB: byte-identical to the pip package's copy" % (n, size / 1e6))

    path = os.path.join(md, "model.safetensors")
    t0 = time.monotonic()
    try:
        f = safe_open(path, framework="np")
    except Exception as e:  # e.g. mmap refused by the file system
        print("  cannot open %s with safetensors (it mmaps the file): %s" % (path, e))
        return 1
    names = sorted(f.keys())
    W = {k: f.get_tensor(k) for k in names}
    t1 = time.monotonic()
    total = sum(int(np.prod(t.shape)) for k, t in W.items() if not k.endswith("position_ids"))
    print("  safetensors: %d tensors, %s parameters (%.1fM), loaded in %.2f s, metadata %s"
          % (len(names), format(total, ","), total / 1e6, t1 - t0, f.metadata()))
    for k in ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "encoder.layer.0.attention.self.query.weight", "encoder.layer.5.output.dense.weight",
              "pooler.dense.weight"]:
        if k in W:
            print("    %-46s %-8s %s" % (k, W[k].dtype, tuple(W[k].shape)))

    with open(os.path.join(md, "config.json")) as fh:
        cfg = json.load(fh)
    vocab = {}
    with open(os.path.join(md, "vocab.txt"), encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            vocab[line.rstrip("\n")] = i
    W = {k: v.astype(np.float32) for k, v in W.items()}
    emb = np.stack([encode(tokenize(s, vocab), W, cfg) for s in SENTENCES])
    sim = emb @ emb.T
    print("  sentence embeddings (%d-dim, mean pooling) - cosine similarity:" % emb.shape[1])
    for i, s in enumerate(SENTENCES):
        print("    %-36s %s" % (s, " ".join("%5.2f" % v for v in sim[i])))
    # The paraphrase pairs (0,1) and (2,3) must be each sentence's best match.
    for i, j in ((0, 1), (2, 3)):
        others = [sim[i, k] for k in range(len(SENTENCES)) if k not in (i, j)]
        if not sim[i, j] > max(others):
            ok = False
            print("  unexpected: %r is not closest to %r" % (SENTENCES[i], SENTENCES[j]))
    if ok:
        print("  paraphrases score highest: the weights work")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
