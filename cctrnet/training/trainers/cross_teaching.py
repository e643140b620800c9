"""Cross-teaching trainers: CCT-R (the full method) and the baselines that are settings of it.

One step, per branch (METHOD.md §2): ``L = L_sup + w_cps(i) L_cps + w_c L_c + w_rs L_rs`` where
- ``L_sup``: Dice + CE on labeled slices;
- ``L_cps``: Dice against the other branch's argmax on unlabeled slices (Gaussian warm-up weight);
- ``L_rs``: Dice + CE against the registered label of each unlabeled slice (ignore value outside the warp);
- ``L_c``: pixel-wise supervised contrastive loss on projected decoder features; labels are the ground
  truth on labeled slices and the other branch's argmax on unlabeled ones; confidence is the branch's own
  top-1 probability; with REPS, positives also come from registration-matched pixels in the memory bank.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from cctrnet.training.config import TrainerConfig
from cctrnet.training.losses.cross_pseudo_supervision import cross_pseudo_supervision_loss
from cctrnet.training.losses.dice_ce import IGNORE_INDEX, dice_ce_loss
from cctrnet.training.losses.registration_positives import (RegisteredPositiveSettings, anchor_voxel_points,
                                                            combine_positive_keys, registered_positive_keys)
from cctrnet.training.losses.registration_supervision import registration_supervision_loss
from cctrnet.training.losses.supervised_contrastive import (ContrastiveSettings, class_positive_keys,
                                                            sample_contrastive_pixels, supervised_contrastive_loss)
from cctrnet.training.memory_bank import FeatureMemoryBank, MemoryBankSettings
from cctrnet.training.projector import ProjectionHead, ProjectorSettings
from cctrnet.training.pseudo_label_quality import pseudo_label_dice
from cctrnet.training.registered_label_fade import RegisteredLabelFade, held_out_cases
from cctrnet.training.trainers.base import BaseTrainer

SHORT = {"branch_a": "A", "branch_b": "B"}


class CCTRTrainer(BaseTrainer):
    name = "CCTRTrainer"
    description = "CCT-R: cross teaching + registration supervision (RSL, BRS) + contrastive learning with REPS"

    def __init__(self, setup, config: TrainerConfig, device, output_folder):
        if config.reps and not config.scl:
            raise ValueError("reps=true needs scl=true (REPS supplies positives of the contrastive loss)")
        super().__init__(setup, config, device, output_folder)
        if self.needs_unlabeled and not setup.unlabeled_cases:
            raise ValueError(f"{self.name} learns from unlabeled cases, but every training case of "
                             f"{setup.dataset_name} is labeled for this run; pass --labeled N, or use "
                             "LabeledOnlyTrainer for a fully supervised model")
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed)
        self.contrastive_settings = ContrastiveSettings(
            probability_threshold=config.anchor_threshold, anchors_per_class=config.n_anchors,
            negatives_per_class=config.n_negatives, temperature=config.tau)
        self.reps_settings = RegisteredPositiveSettings(config.reps_w1, config.reps_w2, config.reps_max_target_volumes)
        # rank 0 first: it computes the pairs still missing, the other ranks then read them
        self.registration = self.distributed.main_first(self.load_registration) if self.needs_registration else None
        self.rsl_fade = (RegisteredLabelFade(setup.num_classes, config.rsl_fade_momentum)
                         if config.rsl and config.rsl_fade else None)
        #: unlabeled cases whose registered labels only measure the fade (never taught by L_rs)
        self.rsl_fade_held_out = (held_out_cases(setup.unlabeled_cases, config.rsl_fade_holdout_fraction, config.seed)
                                  if self.rsl_fade is not None else [])
        self._held_out_volume = torch.zeros(len(setup.all_cases), dtype=torch.bool, device=self.device)
        self._held_out_volume[[setup.volume_index(case) for case in self.rsl_fade_held_out]] = True
        if self.rsl_fade_held_out:
            self.log.write_line(f"rsl_fade: the registered labels of {len(self.rsl_fade_held_out)} unlabeled case(s) "
                                f"only measure the fade, outside L_rs: {', '.join(self.rsl_fade_held_out)}")
        self.banks: dict[str, FeatureMemoryBank] = {}
        if config.reps:
            bank_settings = MemoryBankSettings(bank_fraction=config.bank_fraction,
                                               downsample_factor=config.bank_downsample)
            self.banks = {name: FeatureMemoryBank(setup.volume_shapes_zyx, config.projector_out, bank_settings,
                                                  device=self.device) for name in self.branches}
        self._decoder_features: dict[str, torch.Tensor] = {}

    @property
    def needs_registration(self) -> bool:
        return self.config.rsl or self.config.reps

    @property
    def needs_unlabeled(self) -> bool:
        c = self.config
        return (c.two_branches and c.cps) or c.rsl or c.scl

    def load_registration(self):
        from cctrnet.training.registration_access import load_run_registration

        return load_run_registration(self)

    def build_extra_modules(self) -> dict[str, nn.Module]:
        if not self.config.scl:
            return {}
        settings = ProjectorSettings(self.config.projector_hidden, self.config.projector_out)
        return {f"{name}_projector": ProjectionHead(branch.feature_channels, settings)
                for name, branch in self.branches.items()}

    # --- one step ---------------------------------------------------------------------------------
    def compute_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        n_l = labeled["image"].shape[0]
        x = torch.cat([labeled["image"], unlabeled["image"]]) if self.needs_unlabeled else labeled["image"]
        outputs = {name: branch(x, with_features=c.scl) for name, branch in self.branches.items()}
        names = list(self.branches)
        w_cps = self.schedule.ramp_weight(self.iteration, c.w_cps_max, c.w_cps_sharpness)
        total = x.new_zeros(())
        scalars: dict[str, float] = {}
        batch_sum = self.distributed.sum if self.distributed.enabled else None  # statistics of the global batch
        w_rs = self.registered_label_weight()
        rsl_target = unlabeled["target"] if c.rsl else None
        if self.rsl_fade is not None:
            predictions = [outputs[n].logits[n_l:].argmax(1) for n in names]
            if self.rsl_fade_held_out:
                held = self._held_out_volume[unlabeled["volume_index"].to(self.device)]
                fade = (self.rsl_fade.update([p[held] for p in predictions], rsl_target[held]) if held.any()
                        else self.rsl_fade.factor)
                rsl_target = rsl_target.masked_fill(held[:, None, None], IGNORE_INDEX)
            else:
                fade = self.rsl_fade.update(predictions, rsl_target)
            if self.distributed.enabled:  # each rank measures its own slices; all use the mean factor
                fade = float(self.distributed.sum(torch.tensor(fade, device=x.device))) / self.distributed.world_size
            w_rs, scalars["rsl_fade"] = w_rs * fade, fade
        if c.rsl and c.rsl_decay != "none":
            scalars["w_rs"] = w_rs
        for name in names:
            other = next((n for n in names if n != name), None)
            logits = outputs[name].logits.float()
            terms = {"sup": dice_ce_loss(logits[:n_l], labeled["target"], batch_sum=batch_sum)}
            if other is not None and c.cps:
                terms["cps"] = w_cps * cross_pseudo_supervision_loss(logits[n_l:], outputs[other].logits[n_l:].float(),
                                                                     batch_sum=batch_sum)
            if c.rsl:
                terms["rsl"] = w_rs * registration_supervision_loss(logits[n_l:], rsl_target,
                                                                    batch_sum=batch_sum)
            if c.scl:
                terms["scl"] = c.w_c * self.contrastive_loss(name, other, outputs, batch, n_l)
            for term, value in terms.items():
                scalars[f"loss_{term}_{SHORT[name]}"] = float(value.detach())
            total = total + sum(terms.values())
        if c.two_branches and c.cps:
            scalars["w_cps"] = w_cps
        if unlabeled is not None and "hidden_truth" in unlabeled and self.measures_pseudo_labels():
            scalars.update(self.pseudo_label_scalars(outputs, unlabeled, n_l))
        return total, scalars

    def contrastive_loss(self, name: str, other: str | None, outputs, batch, n_l: int) -> torch.Tensor:
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        projector = self.extra_modules[f"{name}_projector"]
        features = outputs[name].features.float()
        with torch.no_grad():
            own = outputs[name].logits.float()
            confidence = torch.softmax(own, dim=1).max(dim=1).values
            teacher = outputs[other].logits[n_l:] if other is not None else own[n_l:]
            labels = torch.cat([labeled["target"], teacher.argmax(dim=1)])
            if self.distributed.enabled:  # every rank chooses the same pixels of the global batch (same generator)
                gathered = self.distributed.gather_batch(torch.stack([labels.to(confidence.dtype), confidence], 1), n_l)
                labels, confidence = gathered[:, 0].long(), gathered[:, 1]
        pixels = sample_contrastive_pixels(labels, confidence, self.contrastive_settings, self.generator)
        # the projector acts on each pixel alone: projecting only the sampled pixels gives the same vectors;
        # each rank projects those of its own rows (with their graph) and receives the others'
        projected = self.distributed.gather_pixels(features, torch.cat([pixels.anchor_flat, pixels.negative_flat]),
                                                   n_l, projector)
        anchors, negatives = projected[:pixels.n_anchors], projected[pixels.n_anchors:]
        override = found = None
        if self.config.reps and pixels.n_anchors > 0:
            coords = self.distributed.gather_batch(torch.cat([labeled["coords_zyx"], unlabeled["coords_zyx"]]), n_l)
            volumes = self.distributed.gather_batch(torch.cat([labeled["volume_index"], unlabeled["volume_index"]]), n_l)
            anchor_volumes, anchor_points = anchor_voxel_points(pixels.anchor_positions_byx, coords, volumes)
            registered, found = registered_positive_keys(anchor_volumes, anchor_points, self.banks[name],
                                                         map_points=None, settings=self.reps_settings,
                                                         generator=self.generator,
                                                         map_points_to_many=self.map_points_to_many)
            class_keys = class_positive_keys(anchors, pixels, self.contrastive_settings.detach_positive_keys)
            override = combine_positive_keys(class_keys, registered, found, self.reps_settings)
        if self.banks:
            self._decoder_features[name] = features.detach()
        return supervised_contrastive_loss(anchors, negatives, pixels, self.contrastive_settings, override, found)

    def map_points_to_many(self, source_volume: int, target_volumes: Sequence[int], points_zyx: torch.Tensor
                           ) -> torch.Tensor:
        """The points of one training volume mapped into each of ``target_volumes`` in one call, (T, N, 3) (the
        affine maps as one batched product); NaN rows where no registration exists."""
        cases = self.setup.all_cases
        mapped, _ = self.registration.point_mapper.map_points_to_many(
            cases[source_volume], [cases[t] for t in target_volumes], points_zyx)
        return mapped

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Any]) -> None:
        """Put this step's slices into the memory banks, projected on the bank's reduced grid only.

        Data-parallel: the slices of every rank, in the global batch order, so every rank's bank is the same.
        """
        if not self.banks:
            return
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        n_l = labeled["image"].shape[0]
        f = self.config.bank_downsample
        gather = self.distributed.gather_batch
        coords = gather(torch.cat([labeled["coords_zyx"], unlabeled["coords_zyx"]])[:, :, ::f, ::f].contiguous(), n_l)
        volumes = gather(torch.cat([labeled["volume_index"], unlabeled["volume_index"]]), n_l)
        for name, features in self._decoder_features.items():
            projected = self.extra_modules[f"{name}_projector"](features[:, :, ::f, ::f])
            self.banks[name].insert_batch(volumes, gather(projected.contiguous(), n_l), coords)
        self._decoder_features.clear()

    def pseudo_label_scalars(self, outputs, unlabeled, n_l: int) -> dict[str, float]:
        truth = unlabeled["hidden_truth"]
        num_classes = self.setup.num_classes
        scalars = {f"dice_pseudo_{SHORT[name]}": pseudo_label_dice(out.logits[n_l:].argmax(1), truth, num_classes)
                   for name, out in outputs.items() if out.logits.shape[0] > n_l}
        if self.config.rsl:
            scalars["dice_registered"] = pseudo_label_dice(unlabeled["target"], truth, num_classes)
        return {k: v for k, v in scalars.items() if v == v}  # NaN: no foreground in these slices

    # --- resume -----------------------------------------------------------------------------------
    def replica_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {**super().replica_tensors(), "contrastive_generator": self.generator.get_state()}
        for name, bank in self.banks.items():
            state = bank.state_dict()
            tensors.update({f"bank_{name}.keys": torch.tensor(state["keys"], dtype=torch.long).reshape(-1),
                            f"bank_{name}.features": state["features"], f"bank_{name}.cell_filled": state["cell_filled"]})
        return tensors

    def extra_state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.get_state(),
                 "banks": {name: bank.state_dict() for name, bank in self.banks.items()}}
        if self.rsl_fade is not None:
            state["rsl_fade"] = self.rsl_fade.state_dict()
        return state


    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu() if self.device.type == "cpu" else state["generator"])
        for name, bank in self.banks.items():
            bank.load_state_dict(state["banks"][name])
        if self.rsl_fade is not None and "rsl_fade" in state:
            self.rsl_fade.load_state_dict(state["rsl_fade"])


class CTSTrainer(CCTRTrainer):
    name = "CTSTrainer"
    description = "cross teaching between a CNN and a network of another family (CTS), no registration or contrast"
    config_defaults = {"rsl": False, "scl": False, "reps": False}


class CPSTrainer(CCTRTrainer):
    name = "CPSTrainer"
    description = "cross pseudo supervision between two CNNs of the same architecture (CPS)"
    config_defaults = {"rsl": False, "scl": False, "reps": False, "branch_b": "same_as_a"}


class LabeledOnlyTrainer(CCTRTrainer):
    name = "LabeledOnlyTrainer"
    description = "branch A on the labeled slices only (LS); with all labels, the fully supervised bound (FS)"
    config_defaults = {"two_branches": False, "cps": False, "rsl": False, "scl": False, "reps": False}
