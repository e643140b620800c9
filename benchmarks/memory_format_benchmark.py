"""Training step of each planned network with contiguous against channels-last tensors (issue 14).

One forward pass, cross-entropy, backward pass and AdamW step of a planned branch on a random batch of the
plan's patch and batch size, in interleaved blocks (contiguous, channels-last, contiguous, ...) so that load
from other processes hits both alike; the median block time per variant and their ratio. This is what the
trainer's ``memory_format`` setting changes; the losses of the real trainers are left out (they run on the
networks' outputs in either layout).

    python benchmarks/memory_format_benchmark.py --plans PREPROCESSED/Dataset003_X/plans.json --device cpu
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "memory_format_benchmark.json"


def time_branch(architecture: dict, patch_yx: list[int], batch_size: int, num_classes: int, device, rounds: int,
                steps_per_block: int) -> dict[str, float]:
    import torch

    from cctrnet.networks.branch import SegmentationBranch

    def make(channels_last: bool):
        torch.manual_seed(0)
        network = SegmentationBranch(architecture, 1, num_classes).to(device)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        return network, torch.optim.AdamW(network.parameters(), 1e-4)

    images = torch.randn(batch_size, 1, *patch_yx, device=device)
    target = torch.randint(0, num_classes, (batch_size, *patch_yx), device=device)

    def step(network, optimizer, channels_last: bool) -> None:
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        loss = torch.nn.functional.cross_entropy(network(x).logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    variants = {False: make(False), True: make(True)}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for channels_last, (network, optimizer) in variants.items():  # warm-up: allocator, kernels
        step(network, optimizer, channels_last)
    for _ in range(rounds):
        for channels_last, (network, optimizer) in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for _ in range(steps_per_block):
                step(network, optimizer, channels_last)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[channels_last].append((time.perf_counter() - started) / steps_per_block)
    contiguous, channels_last = (statistics.median(seconds[v]) for v in (False, True))
    return {"contiguous_s": round(contiguous, 4), "channels_last_s": round(channels_last, 4),
            "ratio_channels_last_to_contiguous": round(channels_last / contiguous, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=Path, required=True, help="a preprocessed dataset's plans.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved blocks per variant")
    parser.add_argument("--steps", type=int, default=5, help="steps per block")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from benchmarks.machine_info import machine_info
    from cctrnet.utilities.device import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    plans = json.loads(args.plans.read_text())
    configuration = plans["configurations"]["2d"]
    rows = {}
    for branch in ("branch_a", "branch_b"):
        architecture = configuration[branch]
        rows[branch] = {"network_class": architecture["network_class"],
                        **time_branch(architecture, configuration["patch_size_yx"], configuration["batch_size"],
                                      plans["num_classes"], device, args.rounds, args.steps)}
    print(f"{'branch':<10} {'network':<26} {'contiguous s':>12} {'channels-last s':>15} {'ratio':>6}")
    for branch, row in rows.items():
        print(f"{branch:<10} {row['network_class']:<26} {row['contiguous_s']:>12.3f} {row['channels_last_s']:>15.3f} "
              f"{row['ratio_channels_last_to_contiguous']:>6.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "device": str(device), "threads": args.threads,
        "plans": str(args.plans), "patch_size_yx": configuration["patch_size_yx"],
        "batch_size": configuration["batch_size"], "rows": rows, "machine": machine_info(),
        "command": " ".join(["python", *sys.argv])}, indent=2))
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
