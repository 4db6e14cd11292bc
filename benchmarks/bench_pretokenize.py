"""`gvt pretokenize` with 1 and 2 processes (torchrun, CPU gloo, one thread each): images/s and their ratio, peak
resident memory per process, and the cost of a resume (a run SIGKILLed in the middle of a shard, then restarted).

    python benchmarks/bench_pretokenize.py [--images 96] [--size mid] [--shard-size 16] [--batch-size 8] [--repeats 2]

Also: 1 process with and without decoding threads (`--num-workers`).

Runs are interleaved (1, 2, 1, 2, ...) and every ratio is taken against the 1-process run of the same round. Each
process reports the seconds of its shard loop (decode, tokenize, write: "images/s" is the images over the slowest
rank's loop), its setup inside `pretokenize` (model, dataset, process group) and its peak RSS; "wall" is the whole
launch as the parent saw it (interpreter start and imports included). A resume's "seconds lost" is
(killed run + restart) - uninterrupted run, in wall and in CPU seconds of the launches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    "tiny": {},
    "mid": {
        "image_size": 224,
        "hidden_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "intermediate_size": 1024,
        "merger_num_layers": 4,
        "merger_num_attention_heads": 8,
        "merger_intermediate_size": 1024,
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def make_inputs(root: Path, num_images: int, size: str) -> tuple[Path, Path]:
    """An image folder of random 256 x 256 pictures with captions, and a saved vision tokenizer."""
    import numpy as np
    import torch
    from PIL import Image

    from gvt import GVTVisionConfig, GVTVisionTokenizer

    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for index in range(num_images):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(images / f"{index:05d}.jpg")
        lines.append(json.dumps({"file_name": f"{index:05d}.jpg", "text": f"picture {index}"}))
    (images / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    model_dir = root / "tokenizer"
    GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", **SIZES[size])).save_pretrained(model_dir)
    return images, model_dir


def launch(
    args, images: Path, model_dir: Path, out: Path, report: Path, processes: int, kill_after: int = 0, workers: int = 0
):
    """Run the worker in `processes` processes; returns (wall seconds, CPU seconds of the launch, per-rank reports)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    worker = [__file__, "--worker", str(images), str(model_dir), str(out), str(report)]
    worker += ["--shard-size", str(args.shard_size), "--batch-size", str(args.batch_size)]
    worker += ["--kill-after", str(kill_after), "--num-workers", str(workers)]
    if processes == 1:
        command = [sys.executable, *worker]
    else:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
        command = [torchrun, "--nproc_per_node", str(processes), "--master_addr", "localhost"]
        command += ["--master_port", str(free_port()), *worker]
    report.mkdir(parents=True, exist_ok=True)
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu_before
    if kill_after == 0 and result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return wall, cpu, [json.loads(path.read_text()) for path in sorted(report.glob("rank*.json"))]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("report")
    parser.add_argument("--shard-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--kill-after", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    import gvt.pretokenize as pretokenize_module

    torch.set_num_threads(1)
    if args.kill_after:  # SIGKILL half-way through the shard after the first `kill_after` ones (its work is lost)
        write_entry, written = pretokenize_module._write_entry, []

        def killing_write_entry(entry, path):
            write_entry(entry, path)
            written.append(path)

        tokenize, calls = pretokenize_module._ShardWriter._tokenize, []

        def killing_tokenize(self, images, generator):
            if len(written) >= args.kill_after:
                calls.append(1)
                if len(calls) == 2:  # the second batch of the shard
                    os.kill(os.getpid(), signal.SIGKILL)
            return tokenize(self, images, generator)

        pretokenize_module._write_entry = killing_write_entry
        pretokenize_module._ShardWriter._tokenize = killing_tokenize
    result = pretokenize_module.pretokenize(
        pretokenize_module.PretokenizeArguments(
            source=args.images,
            output_dir=args.out,
            model=args.model,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            progress=False,
        )
    )
    report = {
        "rank": result.rank,
        "seconds": result.seconds,
        "shard_seconds": result.shard_seconds,
        "rows": result.rows_written,
        "shards_skipped": result.shards_skipped,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(args.report, f"rank{result.rank}.json").write_text(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", choices=sorted(SIZES), default="mid")
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="decoding threads of the --num-workers comparison")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_pretokenize-"))
    try:
        images, model_dir = make_inputs(root, args.images, args.size)
        print(
            f"{args.images} images 256x256 (jpg), tokenizer '{args.size}', shard {args.shard_size}, batch "
            f"{args.batch_size}, CPU, 1 thread per process, {os.cpu_count()} cores"
        )
        rows = []
        for round_index in range(args.repeats):
            measured = {}
            for processes in (1, 2):
                out, report = root / f"out-{round_index}-{processes}", root / f"report-{round_index}-{processes}"
                wall, _, ranks = launch(args, images, model_dir, out, report, processes)
                assert sum(rank["rows"] for rank in ranks) == args.images
                shard_seconds = max(rank["shard_seconds"] for rank in ranks)
                setup = max(rank["seconds"] - rank["shard_seconds"] for rank in ranks)
                measured[processes] = (wall, setup, shard_seconds, ranks)
            for processes, (wall, setup, shard_seconds, ranks) in measured.items():
                rows.append(
                    {
                        "round": round_index,
                        "processes": processes,
                        "wall": wall,
                        "setup": setup,
                        "images_per_s": args.images / shard_seconds,
                        "ratio": measured[1][2] / shard_seconds,
                        "wall_ratio": measured[1][0] / wall,
                        "rss": [rank["peak_rss_mb"] for rank in ranks],
                    }
                )
        print(
            f"{'round':>5} {'procs':>5} {'wall s':>7} {'x 1 proc':>9} {'setup s':>8} {'images/s':>9} {'x 1 proc':>9} "
            f"{'peak RSS MB per process':>24}"
        )
        for row in rows:
            rss = " ".join(f"{value:.0f}" for value in row["rss"])
            print(
                f"{row['round']:>5} {row['processes']:>5} {row['wall']:>7.2f} {row['wall_ratio']:>9.2f} "
                f"{row['setup']:>8.2f} {row['images_per_s']:>9.1f} {row['ratio']:>9.2f} {rss:>24}"
            )
        ratios = [row["ratio"] for row in rows if row["processes"] == 2]
        wall_ratios = [row["wall_ratio"] for row in rows if row["processes"] == 2]
        print(
            f"2 processes / 1 process: images/s (shard loop) median {statistics.median(ratios):.2f}x, whole launch "
            f"median {statistics.median(wall_ratios):.2f}x, over {len(ratios)} rounds"
        )

        print(f"\ndecoding threads, 1 process: --num-workers 0 vs {args.workers} (interleaved)")
        print(f"{'round':>5} {'images/s, 0 threads':>20} {f'images/s, {args.workers} threads':>20} {'ratio':>6}")
        thread_ratios = []
        for round_index in range(args.repeats):
            speeds = []
            for workers in (0, args.workers):
                out, report = (
                    root / f"threads-{round_index}-{workers}",
                    root / f"report-threads-{round_index}-{workers}",
                )
                _, _, ranks = launch(args, images, model_dir, out, report, 1, workers=workers)
                speeds.append(args.images / ranks[0]["shard_seconds"])
            thread_ratios.append(speeds[1] / speeds[0])
            print(f"{round_index:>5} {speeds[0]:>20.1f} {speeds[1]:>20.1f} {thread_ratios[-1]:>6.2f}")
        print(f"median ratio {statistics.median(thread_ratios):.2f}x")

        num_shards = -(-args.images // args.shard_size)
        kill_after = num_shards // 2
        print(
            f"\nresume: 1 process, SIGKILL half-way through shard {kill_after + 1} of {num_shards}, restart; "
            "interleaved with uninterrupted runs (CPU seconds are the launches' own, robust to other load)"
        )
        print(
            f"{'round':>5} {'full wall s':>11} {'killed+restart wall s':>22} {'lost wall s':>11} {'full CPU s':>10} "
            f"{'killed+restart CPU s':>21} {'lost CPU s':>10} {'skipped':>7}"
        )
        lost_cpu, full_cpus = [], []
        for round_index in range(args.repeats):
            out, report = root / f"resume-{round_index}", root / f"report-resume-{round_index}"
            full_wall, full_cpu, _ = launch(args, images, model_dir, root / f"full-{round_index}", report / "full", 1)
            killed_wall, killed_cpu, _ = launch(args, images, model_dir, out, report / "killed", 1, kill_after)
            restart_wall, restart_cpu, restart = launch(args, images, model_dir, out, report / "restart", 1)
            resumed_wall, resumed_cpu = killed_wall + restart_wall, killed_cpu + restart_cpu
            lost_cpu.append(resumed_cpu - full_cpu)
            full_cpus.append(full_cpu)
            print(
                f"{round_index:>5} {full_wall:>11.2f} {resumed_wall:>22.2f} {resumed_wall - full_wall:>11.2f} "
                f"{full_cpu:>10.2f} {resumed_cpu:>21.2f} {lost_cpu[-1]:>10.2f} {restart[0]['shards_skipped']:>7}"
            )
        median_lost = statistics.median(lost_cpu)
        print(
            f"a resume costs a median {median_lost:.2f} CPU s ({median_lost / statistics.median(full_cpus):.0%} of a run): "
            "the half shard in flight plus one more start (interpreter, imports, model, dataset, shard checks)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
