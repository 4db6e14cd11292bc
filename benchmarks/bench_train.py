"""Training-step throughput and peak memory of LaVITForCausalLM under `transformers.Trainer`-style steps:
frozen tokenizer (LLM training, ETT stage 1) vs ETT stage 2 (tokenizer + LLM + projector, joint loss); and, with
`--engines`, `gvt train llm` on 2 processes under torchrun with DDP vs FSDP2 (`--fsdp`).

    python benchmarks/bench_train.py [--sizes tiny mid] [--steps 5] [--batch-size 4]
    python benchmarks/bench_train.py --engines --sizes mid [--steps 4] [--batch-size 2] [--repeats 2]

Prints a table: samples/s over timed steps (after one warm-up step) and peak memory (CUDA: max allocated; CPU: the
process's peak resident set, which only grows: read it per size, run sizes separately for clean numbers). The engine
table: global samples/s of the 2 processes and each process's peak resident set, DDP and FSDP runs interleaved
(DDP, FSDP, DDP, FSDP, ...; a fresh torchrun each), with the FSDP / DDP ratio of each pair and their median.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainerState

from gvt.data import build_synthetic_dataset, to_caption_rows
from gvt.tiny_random import build_tiny_random
from gvt.training.collator import GVTDataCollator
from gvt.training.ett import ETTCallback, ett_parameter_groups, prepare_ett_model
from gvt.training.fsdp import DEFAULT_FSDP_CONFIG, FSDPTrainer
from gvt.training.llm_training import training_arguments

SIZES = {
    "tiny": {"vision_config": {"decoder_output_dim": 64}},
    "mid": {
        "vision_config": {
            "image_size": 224,
            "hidden_size": 256,
            "num_hidden_layers": 6,
            "num_attention_heads": 8,
            "intermediate_size": 1024,
            "merger_num_layers": 4,
            "merger_num_attention_heads": 8,
            "merger_intermediate_size": 1024,
            "decoder_hidden_size": 256,
            "decoder_num_layers": 4,
            "decoder_num_attention_heads": 8,
            "decoder_intermediate_size": 1024,
            "decoder_output_dim": 256,
            "decoder_num_queries": 256,
            "decoder_max_positions": 256,
            "projection_dim": 512,
        },
        "text_config": {
            "hidden_size": 512,
            "intermediate_size": 1376,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
        },
    },
}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(size: str, stage: int, steps: int, batch_size: int, device: torch.device) -> dict:
    model, processor = build_tiny_random("codebook", seed=0, **SIZES[size])
    model.to(device)
    callback = ETTCallback(unfreeze_step=0 if stage == 2 else 10**9)
    prepare_ett_model(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    callback._groups = ett_parameter_groups(model)
    callback._apply(model, TrainerState(), stage)  # what on_train_begin does, without a Trainer
    image_size = model.config.vision_config.image_size
    rows = to_caption_rows(build_synthetic_dataset(batch_size, 0, 0, image_size=image_size)["train"])
    batch = {k: v.to(device) for k, v in GVTDataCollator(processor)(list(rows)).items()}
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    seconds = sum(timings[1:]) / steps
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "size": size,
        "stage": "ETT stage 2" if stage == 2 else "stage 1 (frozen tok)",
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_M": trainable / 1e6,
        "samples_per_s": batch_size / seconds,
        "peak_MB": peak_memory_mb(device),
    }


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, and the highest resident set while training (sampled every 2 ms from the
    start of training, i.e. after the model is wrapped or sharded: the full model every rank builds first is not in
    it, while `ru_maxrss` keeps it)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.training_peak_mb = 0.0
        self._running = False

    def _sample(self):
        while self._running:
            self.training_peak_mb = max(self.training_peak_mb, resident_mb())
            time.sleep(0.002)

    def on_train_begin(self, args, state, control, **kwargs):
        self._running = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def on_train_end(self, args, state, control, **kwargs):
        self._running = False
        self._sampler.join()

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def model_state_mb(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """Parameters and optimizer state this process holds (its local shard under FSDP), in MB."""

    def local_bytes(tensor: torch.Tensor) -> int:
        tensor = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        return tensor.numel() * tensor.element_size()

    total = sum(local_bytes(p) for p in model.parameters())
    for state in optimizer.state.values():
        total += sum(local_bytes(value) for value in state.values() if torch.is_tensor(value) and value.dim() > 0)
    return total / 2**20


def engine_worker(engine: str, size: str, steps: int, batch_size: int, result: str) -> None:
    """One rank of `gvt train llm` (frozen tokenizer) under torchrun: `steps` timed steps after one warm-up step."""
    model, processor = build_tiny_random("ids", seed=0, **SIZES[size])
    model.vision_tokenizer.requires_grad_(False)
    image_size = model.config.vision_config.image_size
    world_size = int(os.environ["WORLD_SIZE"])
    count = batch_size * world_size * (steps + 1)
    rows = to_caption_rows(build_synthetic_dataset(count, 0, 0, image_size=image_size)["train"])
    fsdp = {"fsdp": True, "fsdp_config": dict(DEFAULT_FSDP_CONFIG)} if engine == "fsdp" else {}
    args = training_arguments(
        tempfile.mkdtemp(prefix="bench_train_"), max_steps=steps + 1, per_device_train_batch_size=batch_size,
        disable_tqdm=True, logging_steps=10**6, **fsdp,
    )  # fmt: skip
    timer = StepTimer()
    trainer = FSDPTrainer(
        model=model, args=args, train_dataset=rows, data_collator=GVTDataCollator(processor), callbacks=[timer]
    )
    trainer.train()
    assert trainer.is_fsdp_enabled == (engine == "fsdp")
    state_mb = model_state_mb(trainer.model_wrapped, trainer.optimizer)
    shutil.rmtree(args.output_dir, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rank = int(os.environ["RANK"])
    record = {
        "seconds": timer.seconds[1:],
        "peak_MB": peak_mb,
        "training_peak_MB": timer.training_peak_mb,
        "state_MB": state_mb,
        "samples": batch_size * world_size,
    }
    Path(f"{result}.{rank}").write_text(json.dumps(record))


def run_engine(engine: str, size: str, steps: int, batch_size: int, folder: Path, tag: str) -> dict:
    """`engine_worker` on 2 CPU processes under torchrun; the global samples/s and each rank's peak RSS."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    result = folder / tag
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    command = [torchrun, "--nproc_per_node", "2", "--master_addr", "localhost", "--master_port", str(port), __file__]
    command += ["--worker", engine, "--sizes", size, "--steps", str(steps), "--batch-size", str(batch_size)]
    command += ["--result", str(result)]
    # a fixed mmap threshold: glibc returns freed large blocks (the full weights FSDP replaced by shards, activations)
    # to the system, so the resident set follows what is in use instead of only growing
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MALLOC_MMAP_THRESHOLD_": "1048576",
    }
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{engine} run failed:\n{completed.stderr[-3000:]}")
    ranks = [json.loads(Path(f"{result}.{rank}").read_text()) for rank in range(2)]
    step_seconds = [max(pair) for pair in zip(ranks[0]["seconds"], ranks[1]["seconds"])]  # the slower rank's step
    return {
        "samples_per_s": ranks[0]["samples"] * len(step_seconds) / sum(step_seconds),
        "peak_MB": [rank["peak_MB"] for rank in ranks],
        "training_peak_MB": [rank["training_peak_MB"] for rank in ranks],
        "state_MB": [rank["state_MB"] for rank in ranks],
    }


def bench_engines(sizes: list[str], steps: int, batch_size: int, repeats: int) -> None:
    print(
        f"gvt train llm on 2 CPU processes (torchrun, gloo), batch {batch_size} per process, {steps} timed steps, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, {repeats} interleaved DDP/FSDP pairs"
    )
    print(
        f"{'size':<6} {'engine':<7} {'samples/s':>10} {'vs DDP':>7} {'peak RSS MB run r0/r1':>22} "
        f"{'peak RSS MB training r0/r1':>27} {'vs DDP':>7} {'params+optim MB r0/r1':>22} {'vs DDP':>7}"
    )
    for size in sizes:
        runs: dict[str, list[dict]] = {"ddp": [], "fsdp": []}
        with tempfile.TemporaryDirectory() as folder:
            for repeat in range(repeats):
                for engine in ("ddp", "fsdp"):
                    runs[engine].append(run_engine(engine, size, steps, batch_size, Path(folder), f"{engine}{repeat}"))
        for engine in ("ddp", "fsdp"):
            pairs = list(zip(runs[engine], runs["ddp"]))
            speed = statistics.median(run["samples_per_s"] for run in runs[engine])
            speed_ratio = statistics.median(mine["samples_per_s"] / ddp["samples_per_s"] for mine, ddp in pairs)
            whole = [statistics.median(run["peak_MB"][rank] for run in runs[engine]) for rank in range(2)]
            training = [statistics.median(run["training_peak_MB"][rank] for run in runs[engine]) for rank in range(2)]
            memory_ratio = statistics.median(
                max(mine["training_peak_MB"]) / max(ddp["training_peak_MB"]) for mine, ddp in pairs
            )
            state = runs[engine][0]["state_MB"]  # the same in every run
            state_ratio = max(state) / max(runs["ddp"][0]["state_MB"])
            print(
                f"{size:<6} {engine:<7} {speed:>10.2f} {speed_ratio:>6.2f}x {f'{whole[0]:.0f} / {whole[1]:.0f}':>22} "
                f"{f'{training[0]:.0f} / {training[1]:.0f}':>27} {memory_ratio:>6.2f}x "
                f"{f'{state[0]:.0f} / {state[1]:.0f}':>22} {state_ratio:>6.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--engines", action="store_true", help="DDP vs FSDP on 2 CPU processes instead")
    parser.add_argument("--repeats", type=int, default=2, help="--engines: interleaved DDP/FSDP pairs")
    parser.add_argument("--worker", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine_worker(args.worker, args.sizes[0], args.steps, args.batch_size, args.result)
        return
    if args.engines:
        bench_engines(args.sizes, args.steps, args.batch_size, args.repeats)
        return
    device = torch.device(args.device)
    print(
        f"device {device}, batch {args.batch_size}, {args.steps} timed steps, torch threads {torch.get_num_threads()}"
    )
    print(f"{'size':<6} {'stage':<20} {'params M':>9} {'trainable M':>12} {'samples/s':>10} {'peak MB':>9}")
    for size in args.sizes:
        for stage in (1, 2):
            r = bench(size, stage, args.steps, args.batch_size, device)
            print(
                f"{r['size']:<6} {r['stage']:<20} {r['params_M']:>9.2f} {r['trainable_M']:>12.2f} "
                f"{r['samples_per_s']:>10.2f} {r['peak_MB']:>9.0f}"
            )


if __name__ == "__main__":
    main()
