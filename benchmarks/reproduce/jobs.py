"""Which jobs a benchmark selection needs, their ids (one id per distinct configuration) and time estimates.

A job is one trained, registration-only or nnU-Net result on one dataset, number of labeled cases and
seed. Its id names the configuration, not the table, so the ablation table reuses the core table's CTS and
CCT-R runs: ``phantom__CTSTrainer__L1__s0__it300``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

DATASETS = {  # benchmark name -> (dataset id, generator command)
    "phantom": (1, ["cctr_generate_phantom", "-d", "1"]),
    "brain": (2, ["cctr_generate_brain", "-d", "2"]),
    # the ACDC-like population (issue 12) at 25 patients, 10 train / 5 validation / 10 test: 20 training volumes
    # keep the 380 ordered registration pairs (affine and deformable) and the trainings within this machine
    "acdc": (3, ["cctr_generate_acdc_population", "-d", "3", "--patients", "25", "--split", "0.4", "0.2", "0.4",
                 "-np", "2"]),
    # the same patients with the image appearance of version 2 (per-patient bSSFP contrast, coil shading, 3 T
    # banding, breath-hold misregistration; documentation/phantom.md), designed before any method ran on it
    "acdc2": (4, ["cctr_generate_acdc_population", "-d", "4", "--name", "ACDCPopulationV2", "--patients", "25",
                  "--split", "0.4", "0.2", "0.4", "--appearance-version", "2", "-np", "2"]),
}
PATIENT_DATASETS = ("acdc", "acdc2")  # their dataset.json declares patients: --labeled counts patients
TABLES = ("core", "ablation", "registration", "robustness", "budget")


@dataclass(frozen=True)
class Method:
    """A row of a table: a trainer with settings, the registration-only baseline, or nnU-Net."""

    label: str
    kind: str  # "train", "regonly" or "nnunet"
    trainer: str | None = None
    settings: tuple[str, ...] = ()  # --set key=value, sorted
    all_labels: bool = False  # fully supervised: every labeled case, independent of N

    @property
    def slug(self) -> str:
        return run_slug(self.kind, self.trainer, self.settings)


def run_slug(kind: str, trainer: str | None, settings: tuple[str, ...] | list[str]) -> str:
    """The method part of a job id: the kind, or the trainer and its --set settings."""
    if kind != "train":  # registration only: its settings are cctr_predict options (reg_method=affine_deformable)
        return "-".join([kind, *(s.replace("=", "_") for s in settings)])
    return "-".join([trainer or "", *(s.replace("=", "_") for s in settings)])


# Settings that change nothing for some jobs: with one labeled case every unlabeled volume has one candidate,
# so best registration selection (BRS) and a random choice pick the same one. Such rows share one run.
NO_EFFECT_WITH_ONE_LABELED = ("brs=false",)


# A row that forces the registration method which `auto` chose for the same run (the core table's CCT-R on the
# ACDC-like population: affine_deformable) is that run; the runner records it as such instead of training twice.
FORCED_REGISTRATION = "registration_method="


def _train(label: str, trainer: str, *settings: str, all_labels: bool = False) -> Method:
    return Method(label, "train", trainer, tuple(sorted(settings)), all_labels)


CORE_METHODS = [
    _train("LS", "LabeledOnlyTrainer"),
    _train("CPS", "CPSTrainer"),
    _train("CTS", "CTSTrainer"),
    _train("CCT-R", "CCTRTrainer"),
    # the affine engine the dataset's own pairs are stored with (torch; SimpleITK's until 2026-12-02, whose
    # records keep the id regonly__...)
    Method("registration only", "regonly", settings=("reg_engine=torch",)),
    Method("nnU-Net v2 2d", "nnunet"),
    _train("FS (all labels)", "LabeledOnlyTrainer", all_labels=True),
]
ABLATION_METHODS = [  # the rows of the paper's Table 5
    _train("CTS", "CTSTrainer"),
    _train("+RSL", "CCTRTrainer", "scl=false", "reps=false", "brs=false"),
    _train("+RSL+BRS", "CCTRTrainer", "scl=false", "reps=false"),
    _train("+SCL", "CCTRTrainer", "rsl=false", "reps=false"),
    _train("+SCL+RSL", "CCTRTrainer", "reps=false"),
    _train("+SCL+REPS", "CCTRTrainer", "rsl=false"),
    _train("all (CCT-R)", "CCTRTrainer"),
]
REGISTRATION_METHODS = [  # the paper's "Ours (Affine)" and "Ours (Affine+Deform)" rows
    _train("CCT-R (affine)", "CCTRTrainer", "registration_method=affine"),
    _train("CCT-R (affine+deformable)", "CCTRTrainer", "registration_method=affine_deformable"),
    Method("registration only (affine+deformable)", "regonly", settings=("reg_method=affine_deformable",)),
]
ROBUSTNESS_METHODS = [  # issue 12 section 4: settings beyond the paper, chosen on the validation patients
    # with deformable registration, the choice `auto` made on the ACDC-like population (its registration_choice.json),
    # so the first row is the registration table's run
    _train("CCT-R (affine+deformable)", "CCTRTrainer", "registration_method=affine_deformable"),
    # the paper's unweighted sum (the default until 2026-12-02, when 0.3 won on validation patients)
    _train("w_rs 1 (the paper's)", "CCTRTrainer", "registration_method=affine_deformable", "w_rs=1.0"),
    # the fade measured on volumes whose registered labels RSL never teaches (a fifth of the unlabeled ones)
    _train("+ fading w_rs, held-out volumes", "CCTRTrainer", "registration_method=affine_deformable",
           "rsl_fade=true", "rsl_fade_holdout_fraction=0.2"),
    # the paper's cross-teaching weight averages 0.04 over a run (its Gaussian ramp scales with the run length)
    _train("w_cps 1.0", "CCTRTrainer", "registration_method=affine_deformable", "w_cps_max=1.0"),
    _train("+ fading w_rs", "CCTRTrainer", "registration_method=affine_deformable", "rsl_fade=true"),
    _train("+ majority of atlases", "CCTRTrainer", "registration_method=affine_deformable", "rsl_fusion=majority"),
    _train("+ both", "CCTRTrainer", "registration_method=affine_deformable", "rsl_fade=true",
           "rsl_fusion=majority"),
    # CPS (two CNNs) beat CTS and CCT-R (a CNN and a residual-encoder network) with one labeled patient
    # (2026-12-02): is it the pairing of different networks that costs?
    _train("two CNNs (branch B as A)", "CCTRTrainer", "registration_method=affine_deformable",
           "branch_b=same_as_a"),
    # the budget curve (2026-12-03): CCT-R is near its level from 300 iterations on while LS and CTS keep
    # climbing, and it was better at 1,000 than at 2,000 at three seeds; registered labels early, cross teaching late
    _train("+ w_rs decaying over the run", "CCTRTrainer", "registration_method=affine_deformable", "rsl_decay=cosine"),
    # the default until 2026-12-03 (a constant w_rs, as the paper's): the earlier tables' CCT-R runs are this row
    _train("w_rs constant (the paper's schedule)", "CCTRTrainer", "registration_method=affine_deformable",
           "rsl_decay=none"),
]
# the phantom too: it has no validation patients, so there a row is judged by the training cases' hidden labels
# (the pseudo-label curves), never by its test cases
ROBUSTNESS_DATASETS = PATIENT_DATASETS + ("phantom",)
BUDGET_METHODS = [  # issue 12 section 2: does the gap to labeled-only grow with training? One seed, several budgets
    _train("LS", "LabeledOnlyTrainer"),
    _train("CTS", "CTSTrainer"),
    _train("CCT-R (affine+deformable)", "CCTRTrainer", "registration_method=affine_deformable"),
]
BUDGET_DATASETS = PATIENT_DATASETS
DEFAULT_BUDGETS = (300, 1000, 3000)
# --methods names -> method labels of the core table (ablation rows are chosen with --tables)
METHOD_ALIASES = {"LS": "LS", "CPS": "CPS", "CTS": "CTS", "CCTR": "CCT-R", "CCT-R": "CCT-R",
                  "regonly": "registration only", "nnunet": "nnU-Net v2 2d", "FS": "FS (all labels)"}
ABLATION_DATASETS = ("phantom",)

# Seconds per training iteration and per job outside training on this 2-core machine at the default CPU plan
# (--cpu-step-seconds 0.6), measured with two jobs side by side, one torch thread each (the default
# --workers 2): medians of the phantom core-table jobs, 300 iterations, 2026-11-26. nnU-Net's per-iteration
# time is LS's (one network of the same topology and batch); its fixed cost is planning, preprocessing and
# prediction of the 10 test cases. Finished jobs in the work folder replace these (see calibration()).
SECONDS_PER_ITERATION = {"LabeledOnlyTrainer": 0.33, "CPSTrainer": 1.0, "CTSTrainer": 1.25,
                         "CCTRTrainer": 2.0, "CCTRTrainer-ablation": 1.8, "nnunet": 0.4}
REFERENCE_CPU_STEP_SECONDS = 0.6
#: CCT-R's module switches: a row with one of them false costs the ablation rate, any other setting CCT-R's
MODULE_SWITCHES = ("cps", "rsl", "brs", "scl", "reps", "two_branches")
OVERHEAD_SECONDS = {"train": 65.0, "regonly": 100.0, "nnunet": 240.0}
PREPARE_SECONDS = 15 * 60.0  # generate + plan + preprocess + 380 registrations, per dataset


@dataclass(frozen=True)
class Job:
    dataset: str
    method: Method
    labeled: int | None  # None: all labels (FS)
    seed: int
    iterations: int

    @property
    def run_settings(self) -> tuple[str, ...]:
        """The method's settings less those without effect on this job (see NO_EFFECT_WITH_ONE_LABELED)."""
        if self.labeled == 1:
            return tuple(s for s in self.method.settings if s not in NO_EFFECT_WITH_ONE_LABELED)
        return self.method.settings

    @property
    def slug(self) -> str:
        return run_slug(self.method.kind, self.method.trainer, self.run_settings)

    @property
    def job_id(self) -> str:
        labeled = "all" if self.labeled is None else str(self.labeled)
        budget = f"__it{self.iterations}" if self.method.kind in ("train", "nnunet") else ""
        return f"{self.dataset}__{self.slug}__L{labeled}__s{self.seed}{budget}"

    def estimated_seconds(self, cpu_step_seconds: float, measured: dict[str, tuple[float, float]] | None = None
                          ) -> float:
        """Wall seconds of this job with one worker's share of the machine: from ``measured`` (calibration() of
        finished jobs like it) when there, else from the built-in step times scaled to the CPU plan's budget."""
        measured = measured or {}
        found = measured.get(f"{self.dataset}/{self.slug}")
        speed = measured_speed(self.dataset, measured) if self.method.kind == "train" else None
        if found is not None:
            per_iteration, overhead = found
        elif speed is not None:  # the built-in cost of this method at the speed the dataset's timed trainers ran
            per_iteration = seconds_per_iteration(self.method) * speed[0]
            overhead = speed[1]
        else:
            scale = cpu_step_seconds / REFERENCE_CPU_STEP_SECONDS
            per_iteration = seconds_per_iteration(self.method) * scale
            overhead = OVERHEAD_SECONDS[self.method.kind] * max(scale, 0.3)
        if self.method.kind == "regonly":  # no training; its cost grows with the labeled cases registered
            return overhead * (self.labeled or 1)
        return overhead + self.iterations * per_iteration


def measured_speed(dataset: str, measured: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """(measured over built-in seconds per iteration, seconds outside training), medians over the timed plain
    trainers of ``dataset``; None when none is timed."""
    timed = [(measured[f"{dataset}/{trainer}"], builtin) for trainer, builtin in SECONDS_PER_ITERATION.items()
             if f"{dataset}/{trainer}" in measured]
    if not timed:
        return None
    return statistics.median(m[0] / builtin for m, builtin in timed), statistics.median(m[1] for m, _ in timed)


def calibration(results: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """``dataset/method slug`` -> (median seconds per training iteration, median seconds outside training)
    over finished jobs of at least 50 iterations; registration-only: seconds per labeled case.

    Per iteration is the training command's wall time over its iterations (start-up included), the way
    estimated_seconds() adds it up. A resumed job's training command ran only part of the iterations, so its
    per-iteration time is the trainer's own logged median step time instead (``logged_step_seconds``; a job
    without it is no timing)."""
    samples: dict[str, list[tuple[float, float]]] = {}
    for result in results.values():
        job = result.get("job", {})
        if result.get("status") != "ok" or "steps" not in result:
            continue
        steps = result["steps"]
        training = sum(s["wall_seconds"] for s in steps if s["name"] in ("train", "nnunet_train"))
        outside = sum(s["wall_seconds"] for s in steps) - training
        if job.get("kind") == "regonly":
            samples.setdefault(f"{job['dataset']}/regonly", []).append((0.0, outside / (job.get("labeled") or 1)))
            continue
        iterations = job.get("iterations") or 0
        if result.get("resumed"):
            per_iteration = result.get("logged_step_seconds") if iterations >= 50 else None
        else:
            per_iteration = training / iterations if iterations >= 50 and training else None
        if not per_iteration:
            continue
        slug = run_slug(job["kind"], job.get("trainer"), job.get("settings", []))
        samples.setdefault(f"{job['dataset']}/{slug}", []).append((per_iteration, outside))
    return {key: (_median([a for a, _ in values]), _median([b for _, b in values])) for key, values in samples.items()}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def seconds_per_iteration(method: Method) -> float:
    if method.kind == "nnunet":
        return SECONDS_PER_ITERATION["nnunet"]
    if method.trainer == "CCTRTrainer" and any(s.endswith("=false") and s.split("=")[0] in MODULE_SWITCHES
                                               for s in method.settings):  # ablation rows: CCT-R with modules off
        return SECONDS_PER_ITERATION["CCTRTrainer-ablation"]
    return SECONDS_PER_ITERATION.get(method.trainer or "", 0.85)


@dataclass
class Selection:
    datasets: list[str] = field(default_factory=lambda: ["phantom", "brain"])
    methods: list[str] | None = None  # METHOD_ALIASES keys; None: all
    labeled: list[int] = field(default_factory=lambda: [1, 2])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    tables: list[str] = field(default_factory=lambda: ["core"])
    budgets: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))  # iterations of the budget table
    #: labels of the rows to run from the non-core tables (e.g. "w_rs 0.3"); None: every row
    rows: list[str] | None = None


def table_methods(table: str, selection: Selection) -> list[Method]:
    if table == "ablation":
        return list(ABLATION_METHODS)
    if table == "registration":
        return list(REGISTRATION_METHODS)
    if table == "robustness":
        return list(ROBUSTNESS_METHODS)
    if table == "budget":
        return list(BUDGET_METHODS)
    if selection.methods is None:
        return list(CORE_METHODS)
    unknown = [m for m in selection.methods if m not in METHOD_ALIASES]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_ALIASES)}")
    wanted = {METHOD_ALIASES[m] for m in selection.methods}
    return [m for m in CORE_METHODS if m.label in wanted]


def table_datasets(table: str, selection: Selection) -> list[str]:
    if table == "robustness":
        return [d for d in selection.datasets if d in ROBUSTNESS_DATASETS]
    if table == "budget":
        return [d for d in selection.datasets if d in BUDGET_DATASETS]
    if table == "registration":
        return [d for d in selection.datasets if d in ABLATION_DATASETS + ROBUSTNESS_DATASETS]
    return [d for d in selection.datasets if table == "core" or d in ABLATION_DATASETS]


def build_jobs(selection: Selection, iterations: int) -> list[Job]:
    """Every job the selected tables need, each once, in the order they run (cheap and core first)."""
    if selection.rows is not None:
        known = {m.label for t in selection.tables if t != "core" for m in table_methods(t, selection)}
        unknown = [r for r in selection.rows if r not in known]
        if unknown:
            raise ValueError(f"unknown row(s) {', '.join(map(repr, unknown))} of the tables "
                             f"{', '.join(t for t in selection.tables if t != 'core') or '(none besides core)'}; "
                             f"choose from {', '.join(map(repr, sorted(known)))}")
    jobs: dict[str, Job] = {}
    for table in selection.tables:
        for dataset in table_datasets(table, selection):
            for seed in selection.seeds:
                for method in table_methods(table, selection):
                    if table != "core" and selection.rows is not None and method.label not in selection.rows:
                        continue
                    for labeled in ([None] if method.all_labels else selection.labeled):
                        for budget in table_iterations(table, selection, iterations):
                            job = Job(dataset, method, labeled, seed, budget)
                            jobs.setdefault(job.job_id, job)
    order = {"train": 0, "nnunet": 1, "regonly": 2}  # reg-only last: it reuses a trained run's labeled_cases.json
    return sorted(jobs.values(), key=lambda j: (j.dataset, j.seed, order[j.method.kind], j.iterations))


def table_iterations(table: str, selection: Selection, iterations: int) -> list[int]:
    """The training budgets of a table's jobs: the selection's budgets for the budget table, else --iterations."""
    return sorted(set(selection.budgets)) if table == "budget" else [iterations]


def default_iterations(selection: Selection, cpu_step_seconds: float, target_seconds: float = 3600.0,
                       minimum: int = 100, multiple: int = 50, workers: int = 1,
                       measured: dict[str, tuple[float, float]] | None = None) -> int:
    """Iterations that make the selected jobs (preparation excluded) take about ``target_seconds`` of wall
    time with ``workers`` jobs side by side (job seconds are per worker)."""
    target_seconds = target_seconds * max(1, workers)
    fixed = sum(j.estimated_seconds(cpu_step_seconds, measured) for j in build_jobs(selection, 0))
    per_iteration = sum(j.estimated_seconds(cpu_step_seconds, measured) for j in build_jobs(selection, 1)) - fixed
    if per_iteration <= 0:
        return minimum
    iterations = (target_seconds - fixed) / per_iteration
    return max(minimum, int(math.floor(iterations / multiple)) * multiple)


def quality_every(iterations: int, points: int = 10) -> int:
    """Iterations between pseudo-label Dice reports so a curve has about ``points`` points."""
    return max(1, iterations // points)


def registration_twin(job: Job) -> tuple[Job, str] | None:
    """The same training with registration ``auto`` and the method ``job`` forces, when it forces one."""
    if job.method.kind != "train":
        return None
    forced = [s for s in job.method.settings if s.startswith(FORCED_REGISTRATION)]
    if len(forced) != 1:
        return None
    rest = tuple(s for s in job.method.settings if s != forced[0])
    return replace(job, method=replace(job.method, settings=rest)), forced[0][len(FORCED_REGISTRATION):]

