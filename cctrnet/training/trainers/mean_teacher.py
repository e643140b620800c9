"""UAMT: a student (branch A) and its exponential-moving-average teacher; uncertainty-masked consistency.

Per step: Dice + CE on labeled slices; on unlabeled slices, the squared difference between the student's
and the teacher's softmax, kept only where the teacher is certain. Certainty: the entropy of the mean of
``uamt_passes`` teacher predictions under input noise, below a threshold that rises from 0.75 ln C to
ln C over the run. The consistency weight follows the same Gaussian warm-up as CPS (``w_cps_max``).
With ``rsl=true`` the registration supervision loss is added, as in the paper's "UAMT + RSL" rows.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from cctrnet.training.losses.dice_ce import dice_ce_loss
from cctrnet.training.losses.masked_consistency import masked_consistency_loss, teacher_input_noise
from cctrnet.training.losses.registration_supervision import registration_supervision_loss
from cctrnet.training.trainers.cross_teaching import CCTRTrainer


class UAMTTrainer(CCTRTrainer):
    name = "UAMTTrainer"
    description = "uncertainty-aware mean teacher on branch A (UAMT)"
    config_defaults = {"two_branches": False, "cps": False, "rsl": False, "scl": False, "reps": False}

    def __init__(self, setup, config, device, output_folder):
        super().__init__(setup, config, device, output_folder)
        if config.scl:
            raise ValueError("UAMTTrainer has one branch and no contrastive loss; leave scl=false")
        self.teacher = copy.deepcopy(self.branches["branch_a"]).to(self.device)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    @property
    def needs_unlabeled(self) -> bool:
        return True

    def compute_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        n_l = labeled["image"].shape[0]
        student = self.branches["branch_a"](torch.cat([labeled["image"], unlabeled["image"]])).logits.float()
        batch_sum = self.distributed.sum if self.distributed.enabled else None  # statistics of the global batch
        supervised = dice_ce_loss(student[:n_l], labeled["target"], batch_sum=batch_sum)
        x_u = unlabeled["image"]
        with torch.no_grad():
            self.teacher.train()
            teacher_probs = torch.softmax(self.teacher(x_u + self._noise(x_u)).logits.float(), dim=1)
            repeated = x_u.repeat(c.uamt_passes, 1, 1, 1)
            passes = torch.softmax(self.teacher(repeated + self._noise(repeated)).logits.float(), dim=1)
            mean = passes.reshape(c.uamt_passes, *teacher_probs.shape).mean(0)
            uncertainty = -(mean * torch.log(mean + 1e-6)).sum(dim=1)
        progress = self.schedule.ramp_progress(self.iteration)
        threshold = (0.75 + 0.25 * math.exp(-5 * (1 - progress) ** 2)) * math.log(self.setup.num_classes)
        mask = (uncertainty < threshold).float().unsqueeze(1)
        consistency = masked_consistency_loss(torch.softmax(student[n_l:], dim=1), teacher_probs, mask, batch_sum)
        weight = self.schedule.ramp_weight(self.iteration, c.w_cps_max, c.w_cps_sharpness)
        total = supervised + weight * consistency
        scalars = {"loss_sup_A": float(supervised.detach()), "loss_consistency_A": float(consistency.detach()),
                   "w_consistency": weight, "certain_fraction": float(mask.mean())}
        if c.rsl:
            rsl = self.registered_label_weight() * registration_supervision_loss(student[n_l:], unlabeled["target"],
                                                                                 batch_sum=batch_sum)
            total = total + rsl
            scalars["loss_rsl_A"] = float(rsl.detach())
        if "hidden_truth" in unlabeled and self.measures_pseudo_labels():
            scalars.update(self.pseudo_label_scalars({"branch_a": _Logits(student)}, unlabeled, n_l))
        return total, scalars

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        return teacher_input_noise(x, self.config.uamt_noise_std)

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Any]) -> None:
        decay = min(1 - 1 / (self.iteration + 1), self.config.uamt_ema_decay)
        for teacher, student in zip(self.teacher.parameters(), self.branches["branch_a"].parameters()):
            teacher.mul_(decay).add_(student.detach(), alpha=1 - decay)
        for teacher, student in zip(self.teacher.buffers(), self.branches["branch_a"].buffers()):
            teacher.copy_(student)

    def replica_tensors(self) -> dict[str, torch.Tensor]:
        return {**super().replica_tensors(), **{f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}}

    def extra_state_dict(self) -> dict[str, Any]:
        return {**super().extra_state_dict(), "teacher": self.teacher.state_dict()}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        super().load_extra_state_dict(state)
        self.teacher.load_state_dict(state["teacher"])


class _Logits:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits
