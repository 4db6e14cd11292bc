"""Peak memory of the streaming LaVIT release conversion, against the size of the release's largest shard.

    python benchmarks/bench_conversion_memory.py [--hidden 1024] [--layers 8] [--shard-mb 180] [--keep]

Builds a mid-size fake LaVIT release in a temporary folder (a random tiny visual tokenizer written back into the
release layout, a Llama of `--hidden` x `--layers` over 32000 text + 2 + 512 visual rows, saved as sharded `.bin`
pickles of at most `--shard-mb` MB, a 32000-word `tokenizer.json`), then converts it in a fresh subprocess per row.

Method: the child imports everything the conversion needs (torch, transformers' Llama, diffusers, gvt), then reads
its peak resident set `VmHWM` from `/proc/self/status` as the baseline; after the conversion it reads `VmHWM` again
(`ru_maxrss` is not used: Linux carries it over from the parent across fork + exec, so a child started by a parent
that holds the fake model would report the parent's peak). "Peak extra" is the difference: the
largest resident set the conversion itself added (file-backed pages of the memory-mapped `.bin` shards count, since
they are resident while mapped). Ratio = peak extra / largest input shard. The diffusion decoders are skipped
(`decoders=False`): they are loaded whole by diffusers, like any UNet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, sys
import torch, diffusers, transformers
from transformers import LlamaForCausalLM, AutoTokenizer
import gvt
from gvt.release_conversion import convert_lavit_release

def status_kb(field):  # VmHWM: this process's peak resident set (reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

baseline = status_kb("VmHWM")
args = json.loads(sys.argv[1])
convert_lavit_release(args["input"], args["output"], num_heads=4, dtype=args["dtype"], decoders=False,
                      max_shard_size=args["max_shard_size"], model_card=None)
peak = status_kb("VmHWM")
print(json.dumps({"baseline_kb": baseline, "peak_kb": peak}))
"""


def build_release(root: Path, hidden: int, layers: int, shard_mb: int) -> list[Path]:
    from reference_layout import lavit_release_state_dicts
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from gvt import GVTVisionConfig, GVTVisionTokenizer

    torch.manual_seed(0)
    vision = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", projection_dim=hidden)).eval()
    for stem, state_dict in lavit_release_state_dicts(vision).items():
        path = root / f"{stem}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.contiguous().clone() for k, v in state_dict.items()}, path)

    llm_dir = root / "language_model"
    text = 32000
    config = LlamaConfig(
        vocab_size=text + 2 + vision.config.codebook_size,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75),
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    config.save_pretrained(llm_dir)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, text)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(llm_dir)
    # greedy sharding like transformers' save_pretrained(max_shard_size=...)
    limit = shard_mb * 10**6
    shards: list[dict] = [{}]
    size = 0
    for key, tensor in model.state_dict().items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor.detach().clone()
        size += nbytes
    weight_map, paths = {}, []
    for number, shard in enumerate(shards, start=1):
        name = f"pytorch_model-{number:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, llm_dir / name)
        weight_map.update(dict.fromkeys(shard, name))
        paths.append(llm_dir / name)
    (llm_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    del model, shards
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--shard-mb", type=int, default=180)
    parser.add_argument("--max-shard-size", default="2GB", help="output shard limit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gvt-bench-conversion-"))
    release = work / "release"
    shards = build_release(release, args.hidden, args.layers, args.shard_mb)
    largest = max(path.stat().st_size for path in shards) / 2**20
    total = sum(path.stat().st_size for path in shards) / 2**20
    print(f"fake release: {len(shards)} LLM shards, {total:.0f} MiB in all, largest {largest:.0f} MiB")
    print(f"{'dtype':<8} {'largest shard MiB':>18} {'peak extra RSS MiB':>19} {'ratio':>6} {'baseline MiB':>13}")
    for dtype in (None, "bf16"):
        spec = {"input": str(release), "output": str(work / f"out-{dtype}"), "dtype": dtype,
                "max_shard_size": args.max_shard_size}  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            capture_output=True,
            text=True,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},  # fmt: skip
        )
        if result.returncode != 0:
            raise SystemExit(result.stderr)
        numbers = json.loads(result.stdout.strip().splitlines()[-1])
        extra = (numbers["peak_kb"] - numbers["baseline_kb"]) / 1024
        print(
            f"{dtype or 'fp32':<8} {largest:>18.0f} {extra:>19.0f} {extra / largest:>6.2f} "
            f"{numbers['baseline_kb'] / 1024:>13.0f}"
        )
    if not args.keep:
        import shutil

        shutil.rmtree(work)
    else:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
