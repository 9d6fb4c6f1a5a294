#!/usr/bin/env python3
"""sentence-transformers' all-MiniLM-L6-v2, the reference NeuroStash's
local model is checked and benchmarked against.

Reads a JSON list of texts on stdin, loads the model from
$NEUROSTASH_EMBED_MODEL_DIR (offline), and writes JSON on stdout:

    PYTHONPATH=$NEUROSTASH_ST_PYTHONPATH HF_HUB_OFFLINE=1 \\
        python3 scripts/st_embed.py embed < texts.json      # [[f32; 384], ...]
    ... python3 scripts/st_embed.py bench --threads 2 --batch-size 32 --repeats 3 < texts.json
                                                           # {"seconds": best, "texts": n}

`bench` sets torch's thread count, encodes the texts once to warm up, then
times `encode` alone (not the loading) and reports the best of the repeats.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["embed", "bench"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    texts = json.load(sys.stdin)
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = SentenceTransformer(os.environ["NEUROSTASH_EMBED_MODEL_DIR"], device="cpu")

    if args.mode == "embed":
        vectors = model.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
        json.dump(vectors.tolist(), sys.stdout)
        return

    model.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
    best = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
        best = min(best, time.perf_counter() - started)
    json.dump({"seconds": best, "texts": len(texts)}, sys.stdout)


if __name__ == "__main__":
    main()
