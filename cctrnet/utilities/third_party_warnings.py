"""Warnings from libraries below us that a user can do nothing about, silenced one by one, narrowly.

Each filter names the message, the category and the module that issues it, so the same kind of warning
from anywhere else still shows.
"""
from __future__ import annotations

import warnings

# timm (imported by dynamic_network_architectures for Primus) decorates a class with torch.jit.interface,
# which torch 2.x deprecates at import time: one FutureWarning in every run that builds or plans networks.
KNOWN_WARNINGS = (
    (r"`torch\.jit\.interface` is deprecated", FutureWarning, r"torch\.jit\._script"),
)


def silence_known_warnings() -> None:
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
