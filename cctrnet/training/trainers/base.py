"""The training loop shared by every trainer: set-up, optimisation, checkpoints, logs and resume.

A trainer class differs from another only in its default settings and, where the method needs it, in
``compute_losses`` (the loss terms of one step); everything else lives here once.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cctrnet.networks.branch import SegmentationBranch
from cctrnet.utilities.device import training_autocast_dtype, uses_channels_last
from cctrnet.training.checkpoint import global_random_state, load_checkpoint, restore_global_random_state, save_checkpoint
from cctrnet.training.config import TrainerConfig
from cctrnet.training import distributed
from cctrnet.training.progress_log import ProgressLog
from cctrnet.training.run_setup import RunSetup
from cctrnet.training.schedules import ScheduleSpan, decay_factor
from cctrnet.utilities.file_io import save_json
from cctrnet.utilities.progress_bars import quiet_bar_options
from cctrnet.utilities.stop_signals import deferred_stop_signals, signal_name

class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training; checkpoint_latest.pth was saved and the workers stopped before."""

    def __init__(self, signum: int, iteration: int):
        self.signum = signum
        self.signal_name = signal_name(signum)
        self.iteration = iteration
        super().__init__(f"stopped by {self.signal_name} at iteration {iteration}")


class BaseTrainer:
    """Loop, optimisers, checkpoints and logging; subclasses define the losses of a step."""

    name = "BaseTrainer"
    description = ""
    config_defaults: dict[str, Any] = {}

    def __init__(self, setup: RunSetup, config: TrainerConfig, device: torch.device, output_folder: Path):
        self.setup = setup
        self.config = config
        self.distributed = distributed.current()  # one process, or this rank of a data-parallel run
        self.device = self.distributed.device_for(torch.device(device))
        if self.distributed.enabled:  # a batch that does not divide among the ranks is refused before anything runs
            self.distributed.local_batch(setup.configuration["labeled_per_batch"],
                                         setup.configuration["unlabeled_per_batch"])
        self.output_folder = Path(output_folder)
        self.output_folder.mkdir(parents=True, exist_ok=True)
        self.num_iterations = int(config.num_iterations or setup.configuration["num_iterations"])
        self.iteration = 0
        self.schedule = ScheduleSpan.for_new_run(self.num_iterations)
        self.extensions: list[dict[str, Any]] = []  # one entry per --extend-to, recorded in config.json
        self.use_amp = bool(config.mixed_precision and self.device.type == "cuda")
        self.amp_dtype = training_autocast_dtype(self.device, config.mixed_precision_dtype) if self.use_amp else None
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        self.architectures = self.branch_architectures()
        self.branches = nn.ModuleDict({
            name: SegmentationBranch(arch, setup.num_input_channels, setup.num_classes)
            for name, arch in self.architectures.items()}).to(self.device)
        self.channels_last = uses_channels_last(self.device, config.memory_format)
        if self.channels_last:
            self.branches.to(memory_format=torch.channels_last)
        if config.compile:
            for branch in self.branches.values():
                branch.network.compile(backend=config.compile_backend)
        self.extra_modules = nn.ModuleDict(self.build_extra_modules()).to(self.device)
        self.optimizers = {name: torch.optim.AdamW(self.parameters_of(name), lr=self.initial_lr(name),
                                                   weight_decay=config.weight_decay)
                           for name in self.branches}
        # float16 needs loss scaling against underflow; bfloat16 has float32's exponent range and needs none
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.log = ProgressLog(self.output_folder, writes=self.distributed.is_main)
        self.loader = None  # built lazily in run(): workers start only when training starts
        self.validation_curve = None  # built in run(): training/validation_curve.py
        self.hidden_label_curve = None  # the same, on unlabeled cases with hidden labels (benchmarks)
        self.data_wait_seconds = 0.0
        self.step_seconds = 0.0

    # --- what subclasses choose ----------------------------------------------------------------
    def branch_architectures(self) -> dict[str, dict[str, Any]]:
        """Architecture entries of the branches, by name (``branch_a`` and, for co-training, ``branch_b``)."""
        configuration = self.setup.configuration
        if not self.config.two_branches:
            return {"branch_a": configuration["branch_a"]}
        if self.config.branch_b == "same_as_a":
            branch_b = configuration["branch_a"]
        elif self.config.branch_b == "plan":
            branch_b = configuration["branch_b"]
        else:
            from cctrnet.planning.planner import branch_b_of_family

            branch_b = branch_b_of_family(self.setup.plans, self.config.branch_b)
        return {"branch_a": configuration["branch_a"], "branch_b": branch_b}

    def build_extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules beside the branches (projectors, ...), named ``<branch>_<what>``."""
        return {}

    def parameters_of(self, branch_name: str) -> list[nn.Parameter]:
        params = list(self.branches[branch_name].parameters())
        for name, module in self.extra_modules.items():
            if name.startswith(branch_name + "_"):
                params += list(module.parameters())
        return params

    def initial_lr(self, branch_name: str) -> float:
        transformer = self.architectures[branch_name]["network_class"] == "Primus2D"
        return self.config.learning_rate_transformer if transformer else self.config.learning_rate_cnn

    def compute_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss to minimise, scalars to log) for one batch."""
        raise NotImplementedError

    def build_loader(self):
        from cctrnet.training.data_access import build_training_loader

        return build_training_loader(self)

    def on_step_end(self, batch: dict[str, Any]) -> None:
        """Hook after the optimiser step (memory bank insertion, teacher updates, ...)."""

    # --- the loop --------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> Path:
        """Train from the current iteration to the end; returns the final checkpoint's path."""
        self.distributed.barrier()  # every rank has checked the folder before rank 0 writes to it
        self.distributed.broadcast_modules([self.branches, self.extra_modules])
        self.write_run_files()
        self.log.write_line(f"{self.name}: iterations {self.iteration}..{self.num_iterations} on {self.device}, "
                            f"{len(self.setup.labeled_cases)} labeled and {len(self.setup.unlabeled_cases)} unlabeled cases")
        self.start_validation_curve()
        last_save = time.monotonic()
        with deferred_stop_signals() as stop:
            # built inside the block: its worker processes inherit the handler and leave stopping to us
            if self.loader is None:
                self.loader = self.build_loader()
            bar = tqdm(total=self.num_iterations, initial=self.iteration, unit="it", desc=self.name,
                       dynamic_ncols=True, **quiet_bar_options(progress and self.distributed.is_main))
            try:
                while self.iteration < self.num_iterations and not self.distributed.agree_to_stop(stop):
                    scalars = self.train_one_iteration()
                    bar.update(1)
                    if self.logs_iteration(self.iteration):
                        bar.set_postfix(loss=f"{scalars['loss_total']:.3f}", wait=f"{self.data_wait_share():.0%}")
                        self.log.write_line(f"it {self.iteration}: " +
                                            ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
                    for curve in (self.validation_curve, self.hidden_label_curve):
                        if curve is not None and curve.due(self.iteration, self.num_iterations):
                            self.measure_validation_curve(curve)
                    if time.monotonic() - last_save > self.config.checkpoint_every_seconds:
                        self.save(self.output_folder / "checkpoint_latest.pth")
                        self.log.plot()
                        last_save = time.monotonic()
                if stop:
                    self.check_replicas()
                    self.save(self.output_folder / "checkpoint_latest.pth")
                    self.log.write_line(f"stopped by {signal_name(stop.signum)} at iteration {self.iteration}; "
                                        "checkpoint_latest.pth saved")
            finally:
                bar.close()
                self.loader.close()
                self.loader = None
        if stop:
            raise TrainingInterrupted(stop.signum, self.iteration)
        final = self.output_folder / "checkpoint_final.pth"
        self.check_replicas()
        self.save(final)
        self.save(self.output_folder / "checkpoint_latest.pth")
        self.log.plot()
        self.log.write_line(f"finished: {self.num_iterations} iterations; data wait {self.data_wait_share():.1%} "
                            f"of the time")
        return final

    def start_validation_curve(self) -> None:
        """Load the slices the validation curve measures, and say in the log what it is (or why there is none)."""
        from cctrnet.training.validation_curve import build_hidden_label_curve, build_validation_curve

        if not self.distributed.is_main:  # the replicas are equal: rank 0 alone measures and writes the curve
            self.validation_curve = self.hidden_label_curve = None
            return
        self.validation_curve, message = build_validation_curve(self)
        print(f"[cctrnet] {message}")
        self.log.write_line(message)
        self.hidden_label_curve, message = build_hidden_label_curve(self)
        if message:
            self.log.write_line(message)

    def measure_validation_curve(self, curve) -> None:
        started = time.perf_counter()
        dice = curve.measure(self.branches["branch_a"], self.setup.configuration["patch_size_yx"],
                             self.setup.num_classes, self.device)
        if dice == dice:  # NaN: no foreground in prediction or reference
            self.log.record(self.iteration, {curve.key: dice})
        self.log.write_line(f"it {self.iteration}: {curve.key} {dice:.4g} on {curve.what} "
                            f"({time.perf_counter() - started:.2f} s)")

    def logs_iteration(self, iteration: int) -> bool:
        """Whether iteration ``iteration`` (counted from 1) gets a line in training_log.txt."""
        c = self.config
        return (iteration % c.log_every == 0 or iteration % c.pseudo_label_quality_every == 0
                or iteration == self.num_iterations)

    def measures_pseudo_labels(self) -> bool:
        """Whether the step being computed reports pseudo-label quality (it becomes iteration ``iteration + 1``)."""
        return (self.iteration + 1) % self.config.pseudo_label_quality_every == 0

    def registered_label_weight(self) -> float:
        """w_rs at this iteration: constant, or decayed over the warm-up span by ``rsl_decay`` (held at its end
        value after an extension, as the ramps are)."""
        c = self.config
        return c.w_rs * decay_factor(self.schedule.ramp_progress(self.iteration), c.rsl_decay, c.rsl_decay_end)

    def extend_to(self, num_iterations: int, kept_checkpoint: str) -> None:
        """Make this finished run (just loaded) go on to ``num_iterations``; see :class:`ScheduleSpan`."""
        if self.iteration != self.num_iterations:
            raise ValueError(f"only a finished run can be extended: iteration {self.iteration} of {self.num_iterations}")
        self.schedule = self.schedule.extended_to(num_iterations)
        self.extensions.append({"from_iterations": self.num_iterations, "to_iterations": num_iterations,
                                "kept_checkpoint": kept_checkpoint, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "schedules": "learning rate: poly decay restarted at its initial value over the "
                                             "extension; ramps (w_cps, UAMT threshold) held at their maximum"})
        self.num_iterations = num_iterations
        self.config = self.config.with_overrides({"num_iterations": num_iterations})
        self.log.write_line(f"extended from {self.extensions[-1]['from_iterations']} to {num_iterations} iterations; "
                            f"the finished model is kept as {kept_checkpoint}; learning rate restarts at its initial "
                            f"value and decays to 0 at {num_iterations}, w_cps and other ramps hold their maximum")

    def restore_run_record(self, num_iterations: int, schedule: ScheduleSpan, extensions: list[dict[str, Any]]) -> None:
        """Length, schedules and extensions of a run being resumed, as its config.json recorded them."""
        self.num_iterations = num_iterations
        self.schedule = schedule
        self.extensions = list(extensions)

    def train_one_iteration(self) -> dict[str, float]:
        for name, optimizer in self.optimizers.items():
            lr = self.schedule.learning_rate(self.iteration, self.initial_lr(name), self.config.poly_power)
            for group in optimizer.param_groups:
                group["lr"] = lr
        start = time.perf_counter()
        batch = self.loader.next_batch()
        after_data = time.perf_counter()
        self.data_wait_seconds += after_data - start
        batch = _to_device(batch, self.device, self.channels_last)
        self.branches.train()
        self.extra_modules.train()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.use_amp else nullcontext()
        with autocast:
            total, scalars = self.compute_losses(batch)
        self.grad_scaler.scale(total).backward()
        self.distributed.sum_gradients(self.trained_parameters())
        for optimizer in self.optimizers.values():
            self.grad_scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(self.trained_parameters(), self.config.gradient_clip_norm)
        for optimizer in self.optimizers.values():
            self.grad_scaler.step(optimizer)
        self.grad_scaler.update()
        self.on_step_end(batch)
        self.iteration += 1
        seconds = time.perf_counter() - start
        self.step_seconds += seconds
        scalars = {"loss_total": float(total.detach()), **scalars}
        scalars.update({f"lr_{name}": o.param_groups[0]["lr"] for name, o in self.optimizers.items()})
        scalars["seconds_per_iteration"] = seconds
        self.log.record(self.iteration, scalars)
        return scalars

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.branches, self.extra_modules) for p in m.parameters()]

    def replica_tensors(self) -> dict[str, torch.Tensor]:
        """What must be equal on every rank of a data-parallel run (subclasses add memory banks, teachers)."""
        return {**{f"{n}.{k}": v for n, b in self.branches.items() for k, v in b.state_dict().items()},
                **{f"extra.{k}": v for k, v in self.extra_modules.state_dict().items()}}

    def check_replicas(self) -> None:
        """Data-parallel runs: raise unless every rank holds the same weights and banks; logged once."""
        if self.distributed.enabled:
            tensors = self.replica_tensors()
            self.distributed.check_identical(tensors)
            self.log.write_line(f"replicas identical on {self.distributed.world_size} ranks at iteration "
                                f"{self.iteration}: {len(tensors)} tensors (weights, memory banks)")

    def data_wait_share(self) -> float:
        return self.data_wait_seconds / self.step_seconds if self.step_seconds > 0 else 0.0

    # --- files -----------------------------------------------------------------------------------
    def write_run_files(self) -> None:
        if not self.distributed.is_main:
            return
        save_json({"trainer": self.name, "settings": self.config.to_dict(), "num_iterations": self.num_iterations,
                   "schedule": self.schedule.to_dict(), "extensions": self.extensions, "device": str(self.device),
                   "branches": list(self.branches),
                   "architectures": self.architectures, "dataset_name": self.setup.dataset_name,
                   "world_size": self.distributed.world_size},
                  self.output_folder / "config.json")
        save_json(self.setup.plans, self.output_folder / "plans.json")
        save_json(self.setup.dataset_json, self.output_folder / "dataset.json")
        save_json({"labeled": self.setup.labeled_cases, "unlabeled": self.setup.unlabeled_cases,
                   "hidden_labels": self.setup.hidden_label_cases,
                   "rule": "cctrnet.dataset.labeled_selection.select_labeled_cases", "seed": self.config.seed},
                  self.output_folder / "labeled_cases.json")
        save_json(self.setup.validation.to_dict(), self.output_folder / "validation_cases.json")

    def state_dict(self) -> dict[str, Any]:
        return {
            "trainer": self.name,
            "iteration": self.iteration,
            "network_weights": {name: b.state_dict() for name, b in self.branches.items()},
            "extra_modules": self.extra_modules.state_dict(),
            "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
            "grad_scaler": self.grad_scaler.state_dict(),
            "random_state": global_random_state(),
            "log": self.log.state_dict(),
            "timing": {"data_wait_seconds": self.data_wait_seconds, "step_seconds": self.step_seconds},
            "labeled_cases": list(self.setup.labeled_cases),
            "extra_state": self.extra_state_dict(),
            "world_size": self.distributed.world_size,
        }

    def extra_state_dict(self) -> dict[str, Any]:
        """State of subclasses' own objects (generators, memory banks, ...)."""
        return {}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def save(self, path: Path) -> None:
        """Write a checkpoint (rank 0 only); ``checkpoint_latest.pth`` keeps the one it replaces as its previous
        checkpoint."""
        if self.distributed.is_main:
            save_checkpoint(self.state_dict(), path, keep_previous=Path(path).name == "checkpoint_latest.pth")

    def load(self, path: Path) -> None:
        state = load_checkpoint(path, self.device)
        if state["trainer"] != self.name:
            raise ValueError(f"{path} was written by {state['trainer']}, not {self.name}")
        if list(state["labeled_cases"]) != list(self.setup.labeled_cases):
            raise ValueError(f"{path} was trained with labeled cases {state['labeled_cases']}, "
                             f"this run has {self.setup.labeled_cases}")
        self.iteration = int(state["iteration"])
        for name, branch in self.branches.items():
            branch.load_state_dict(state["network_weights"][name])
        self.extra_modules.load_state_dict(state["extra_modules"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.log.load_state_dict(state["log"])
        self.data_wait_seconds = state["timing"]["data_wait_seconds"]
        self.step_seconds = state["timing"]["step_seconds"]
        self.load_extra_state_dict(state["extra_state"])
        restore_global_random_state(state["random_state"])
        written_by = int(state.get("world_size", 1))
        if written_by != self.distributed.world_size:
            self.log.write_line(f"resumed with {self.distributed.world_size} process(es) from a checkpoint written by "
                                f"{written_by}: weights, optimisers, memory banks and schedules continue; the batches "
                                "from here on are those of the new number of processes (the same ones with "
                                "ddp_sampling=shared)")


def _to_device(value: Any, device: torch.device, channels_last: bool = False, key: str = "") -> Any:
    """The batch on ``device``; its images (key ``image``) channels-last when asked, nothing else."""
    if isinstance(value, torch.Tensor):
        if channels_last and key == "image" and value.dim() == 4:
            return value.to(device, non_blocking=True, memory_format=torch.channels_last)
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device, channels_last, k) for k, v in value.items()}
    return value

