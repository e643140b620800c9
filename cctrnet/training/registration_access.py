"""The registrations a run needs: computed if missing (each pair once, cached), then loaded for training.

BRS off (``brs=false``): every unlabeled volume gets a labeled volume drawn at random (seeded by the run's
seed) among those whose registration to it succeeded, instead of the cycle-consistency winner.
"""
from __future__ import annotations

import numpy as np

from cctrnet.registration.stage import run_registration_stage
from cctrnet.registration.training_access import TrainingRegistration, load_training_registration


def load_run_registration(trainer) -> TrainingRegistration:
    setup, config = trainer.setup, trainer.config
    configuration = setup.configuration["data_identifier"]
    summary = run_registration_stage(setup.preprocessed_dataset_folder, setup.labeled_cases,
                                     method=config.registration_method, engine=config.registration_engine,
                                     configuration=configuration, write_report=False)
    if summary.choice is not None:
        print(f"[cctrnet] {summary.choice.describe()}")  # also in registration_choice.json
    registration = load_training_registration(setup.preprocessed_dataset_folder, setup.labeled_cases,
                                              summary.method, configuration, fusion=config.rsl_fusion,
                                              num_classes=setup.num_classes)
    if not config.brs:
        rng = np.random.default_rng(config.seed)
        for unlabeled in sorted(registration.selected_labeled):
            usable = [q for q in setup.labeled_cases if registration.store.successful(q, unlabeled)]
            registration.selected_labeled[unlabeled] = str(rng.choice(usable)) if usable else None
    return registration
