"""Run an nnU-Net v2 console command with torch's CPU threads held at $OMP_NUM_THREADS.

nnU-Net's training and prediction entry points call ``torch.set_num_threads(cpu_count())`` on CPU, which
ignores OMP_NUM_THREADS. With two benchmark jobs side by side on 2 cores that oversubscribes the machine
(measured: 1.2 s per 80x80 tile in prediction, about 10x a quiet single thread) and makes nnU-Net's rows
slow for a reason that has nothing to do with nnU-Net. This runs in nnU-Net's own environment:

    <venv>/bin/python nnunet_entry.py nnUNetv2_train 901 2d all ...

Accuracy is unaffected: only the thread count of torch's CPU kernels changes.
"""
from __future__ import annotations

import importlib
import os
import sys

ENTRY_POINTS = {  # console command -> module:function, as in nnunetv2's entry_points.txt
    "nnUNetv2_plan_and_preprocess": "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:plan_and_preprocess_entry",
    "nnUNetv2_preprocess": "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:preprocess_entry",
    "nnUNetv2_train": "nnunetv2.run.run_training:run_training_entry",
    "nnUNetv2_predict": "nnunetv2.inference.predict_from_raw_data:predict_entry_point",
}


def hold_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads and make later set_num_threads calls keep that number."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_threads = lambda _requested: None


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ENTRY_POINTS:
        print(f"usage: nnunet_entry.py {{{','.join(ENTRY_POINTS)}}} [arguments]", file=sys.stderr)
        return 2
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        hold_torch_threads(threads)
    module, function = ENTRY_POINTS[argv[0]].split(":")
    sys.argv = argv
    result = getattr(importlib.import_module(module), function)()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
