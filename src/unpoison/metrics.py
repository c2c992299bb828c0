"""Evaluation metrics for poisoning defenses: accuracy, backdoor ASR / R-Acc, DER / RIR, detection, recovery.

Every function accepts numpy arrays, torch tensors (any device, any float dtype) or plain sequences, validates
shapes and lengths, and raises :class:`~unpoison.errors.UnpoisonError` on bad input. Every rate is a fraction in
[0, 1], never a percentage. Composite results are dataclasses whose ``to_dict()`` holds only JSON-native values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

import numpy as np
import torch

from unpoison.errors import UnpoisonError

__all__ = [
    "AvailabilityMetrics",
    "BackdoorMetrics",
    "DetectionMetrics",
    "accuracy",
    "attack_success_rate",
    "availability_metrics",
    "backdoor_metrics",
    "defense_effectiveness_rate",
    "detection_metrics",
    "PurificationFidelity",
    "per_class_accuracy",
    "psnr",
    "psnr_from_mse",
    "purification_fidelity",
    "recovery_ratio",
    "robust_accuracy",
    "robust_improvement_rate",
]

ArrayLike: TypeAlias = np.ndarray | torch.Tensor | Sequence[Any]
Scalar: TypeAlias = float | int | np.generic | torch.Tensor


# ----------------------------------------------------------------------------------------------------------------
# Input conversion and validation
# ----------------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Any array-like -> numeric numpy array (torch tensors detached and moved to CPU)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()  # numpy has no bfloat16; upcasting keeps argmax and ranking unchanged
        arr = t.numpy()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as e:  # ragged nested lists
            raise UnpoisonError(f"{name}: cannot be converted to an array ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise UnpoisonError(f"{name}: expected numbers, got an array of dtype {arr.dtype}")
    return arr


def _nonempty_1d(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim != 1:
        raise UnpoisonError(f"{name}: expected a 1-D array, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise UnpoisonError(f"{name}: is empty")
    return arr


def _labels(x: Any, name: str) -> np.ndarray:
    """1-D non-empty integer class indices (integral floats are accepted, e.g. labels loaded from CSV)."""
    arr = _nonempty_1d(_to_numpy(x, name), name)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise UnpoisonError(f"{name}: contains NaN or infinity")
        if not np.all(arr == np.round(arr)):
            raise UnpoisonError(f"{name}: class indices must be integers, got non-integral values")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise UnpoisonError(f"{name}: class indices must be >= 0, got {int(arr.min())}")
    return arr


def _predictions(x: Any, name: str) -> np.ndarray:
    """Class indices (N,) as is, or logits/probabilities (N, K) reduced by argmax."""
    arr = _to_numpy(x, name)
    if arr.ndim == 2:
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise UnpoisonError(f"{name}: is empty (shape {tuple(arr.shape)})")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            # argmax silently picks a NaN position, which would turn a broken model into a plausible number
            raise UnpoisonError(f"{name}: logits contain NaN or infinity")
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise UnpoisonError(f"{name}: expected class indices (N,) or logits (N, K), got shape {tuple(arr.shape)}")
    return _labels(arr, name)


def _targets(x: Any, n: int, name: str) -> np.ndarray:
    """A scalar target (all-to-one) broadcast to ``n``, or a per-sample array (all-to-one or all-to-all)."""
    arr = _to_numpy(x, name)
    if arr.ndim == 0:
        arr = np.full(n, arr.item())
    labels = _labels(arr, name)
    _same_length(n, "true_labels", len(labels), name)
    return labels


def _same_length(n_a: int, name_a: str, n_b: int, name_b: str) -> None:
    if n_a != n_b:
        raise UnpoisonError(f"length mismatch: {name_a} has {n_a} samples, {name_b} has {n_b}")


def _binary(x: Any, name: str) -> np.ndarray:
    """1-D non-empty boolean mask; 0/1 numbers are accepted, anything else is an error (not silently cast)."""
    arr = _nonempty_1d(_to_numpy(x, name), name)
    if arr.dtype.kind != "b":
        if not np.all((arr == 0) | (arr == 1)):
            raise UnpoisonError(f"{name}: expected booleans or 0/1 values")
        arr = arr.astype(bool)
    return arr


def _fraction(x: Scalar, name: str) -> float:
    """A finite float in [0, 1]; the range check catches percentages passed by mistake (94.95 instead of 0.9495)."""
    try:
        v = float(x)
    except (TypeError, ValueError, RuntimeError):
        raise UnpoisonError(f"{name}: expected a number, got {type(x).__name__}") from None
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise UnpoisonError(f"{name}: must be a fraction in [0, 1] (not a percentage), got {v}")
    return v


def _ratio(num: int, den: int) -> float:
    # Explicit 0/0 convention (sklearn's zero_division=0): an undefined rate reports 0.0 rather than NaN,
    # so results stay JSON-valid; the counts in the same result show when that happened.
    return num / den if den else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Accuracy and backdoor metrics
# ----------------------------------------------------------------------------------------------------------------


def accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of ``pred`` equal to ``labels``; ``pred`` is class indices (N,) or logits (N, K)."""
    p = _predictions(pred, "pred")
    y = _labels(labels, "labels")
    _same_length(len(p), "pred", len(y), "labels")
    return float(np.mean(p == y))


def _eligible(
    pred_on_triggered: ArrayLike, true_labels: ArrayLike, target_labels: ArrayLike | Scalar
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions, true and target labels of triggered samples whose true class differs from their target.

    A sample already of the target class says nothing about the trigger (the clean model predicts the target
    anyway), so it is left out of both ASR and R-Acc, as in BackdoorBench.
    """
    p = _predictions(pred_on_triggered, "pred_on_triggered")
    y = _labels(true_labels, "true_labels")
    _same_length(len(p), "pred_on_triggered", len(y), "true_labels")
    t = _targets(target_labels, len(y), "target_labels")
    keep = y != t
    if not keep.any():
        raise UnpoisonError("no eligible triggered samples: every true label equals its target label")
    return p[keep], y[keep], t[keep]


def attack_success_rate(
    pred_on_triggered: ArrayLike, true_labels: ArrayLike, target_labels: ArrayLike | Scalar
) -> float:
    """Fraction of eligible triggered samples (true != target) predicted as their target class.

    ``target_labels`` is a scalar (all-to-one) or a per-sample array (all-to-one or all-to-all).
    """
    p, _, t = _eligible(pred_on_triggered, true_labels, target_labels)
    return float(np.mean(p == t))


def robust_accuracy(pred_on_triggered: ArrayLike, true_labels: ArrayLike, target_labels: ArrayLike | Scalar) -> float:
    """R-Acc: fraction of the same eligible triggered samples predicted as their true class."""
    p, y, _ = _eligible(pred_on_triggered, true_labels, target_labels)
    return float(np.mean(p == y))


@dataclass(frozen=True)
class BackdoorMetrics:
    """Clean accuracy, ASR and R-Acc of one model.

    ``n_triggered`` counts the *eligible* triggered samples (true != target), i.e. the ASR / R-Acc denominator.
    """

    clean_acc: float
    asr: float
    robust_acc: float
    n_clean: int
    n_triggered: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backdoor_metrics(
    pred_clean: ArrayLike,
    y_clean: ArrayLike,
    pred_triggered: ArrayLike,
    y_true_triggered: ArrayLike,
    y_target_triggered: ArrayLike | Scalar,
) -> BackdoorMetrics:
    """Clean accuracy on the clean test set plus ASR and R-Acc on the triggered test set."""
    clean_acc = accuracy(pred_clean, y_clean)
    p, y, t = _eligible(pred_triggered, y_true_triggered, y_target_triggered)
    return BackdoorMetrics(
        clean_acc=clean_acc,
        asr=float(np.mean(p == t)),
        robust_acc=float(np.mean(p == y)),
        n_clean=len(_labels(y_clean, "y_clean")),
        n_triggered=len(p),
    )


def defense_effectiveness_rate(acc_before: Scalar, acc_after: Scalar, asr_before: Scalar, asr_after: Scalar) -> float:
    """DER = [max(0, ΔASR) − max(0, ΔACC) + 1] / 2 with ΔX = X_before − X_after; in [0, 1], 0.5 = no effect.

    The accuracy drop is *subtracted*: BackdoorBench's implementation adds it (a sign bug that rewards a defense
    for destroying clean accuracy). An accuracy gain or an ASR rise is clipped to 0, neither rewarded nor punished.
    """
    acc_b, acc_a = _fraction(acc_before, "acc_before"), _fraction(acc_after, "acc_after")
    asr_b, asr_a = _fraction(asr_before, "asr_before"), _fraction(asr_after, "asr_after")
    return (max(0.0, asr_b - asr_a) - max(0.0, acc_b - acc_a) + 1.0) / 2.0


def robust_improvement_rate(racc_before: Scalar, racc_after: Scalar, acc_before: Scalar, acc_after: Scalar) -> float:
    """RIR = [max(0, −ΔR-Acc) − max(0, ΔACC) + 1] / 2 with ΔX = X_before − X_after; in [0, 1].

    Rewards a rise in robust accuracy, penalises a drop in clean accuracy, same convention as DER.
    """
    r_b, r_a = _fraction(racc_before, "racc_before"), _fraction(racc_after, "racc_after")
    acc_b, acc_a = _fraction(acc_before, "acc_before"), _fraction(acc_after, "acc_after")
    return (max(0.0, r_a - r_b) - max(0.0, acc_b - acc_a) + 1.0) / 2.0


# ----------------------------------------------------------------------------------------------------------------
# Poison detection
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionMetrics:
    """Quality of a poison detector / sanitizer; "positive" = flagged as poison.

    ``tpr`` (= ``recall``) is the elimination rate, ``fpr`` the sacrifice rate of clean samples. An undefined
    rate (0/0: no poison for tpr/recall, no clean for fpr, nothing flagged for precision) is 0.0, and f1 is 0.0
    when precision + recall is 0. ``roc_auc`` is None when no scores were given or only one class is present.
    """

    tp: int
    fp: int
    tn: int
    fn: int
    tpr: float
    fpr: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None
    n_poison: int
    n_clean: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detection_metrics(
    is_poison_true: ArrayLike, flagged_pred: ArrayLike, scores: ArrayLike | None = None
) -> DetectionMetrics:
    """Confusion counts and rates of boolean ``flagged_pred``; ROC-AUC from the continuous ``scores``.

    ``scores`` are higher = more suspicious. ROC-AUC is computed from them, never from the thresholded flags:
    a thresholded AUC only measures one operating point (TrojanZoo's mistake). Infinite scores are allowed.
    """
    truth = _binary(is_poison_true, "is_poison_true")
    flag = _binary(flagged_pred, "flagged_pred")
    _same_length(len(truth), "is_poison_true", len(flag), "flagged_pred")

    tp = int(np.sum(truth & flag))
    fp = int(np.sum(~truth & flag))
    tn = int(np.sum(~truth & ~flag))
    fn = int(np.sum(truth & ~flag))
    n_poison, n_clean = tp + fn, tn + fp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, n_poison)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    roc_auc: float | None = None
    if scores is not None:
        s = _nonempty_1d(_to_numpy(scores, "scores"), "scores").astype(np.float64)
        _same_length(len(truth), "is_poison_true", len(s), "scores")
        if np.isnan(s).any():
            raise UnpoisonError("scores: contains NaN")
        if n_poison and n_clean:
            from sklearn.metrics import roc_auc_score

            # AUC depends only on the order of the scores; dense ranks keep order and ties and turn ±inf
            # (a detector's "certainly poison") into finite values sklearn accepts.
            ranks = np.unique(s, return_inverse=True)[1]
            roc_auc = float(roc_auc_score(truth, ranks))

    return DetectionMetrics(
        tp=tp, fp=fp, tn=tn, fn=fn, tpr=recall, fpr=_ratio(fp, n_clean), precision=precision, recall=recall,
        f1=f1, roc_auc=roc_auc, n_poison=n_poison, n_clean=n_clean,
    )


# ----------------------------------------------------------------------------------------------------------------
# Availability (indiscriminate / unlearnable) poisoning
# ----------------------------------------------------------------------------------------------------------------


def recovery_ratio(acc_defended: Scalar, acc_poisoned: Scalar, acc_clean: Scalar) -> float:
    """(acc_defended − acc_poisoned) / (acc_clean − acc_poisoned): 1 = full recovery, 0 = none.

    Not clipped: above 1 means the defense beat the clean reference, below 0 that it made things worse.
    Undefined (raises) when the poison did not change accuracy.
    """
    d = _fraction(acc_defended, "acc_defended")
    p = _fraction(acc_poisoned, "acc_poisoned")
    c = _fraction(acc_clean, "acc_clean")
    if math.isclose(c, p, rel_tol=0.0, abs_tol=1e-12):
        raise UnpoisonError(f"recovery ratio undefined: acc_clean equals acc_poisoned ({c})")
    return (d - p) / (c - p)


@dataclass(frozen=True)
class AvailabilityMetrics:
    """Accuracies of the clean reference, the poisoned and the defended model, and the recovery ratio."""

    clean_acc_reference: float
    poisoned_acc: float
    defended_acc: float
    recovery: float
    peak_defended_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def availability_metrics(
    clean_acc_reference: Scalar,
    poisoned_acc: Scalar,
    defended_acc: Scalar,
    peak_defended_acc: Scalar | None = None,
) -> AvailabilityMetrics:
    """Build :class:`AvailabilityMetrics`; ``recovery`` uses the final (not peak) defended accuracy."""
    return AvailabilityMetrics(
        clean_acc_reference=_fraction(clean_acc_reference, "clean_acc_reference"),
        poisoned_acc=_fraction(poisoned_acc, "poisoned_acc"),
        defended_acc=_fraction(defended_acc, "defended_acc"),
        recovery=recovery_ratio(defended_acc, poisoned_acc, clean_acc_reference),
        peak_defended_acc=None if peak_defended_acc is None else _fraction(peak_defended_acc, "peak_defended_acc"),
    )


# ----------------------------------------------------------------------------------------------------------------
# Purification fidelity (image space: how much of the poison a purifier removed, and what it cost the image)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurificationFidelity:
    """Image-space view of a purification, with the clean originals known (a benchmark, not a deployment, metric).

    ``poison_retained`` is the share of the perturbation δ = poisoned − clean still in the purified images: the
    least-squares coefficient Σ⟨purified − clean, δ⟩ / Σ⟨δ, δ⟩ over the set (1 = untouched, 0 = δ gone, even if
    the purifier added other changes). The PSNRs are against the clean originals, in dB, on the 8-bit scale.
    """

    psnr_poisoned: float
    psnr_purified: float
    poison_retained: float
    residual_rms: float  # RMS of purified − clean on the [0, 1] scale
    perturbation_rms: float  # RMS of poisoned − clean on the [0, 1] scale
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def psnr_from_mse(mse: float) -> float:
    """PSNR (dB) for a mean squared error on the [0, 1] scale (peak 1); infinite for a perfect match."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def _images(named: tuple[tuple[Any, str], ...]) -> list[np.ndarray]:
    """uint8 (0–255) or float ([0, 1]) image arrays → float64 on [0, 1], all of one non-empty shape."""
    arrays = []
    for x, name in named:
        a = _to_numpy(x, name)
        arrays.append(a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64))
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim < 2 or arrays[0].size == 0:
        raise UnpoisonError(f"{', '.join(n for _, n in named)} must be non-empty image arrays of one shape; got "
                            f"{', '.join(str(a.shape) for a in arrays)}")
    return arrays


def psnr(images: ArrayLike, reference: ArrayLike) -> float:
    """PSNR (dB) of ``images`` against ``reference`` over the whole set (peak 1 on [0, 1], i.e. 255 for uint8)."""
    a, b = _images(((images, "images"), (reference, "reference")))
    return psnr_from_mse(float(((a - b) ** 2).mean()))


def purification_fidelity(purified: ArrayLike, clean: ArrayLike, poisoned: ArrayLike) -> PurificationFidelity:
    """:class:`PurificationFidelity` of ``purified`` against ``clean`` originals and the ``poisoned`` input.

    Images of any shape with the same size for all three: uint8 (0–255) or floats on [0, 1].
    """
    pur, cl, poi = _images(((purified, "purified"), (clean, "clean"), (poisoned, "poisoned")))
    delta, resid = poi - cl, pur - cl
    dd = float((delta * delta).sum())
    if dd == 0:
        raise UnpoisonError("poisoned equals clean: there is no perturbation to measure")
    return PurificationFidelity(
        psnr_poisoned=psnr_from_mse(float((delta * delta).mean())),
        psnr_purified=psnr_from_mse(float((resid * resid).mean())),
        poison_retained=float((resid * delta).sum()) / dd, residual_rms=float(np.sqrt((resid * resid).mean())),
        perturbation_rms=float(np.sqrt((delta * delta).mean())), n=int(pur.shape[0]))


# ----------------------------------------------------------------------------------------------------------------
# Per-class breakdown
# ----------------------------------------------------------------------------------------------------------------


def per_class_accuracy(pred: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Accuracy per true class, shape (num_classes,); NaN for a class with no samples (no data, not 0 %)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise UnpoisonError(f"num_classes: expected a positive integer, got {num_classes!r}")
    raw = _to_numpy(pred, "pred")
    if raw.ndim == 2 and raw.shape[1] != num_classes:
        raise UnpoisonError(f"pred: logits have {raw.shape[1]} classes, num_classes is {num_classes}")
    p = _predictions(raw, "pred")
    y = _labels(labels, "labels")
    _same_length(len(p), "pred", len(y), "labels")
    if y.max() >= num_classes:
        raise UnpoisonError(f"labels: class index {int(y.max())} out of range for num_classes={num_classes}")
    total = np.bincount(y, minlength=num_classes)
    correct = np.bincount(y[p == y], minlength=num_classes)
    return np.where(total > 0, correct / np.maximum(total, 1), np.nan)
