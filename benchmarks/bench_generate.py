"""Caption generation speed of LaVITForCausalLM against the bare language model, and prefill cost of dynamic vs fixed
image token counts.

    python benchmarks/bench_generate.py [--hidden 256 --layers 4 --new-tokens 32 --batch 4 --repeats 3]

Rows:
- `lavit generate (pixels)`: images tokenized inside `generate`, then decoding.
- `lavit generate (pre-tokenized ids)`: the same prompt with visual ids already in `input_ids`.
- `bare LM generate (same embeds)`: the language model's own `generate` from the identical input embeddings.
  The overhead of the wrapper is the ratio of the last two (target: under 5%).
- prefill: one forward over the batch with each image's dynamic token count vs a fixed 256 tokens per image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from gvt.tiny_random import build_tiny_random


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    text = {
        "hidden_size": args.hidden,
        "intermediate_size": args.hidden * 8 // 3,
        "num_hidden_layers": args.layers,
        "num_attention_heads": max(1, args.hidden // 64),
        "num_key_value_heads": max(1, args.hidden // 64),
        "max_position_embeddings": 2048,
    }
    vision = {"image_size": 224, "projection_dim": args.hidden, "decoder_max_positions": 256}
    model, processor = build_tiny_random("ids", seed=0, text_config=text, vision_config=vision)
    model.eval()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) // (i + 1)) for i in range(args.batch)
    ]
    texts = ["describe the image"] * args.batch
    n = args.new_tokens
    common = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}

    with torch.no_grad():
        pixels = processor(images=images, text=texts, return_tensors="pt")
        ids = processor(images=images, text=texts, vision_tokenizer=model.vision_tokenizer, return_tensors="pt")
        embeds = model.embed_input_ids(ids["input_ids"])
        suppress = [model.text_logits_processor()]
        counts = model.vision_tokenizer.tokenize(pixels["pixel_values"]).attention_mask.sum(1).tolist()

        rows = []
        t_pixels = timed(lambda: model.generate(**pixels, **common), args.repeats)
        t_ids = timed(lambda: model.generate(**ids, **common), args.repeats)
        t_bare = timed(
            lambda: model.language_model.generate(
                inputs_embeds=embeds, attention_mask=ids["attention_mask"], logits_processor=suppress, **common
            ),
            args.repeats,
        )
        tokens = n * args.batch
        rows.append(("lavit generate (pixels)", t_pixels, tokens / t_pixels))
        rows.append(("lavit generate (pre-tokenized ids)", t_ids, tokens / t_ids))
        rows.append(("bare LM generate (same embeds)", t_bare, tokens / t_bare))

        prompt_len = ids["input_ids"].shape[1] - max(counts)
        fixed_ids = torch.randint(256, 768, (args.batch, prompt_len + 256))
        t_dynamic = timed(lambda: model(**ids), args.repeats)
        t_fixed = timed(lambda: model(input_ids=fixed_ids), args.repeats)

    print(
        f"batch {args.batch}, {n} new tokens, LLM hidden {args.hidden} x {args.layers} layers, "
        f"{args.threads} thread(s); visual tokens per image: {counts} (fixed baseline: 256)"
    )
    print(f"{'generation':40s} {'seconds':>9s} {'tokens/s':>9s}")
    for name, seconds, rate in rows:
        print(f"{name:40s} {seconds:9.3f} {rate:9.1f}")
    print(f"{'wrapper overhead vs bare LM':40s} {100 * (t_ids / t_bare - 1):+8.1f}%")
    print(f"{'prefill':40s} {'seconds':>9s} {'tokens':>9s}")
    print(f"{'dynamic token count':40s} {t_dynamic:9.3f} {ids['input_ids'].shape[1]:9d}")
    print(f"{'fixed 256 tokens per image':40s} {t_fixed:9.3f} {fixed_ids.shape[1]:9d}")


if __name__ == "__main__":
    main()
