"""Every setting of a training run, with the paper's values as defaults (METHOD.md §2-7).

``cctr_train --set key=value`` overrides any field by name; unknown keys are refused with the list of
known ones. A trainer class sets its own defaults (which modules are on, which network branch B is) and
the user's ``--set`` values come on top.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

BRANCH_B_SETTINGS = ("plan", "same_as_a", "ResidualEncoderUNet", "Primus2D")
DDP_SAMPLING_SETTINGS = ("per_rank", "shared")


@dataclass
class TrainerConfig:
    # run length and optimisation (METHOD.md §2)
    num_iterations: int | None = None  # None: the plan's num_iterations
    learning_rate_cnn: float = 5e-4  # CNN branches
    learning_rate_transformer: float = 1e-4  # a transformer branch (Primus2D)
    weight_decay: float = 5e-4  # AdamW
    poly_power: float = 0.9
    gradient_clip_norm: float = 12.0  # nnU-Net's value; a guard against rare loss spikes
    # loss weights
    w_cps_max: float = 0.1  # w_cps(i) = w_cps_max * exp(-5 * (1 - i / i_total)^2)
    w_cps_sharpness: float = 5.0
    w_c: float = 1e-3  # supervised contrastive loss
    #: registration supervision loss; the paper adds it without a weight (1). 0.3 won on the ACDC-like population's
    #: validation patients at 3 of 3 seeds and kept the phantom's hidden-label Dice (documentation/benchmarks.md,
    #: "The rule for changing the default w_rs"); --set w_rs=1 is the paper's sum
    w_rs: float = 0.3
    # modules (ablation switches)
    cps: bool = True  # cross pseudo supervision between the branches
    rsl: bool = True  # registration supervision loss with registered labels
    brs: bool = True  # best registration selection; off: the first labeled case (sorted) for every volume
    scl: bool = True  # supervised contrastive loss
    reps: bool = True  # registration-enhanced positives from the memory bank (needs scl)
    # beyond the paper (issue 12, section 4), off by default until they win on validation patients:
    #: registered labels from "brs" (the selected atlas), or a "majority" / "unanimous" vote of every labeled
    #: atlas (cctrnet.registration.label_fusion)
    rsl_fusion: str = "brs"
    #: w_rs times min(1, agreement of the branches with the registered labels / agreement between the branches),
    #: both Dice on the unlabeled slices, running means: the registered labels fade once the branches agree with
    #: each other more than with them (no labels needed)
    rsl_fade: bool = False
    rsl_fade_momentum: float = 0.99  # of the running agreement means
    #: share of the unlabeled volumes whose registered labels leave L_rs and only measure the fade (0: the fade
    #: is measured on the slices RSL trains on, where the branches have learned the labels they are compared to)
    rsl_fade_holdout_fraction: float = 0.0
    #: w_rs times a factor falling from 1 to rsl_decay_end over the run's warm-up span ("linear" or "cosine";
    #: "none": constant, the paper's), times the fade when both are on (cctrnet.training.schedules.decay_factor).
    #: cosine won on the ACDC-like population's validation patients at 3 of 3 seeds with one labeled patient and
    #: held with three (documentation/benchmarks.md, "The rule for the decaying registered-label weight")
    rsl_decay: str = "cosine"
    rsl_decay_end: float = 0.0
    two_branches: bool = True  # off: branch A alone (labeled-only baseline)
    # "plan": the plan's branch B; "same_as_a": a second PlainConvUNet (CPS); "ResidualEncoderUNet" or
    # "Primus2D": that family, built by the planner's rules at the plan's patch and topology
    branch_b: str = "plan"
    # supervised contrastive loss (METHOD.md §6)
    tau: float = 0.1
    anchor_threshold: float = 0.5
    n_anchors: int = 1000
    n_negatives: int = 500
    projector_hidden: int = 256
    projector_out: int = 128
    # memory bank and REPS (METHOD.md §7)
    bank_fraction: float = 0.2
    bank_downsample: int = 4
    reps_w1: float = 0.5  # class-mean positive
    reps_w2: float = 0.5  # registered positive
    reps_max_target_volumes: int | None = None
    # uncertainty-aware mean teacher baseline (UAMT; Yu et al. 2019, as in SSL4MIS)
    uamt_ema_decay: float = 0.99
    uamt_passes: int = 8  # stochastic teacher passes for the uncertainty
    uamt_noise_std: float = 0.1  # input noise, clipped to +-2 std
    # registration used by RSL/BRS/REPS
    #: auto: affine or affine_deformable, whichever the registration stage chooses for the labeled set
    #: (documentation/registration.md); or one of affine, affine_deformable, affine_bspline
    registration_method: str = "auto"
    registration_engine: str = "torch"  # engine for pairs still missing when training starts
    # data
    foreground_oversampling: float = 0.33
    num_workers: int = 2
    augment: bool = True
    # bookkeeping
    seed: int = 0
    checkpoint_every_seconds: float = 300.0
    log_every: int = 10
    pseudo_label_quality_every: int = 100  # iterations between pseudo-label Dice reports (simulated datasets)
    # validation curve (training/validation_curve.py): branch A on slices of the validation cases, or the
    # registered-label agreement as a proxy when there are none
    validation_every: int = 100  # iterations between measurements (and the last one); 0: no curve
    validation_max_slices_per_case: int = 8  # evenly spaced slices per case; 0: every slice
    validation_max_cases: int = 4  # first cases (sorted) measured; 0: every validation case
    validation_window_step: float = 1.0  # sliding-window step / patch size (1: tiles without overlap, cheapest)
    #: simulated semi-supervision only (unlabeled training cases whose labels the dataset has): branch A's Dice on
    #: the same fixed slices of such cases at every validation point, ``dice_hidden_A``; a steadier measure of
    #: pseudo-label quality than the per-batch ``dice_pseudo_*`` (validation_max_* cases and slices)
    hidden_label_curve: bool = True
    mixed_precision: bool = True  # used on CUDA only
    #: auto: bfloat16 autocast where the GPU supports it (no gradient scaler), else float16 with a scaler
    mixed_precision_dtype: str = "auto"
    #: auto: channels-last tensors on CUDA, contiguous on CPU (cctrnet.utilities.device.uses_channels_last)
    memory_format: str = "auto"
    #: torch.compile of each branch's network (in place: checkpoints keep their keys); off by default because the
    #: first steps compile for minutes; ``compile_backend``: torch.compile's backend ("eager" only traces)
    compile: bool = False
    compile_backend: str = "inductor"
    # data-parallel training (cctr_train --num-processes N, torchrun): how the ranks draw their share of the
    # global batch. "per_rank": each rank its own stream seeded with (seed, iteration, rank), reproducible for
    # a given number of processes; "shared": every rank makes the single-process batch and keeps its rows,
    # so the batches are those of one process for any number (costs that many times the data work)
    ddp_sampling: str = "per_rank"

    def __post_init__(self) -> None:
        if self.branch_b not in BRANCH_B_SETTINGS:
            raise ValueError(f"setting branch_b must be one of {', '.join(BRANCH_B_SETTINGS)}, got {self.branch_b!r}")
        if self.ddp_sampling not in DDP_SAMPLING_SETTINGS:
            raise ValueError(f"setting ddp_sampling must be one of {', '.join(DDP_SAMPLING_SETTINGS)}, got "
                             f"{self.ddp_sampling!r}")
        from cctrnet.registration.settings import FUSION_RULES

        if self.rsl_fusion not in FUSION_RULES:
            raise ValueError(f"setting rsl_fusion must be one of {', '.join(FUSION_RULES)}, got {self.rsl_fusion!r}")
        from cctrnet.utilities.device import AUTOCAST_DTYPE_CHOICES, MEMORY_FORMAT_CHOICES

        if self.memory_format not in MEMORY_FORMAT_CHOICES:
            raise ValueError(f"setting memory_format must be one of {', '.join(MEMORY_FORMAT_CHOICES)}, "
                             f"got {self.memory_format!r}")
        if self.mixed_precision_dtype not in AUTOCAST_DTYPE_CHOICES:
            raise ValueError(f"setting mixed_precision_dtype must be one of {', '.join(AUTOCAST_DTYPE_CHOICES)}, "
                             f"got {self.mixed_precision_dtype!r}")
        if not 0.0 <= self.rsl_fade_holdout_fraction < 1.0:
            raise ValueError(f"setting rsl_fade_holdout_fraction must be in [0, 1), got {self.rsl_fade_holdout_fraction}")
        if not 0.0 <= self.rsl_fade_momentum < 1.0:
            raise ValueError(f"setting rsl_fade_momentum must be in [0, 1), got {self.rsl_fade_momentum}")
        from cctrnet.training.schedules import DECAY_SHAPES

        if self.rsl_decay not in DECAY_SHAPES:
            raise ValueError(f"setting rsl_decay must be one of {', '.join(DECAY_SHAPES)}, got {self.rsl_decay!r}")
        if not 0.0 <= self.rsl_decay_end <= 1.0:
            raise ValueError(f"setting rsl_decay_end must be in [0, 1], got {self.rsl_decay_end}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_overrides(self, overrides: dict[str, Any]) -> "TrainerConfig":
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: for a setting whose default changed after it was added: the value that reproduces the runs made before the
#: setting existed (a run's record without the setting ran with it); every other setting's default is that value
BEHAVIOUR_BEFORE_SETTING_EXISTED: dict[str, Any] = {"rsl_decay": "none"}

#: settings that change nothing unless at least one of the named module switches is on (registration is loaded
#: for RSL or REPS; the weights scale their own loss term): a run with w_rs=0.3 and rsl=false trains the same
#: networks as one with w_rs=1
USED_ONLY_WITH: dict[str, tuple[str, ...]] = {
    "w_rs": ("rsl",), "rsl_fade": ("rsl",), "rsl_fade_momentum": ("rsl",), "rsl_fade_holdout_fraction": ("rsl",),
    "rsl_decay": ("rsl",), "rsl_decay_end": ("rsl",),
    "rsl_fusion": ("rsl", "reps"), "brs": ("rsl", "reps"), "registration_method": ("rsl", "reps"),
    "registration_engine": ("rsl", "reps"),
    "w_cps_max": ("cps",), "w_cps_sharpness": ("cps",),
    "w_c": ("scl",),
}


def inert_settings(settings: dict[str, Any]) -> set[str]:
    """The settings of ``settings`` (a TrainerConfig as a dict) that change nothing, because every module
    switch they need is off (USED_ONLY_WITH)."""
    return {key for key, switches in USED_ONLY_WITH.items()
            if key in settings and not any(settings.get(switch, True) for switch in switches)}


def parse_set_arguments(pairs: list[str]) -> dict[str, Any]:
    """``["w_rs=0.5", "scl=false"]`` -> typed overrides; unknown keys or bad values raise ValueError."""
    types = {f.name: f.type for f in fields(TrainerConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, text = (s.strip() for s in pair.split("=", 1))
        if key not in types:
            raise ValueError(f"unknown setting {key!r}; known settings: {', '.join(sorted(types))}")
        out[key] = _parse_value(key, text, str(types[key]))
    return out


def _parse_value(key: str, text: str, type_name: str) -> Any:
    lowered = text.lower()
    if "None" in type_name and lowered in ("none", "null"):
        return None
    try:
        if type_name.startswith("bool"):
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            return float(text)
        return text
    except ValueError:
        raise ValueError(f"setting {key} expects {type_name}, got {text!r}") from None
