"""Attacks in pixel space, one class per file."""

from advlens.attacks.base import Attack
from advlens.attacks.external import PrecomputedAttack
from advlens.attacks.fgsm import FGSM
from advlens.attacks.pgd import PGD

__all__ = ["Attack", "PGD", "FGSM", "PrecomputedAttack"]
