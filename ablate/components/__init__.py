"""Every component registry. Importing this package registers every entry (a test checks it).

A new component is one decorated builder in the module of its axis; `ablate list` shows it and the
contract tests in tests/test_contracts.py test it.
"""

from __future__ import annotations

from ablate.components.augmentations import AUGMENTATIONS
from ablate.components.features import FEATURES
from ablate.components.losses import LOSSES
from ablate.components.models import MODELS
from ablate.components.optimizers import OPTIMIZERS, SCHEDULES
from ablate.registry import Registry

# kind (as typed in `ablate list KIND` and used by search spaces) -> registry
REGISTRIES: dict[str, Registry] = {
    "features": FEATURES,
    "augmentations": AUGMENTATIONS,
    "models": MODELS,
    "losses": LOSSES,
    "optimizers": OPTIMIZERS,
    "schedules": SCHEDULES,
}

__all__ = ["AUGMENTATIONS", "FEATURES", "LOSSES", "MODELS", "OPTIMIZERS", "REGISTRIES", "SCHEDULES"]
