"""Caption generation speed of LaVITForCausalLM against the bare language model, and prefill cost of dynamic vs fixed
image token counts, measured in interleaved rounds (medians and paired ratios).

    python benchmarks/bench_generate.py [--hidden 256 --layers 4 --new-tokens 32 --batch 4 --rounds 7]

Rows:
- LaVIT `generate` with pre-tokenized visual ids against the language model's own `generate` from the identical
  input embeddings (the same new tokens, checked): the wrapper's overhead (target: under 5%);
- LaVIT `generate` from pixels (the visual tokenizer runs inside) against the same bare baseline;
- prefill: one forward over the batch with each image's dynamic token count vs a fixed 256 tokens per image.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_inference_paths import interleaved
from PIL import Image

from gvt.tiny_random import build_tiny_random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
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

        def bare():
            return model.language_model.generate(
                inputs_embeds=embeds, attention_mask=ids["attention_mask"], logits_processor=suppress, **common
            )

        # Same embeddings, same greedy tokens: LaVIT's generate returns the prompt followed by them.
        lavit_new = model.generate(**ids, **common)[:, ids["input_ids"].shape[1] :]
        if not torch.equal(lavit_new, bare()):
            raise AssertionError("LaVIT's generate and the bare language model's disagree on the same embeddings")
        overhead_ids = interleaved(bare, lambda: model.generate(**ids, **common), args.rounds)
        overhead_pixels = interleaved(bare, lambda: model.generate(**pixels, **common), args.rounds)

        prompt_len = ids["input_ids"].shape[1] - max(counts)
        fixed_ids = torch.randint(256, 768, (args.batch, prompt_len + 256))
        prefill = interleaved(lambda: model(input_ids=fixed_ids), lambda: model(**ids), args.rounds)

    tokens = n * args.batch
    print(
        f"batch {args.batch}, {n} new tokens, LLM hidden {args.hidden} x {args.layers} layers, "
        f"{args.threads} thread(s), {args.rounds} interleaved rounds; visual tokens per image: {counts} "
        "(fixed baseline: 256); the same new tokens checked equal"
    )
    print("| generation | baseline s | gvt s | gvt tokens/s | overhead (median of paired ratios) |")
    print("|---|---:|---:|---:|---:|")
    for name, (before, now, ratio) in (
        ("LaVIT generate, pre-tokenized ids, vs bare LM on the same embeds", overhead_ids),
        ("LaVIT generate from pixels (tokenizer included) vs bare LM", overhead_pixels),
    ):
        print(f"| {name} | {before:.3f} | {now:.3f} | {tokens / now:.1f} | {100 * (1 / ratio - 1):+.1f}% |")
    before, now, ratio = prefill
    print(
        f"| prefill: dynamic token count ({ids['input_ids'].shape[1]} positions) vs fixed 256 per image "
        f"({fixed_ids.shape[1]}) | {before:.3f} | {now:.3f} | | {ratio:.2f}x faster |"
    )


if __name__ == "__main__":
    main()
