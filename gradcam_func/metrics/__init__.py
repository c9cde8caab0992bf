"""Scores for CAMs from any source: are they faithful, do they localise, do they
depend on the model? Every metric takes CAMs (B, 1, *s), or (K, B, 1, *s) with
``targets``, as Tensors or NumPy arrays, and runs its forwards batched.

- perturbation curves: ``deletion``, ``insertion``, ``road``;
- confidence change: ``confidence_change`` (Average Drop, Increase in Confidence);
- localisation: ``pointing_game``, ``energy_pointing_game``, ``box_masks``;
- sanity checks: ``parameter_randomization``, with ``rank_correlation`` and ``ssim``.
"""

from ._confidence import ConfidenceChange, confidence_change
from ._curves import deletion, insertion, road
from ._imputation import noisy_linear_imputation
from ._localisation import box_masks, energy_pointing_game, pointing_game
from ._sanity import Randomization, parameter_randomization, rank_correlation, ssim

__all__ = [
    "deletion",
    "insertion",
    "road",
    "confidence_change",
    "ConfidenceChange",
    "pointing_game",
    "energy_pointing_game",
    "box_masks",
    "parameter_randomization",
    "Randomization",
    "rank_correlation",
    "ssim",
    "noisy_linear_imputation",
]
