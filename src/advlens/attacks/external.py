"""Adversarial images made elsewhere: an ``.npz`` whose ``adversarial`` array is aligned to dataset indices."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from advlens.errors import AttackError


class PrecomputedAttack:
    """Looks adversarial images up by dataset index instead of computing them.

    The file holds ``adversarial`` (N×C×H×W or N×H×W×C, float in [0, 1] or uint8) and optionally
    ``indices`` (N,) giving the dataset index of each row; without ``indices`` row i belongs to dataset
    index i. Dataset images without a row are reported as not attacked.

    Shape:
        ``lookup(indices)`` returns (adversarial (M, C, H, W) float32 in [0, 1], found (M,) bool).
    """

    def __init__(self, path: str | Path, image_shape: tuple[int, int, int]) -> None:
        from advlens.data.npz import images_to_tensor
        from advlens.errors import DatasetError

        self.path = Path(path)
        if not self.path.is_file():
            raise AttackError(f"adversarial file {self.path} does not exist (expected an .npz with 'adversarial')")
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                if "adversarial" not in archive.files:
                    raise AttackError(f"{self.path} has no array 'adversarial' (it has {archive.files})")
                raw = archive["adversarial"]
                indices = archive["indices"].astype(np.int64) if "indices" in archive.files else None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise AttackError(f"cannot read {self.path}: {exc}") from exc
        try:
            self.images = images_to_tensor(raw, str(self.path))
        except DatasetError as exc:
            raise AttackError(str(exc)) from exc
        if tuple(self.images.shape[1:]) != tuple(image_shape):
            raise AttackError(
                f"{self.path}: adversarial images have shape {tuple(self.images.shape[1:])}, the dataset's are "
                f"{tuple(image_shape)}"
            )
        self.indices = indices if indices is not None else np.arange(len(self.images))
        if len(self.indices) != len(self.images):
            raise AttackError(f"{self.path}: {len(self.indices)} indices for {len(self.images)} images")
        self.row_of = {int(index): row for row, index in enumerate(self.indices)}
        self.digest = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def config(self) -> dict:
        return {"name": "file", "path": str(self.path.resolve()), "sha256": self.digest}

    def lookup(self, dataset_indices: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        rows = np.array([self.row_of.get(int(i), -1) for i in dataset_indices], dtype=np.int64)
        found = rows >= 0
        out = torch.zeros((len(rows), *self.images.shape[1:]), dtype=torch.float32)
        if found.any():
            out[torch.from_numpy(found)] = self.images[torch.from_numpy(rows[found])]
        return out, found
