"""Cost of one training step of a planned network, counted on PyTorch's meta device (no real compute).

- Compute: forward FLOPs from ``torch.utils.flop_counter``; a training step (forward, backward,
  optimiser) is taken as 3x the forward. Seconds on a CPU follow from an effective throughput,
  calibrated against the step times in shared/MEASUREMENTS.md: 2-core reference machine, torch 2.14,
  57-79 GFLOP/s for the U-Nets and 86-96 for Primus; the planner uses the conservative end.
- Memory: parameters with gradients and AdamW's two moments (4 copies, fp32) plus every module's
  output kept for the backward pass (fp32, an upper bound under mixed precision).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
import json
from typing import Any

from cctrnet.networks.build import build_network

TRAINING_STEP_FLOPS_PER_FORWARD = 3.0
BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class StepCost:
    forward_gflops_per_image: float
    activation_values_per_image: int
    parameters: int

    def step_gflops(self, batch_size: int) -> float:
        return TRAINING_STEP_FLOPS_PER_FORWARD * self.forward_gflops_per_image * batch_size

    def memory_gb(self, batch_size: int) -> float:
        values = 4 * self.parameters + self.activation_values_per_image * batch_size
        return values * BYTES_PER_VALUE / 1024**3


def network_cost(architecture: dict[str, Any], input_channels: int, num_classes: int,
                 patch_size_yx: tuple[int, int]) -> StepCost:
    """FLOPs, activation size and parameter count of one image through the network."""
    return _cached_cost(json.dumps(architecture, sort_keys=True), input_channels, num_classes, tuple(patch_size_yx))


@lru_cache(maxsize=256)
def _cached_cost(architecture_json: str, input_channels: int, num_classes: int,
                 patch_size_yx: tuple[int, int]) -> StepCost:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        network = build_network(json.loads(architecture_json), input_channels, num_classes)
        x = torch.empty((1, input_channels, *patch_size_yx))
    activation_values = 0

    def count_output(_module, _inputs, output):
        nonlocal activation_values
        if isinstance(output, torch.Tensor):
            activation_values += output.numel()

    leaves = [m for m in network.modules() if len(list(m.children())) == 0]
    handles = [m.register_forward_hook(count_output) for m in leaves]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            network(x)
    finally:
        for handle in handles:
            handle.remove()
    parameters = sum(p.numel() for p in network.parameters())
    return StepCost(counter.get_total_flops() / 1e9, activation_values, parameters)
