"""Input checks and conversions shared by the profile computations (arrays arrive as NumPy or torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from advlens.errors import ConfigError

ArrayLike = Any  # np.ndarray | torch.Tensor | nested sequence of numbers


def as_array(value: ArrayLike, dtype: type | None = None) -> np.ndarray:
    """``value`` as a NumPy array (tensors are detached and moved to the CPU first)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    return array.astype(dtype, copy=False) if dtype is not None else array


def layer_stack(layers: Sequence[ArrayLike], what: str, rows: int | None = None) -> list[np.ndarray]:
    """One float32, C-contiguous (n, D_i) matrix per layer: each entry (n, …) is flattened per row.

    Raises:
        ConfigError: not a non-empty list, a layer with no features, different row counts, a row
            count other than ``rows``, or a value that is not finite.
    """
    if isinstance(layers, np.ndarray) or hasattr(layers, "detach") or not isinstance(layers, Sequence):
        raise ConfigError(f"{what} must be a list with one (n, D) activation matrix per layer, "
                          f"got {type(layers).__name__}")
    if len(layers) == 0:
        raise ConfigError(f"{what} is empty: give one (n, D) activation matrix per selected layer")
    out = []
    for index, layer in enumerate(layers):
        array = as_array(layer)
        if array.ndim < 2 or array.shape[0] == 0 or int(np.prod(array.shape[1:])) == 0:
            raise ConfigError(f"{what}[{index}] has shape {array.shape}; each layer needs (n, D) "
                              "activations (n images, D ≥ 1 values each; conv maps are flattened)")
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise ConfigError(f"{what}[{index}] holds {array.dtype} values; activations must be real numbers")
        out.append(np.ascontiguousarray(array.reshape(array.shape[0], -1), dtype=np.float32))
    counts = [a.shape[0] for a in out]
    expected = rows if rows is not None else counts[0]
    bad = [i for i, c in enumerate(counts) if c != expected]
    if bad:
        raise ConfigError(f"{what}: every layer must hold the same {expected} images, but layer(s) "
                          f"{', '.join(map(str, bad))} hold {', '.join(str(counts[i]) for i in bad)}")
    for index, array in enumerate(out):
        if not np.isfinite(array).all():
            raise ConfigError(f"{what}[{index}] holds NaN or infinite values; check the model's outputs "
                              "for these images (they cannot be projected)")
    return out


def vector(value: ArrayLike, what: str, length: int | None = None) -> np.ndarray:
    """A float64 1-D array (of ``length`` when given)."""
    array = as_array(value).astype(np.float64)
    if array.ndim != 1 or (length is not None and array.shape[0] != length):
        wanted = f"({length},)" if length is not None else "1-D"
        raise ConfigError(f"{what} must have shape {wanted}, got {array.shape}")
    return array


def positive_int(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{what} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def real(value: Any, what: str, low: float = -np.inf, high: float = np.inf) -> float:
    """``value`` as a finite float in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not np.isfinite(number) or not low <= number <= high:
        raise ConfigError(f"{what} must lie in [{low:g}, {high:g}], got {value!r}")
    return number


def euclidean(a: np.ndarray, b: np.ndarray, block: int = 1024) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and of ``b``, computed in float64 by BLAS
    (``|x|² + |y|² − 2 x·y``), ``block`` rows of each side at a time so that a float32 background is
    never copied whole.

    Shape: a (m, D); b (n, D); returns float64 (m, n).
    """
    out = np.empty((len(a), len(b)))
    b_norms = np.concatenate([_squared_norms(b[s:s + block]) for s in range(0, len(b), block)]) if len(b) else []
    for i in range(0, len(a), block):
        x = np.asarray(a[i:i + block], dtype=np.float64)
        x_norms = (x * x).sum(axis=1)[:, None]
        for j in range(0, len(b), block):
            y = np.asarray(b[j:j + block], dtype=np.float64)
            squared = x_norms + b_norms[None, j:j + len(y)] - 2.0 * (x @ y.T)
            out[i:i + len(x), j:j + len(y)] = np.sqrt(np.maximum(squared, 0.0))
    return out


def gram_distances(a: np.ndarray, b: np.ndarray, block: int = 1024) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and of ``b`` from float32 Gram products of rows centred on
    ``b``'s mean (``|x|² + |y|² − 2 x·y``), as the fit's :func:`~advlens.profiles.aligned.nearest_neighbours`
    computes them: no float64 copy of ``b``, ``block`` rows of ``b`` centred at a time. Centring keeps the
    cancellation small for activations far from the origin (ReLU outputs); the neighbour order agrees with
    float64 distances except between rows whose distances differ by float32 rounding. Each row of ``a`` gets
    its own matrix-vector products, so its distances do not depend on the other rows of ``a`` (a matrix
    product's float32 sums would: BLAS picks other kernels for other batch sizes).

    Shape: a (m, D); b (n, D); returns float32 (m, n).
    """
    a = np.asarray(a, dtype=np.float32)
    out = np.empty((len(a), len(b)), dtype=np.float32)
    if not len(a) or not len(b):
        return out
    mean = np.asarray(b, dtype=np.float32).mean(axis=0, dtype=np.float64).astype(np.float32)
    x = a - mean
    x_norms = np.einsum("ij,ij->i", x, x, dtype=np.float32)[:, None]
    for j in range(0, len(b), block):
        y = np.asarray(b[j:j + block], dtype=np.float32) - mean
        y_norms = np.einsum("ij,ij->i", y, y, dtype=np.float32)[None, :]
        products = np.stack([y @ row for row in x])  # one matrix-vector product per row of a: no batch effect
        squared = x_norms + y_norms - np.float32(2.0) * products
        np.sqrt(np.maximum(squared, 0.0, out=squared), out=out[:, j:j + len(y)])
    return out


def _squared_norms(rows: np.ndarray) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    return (x * x).sum(axis=1)


def bandwidth_search(gaps: np.ndarray, target: float, n_iter: int, tolerance: float) -> np.ndarray:
    """Each row's σ with ``Σ_j exp(−gap_j / σ) = target`` (a gap ≤ 0 counts 1): umap-learn's float32 binary
    search of ``smooth_knn_dist`` (start 1, doubling while unbounded, the sum taken column by column as its
    loop does), vectorised over rows; rows stop once within ``tolerance``. The fit (gaps d − ρ) and the
    placement of new images (ρ = 0) both use it.

    Shape: gaps (n, k − 1) float32; returns float32 (n,).
    """
    n = len(gaps)
    lo = np.zeros(n, dtype=np.float32)
    hi = np.full(n, np.inf, dtype=np.float32)
    mid = np.ones(n, dtype=np.float32)
    active = np.ones(n, dtype=bool)
    for _ in range(n_iter):
        with np.errstate(over="ignore"):
            terms = np.where(gaps > 0, np.exp(-(gaps / mid[:, None])), np.float32(1.0)).astype(np.float32)
        psum = np.zeros(n, dtype=np.float32)
        for column in range(terms.shape[1]):  # sequential float32 sum, as umap-learn's loop
            psum += terms[:, column]
        active &= np.abs(psum - target) >= tolerance
        if not active.any():
            break
        above = active & (psum > target)
        below = active & ~(psum > target)
        hi[above] = mid[above]
        mid[above] = (lo[above] + hi[above]) / np.float32(2.0)
        lo[below] = mid[below]
        unbounded = below & np.isinf(hi)
        mid[unbounded] *= np.float32(2.0)
        bounded = below & ~np.isinf(hi)
        mid[bounded] = (lo[bounded] + hi[bounded]) / np.float32(2.0)
    return mid
