"""Every metric formula against values computed by hand on tiny arrays (no models, no data)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from unpoison.errors import UnpoisonError
from unpoison.metrics import (
    AvailabilityMetrics,
    BackdoorMetrics,
    DetectionMetrics,
    accuracy,
    attack_success_rate,
    availability_metrics,
    backdoor_metrics,
    defense_effectiveness_rate,
    detection_metrics,
    per_class_accuracy,
    psnr,
    purification_fidelity,
    recovery_ratio,
    robust_accuracy,
    robust_improvement_rate,
)

# ---------------------------------------------------------------------------------------------------- accuracy


def test_accuracy_indices():
    # pred [0,1,2,2] vs labels [0,1,1,2]: 3 of 4 match -> 0.75
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == pytest.approx(0.75)


def test_accuracy_logits_uses_argmax():
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 1.0], [0.5, 0.2, 0.9], [1.0, 0.0, -1.0]])
    # argmax rows: 0, 1, 2, 0 ; labels 0, 1, 1, 2 -> 2 of 4 -> 0.5
    assert accuracy(logits, torch.tensor([0, 1, 1, 2])) == pytest.approx(0.5)


def test_accuracy_accepts_bfloat16_tensor_with_grad():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.bfloat16, requires_grad=True)
    # argmax 1, 0 vs labels 1, 1 -> 0.5
    assert accuracy(logits, [1, 1]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("pred", "labels", "match"),
    [
        ([0, 1, 2], [0, 1], "length mismatch"),
        ([], [], "empty"),
        (np.zeros((2, 3, 1)), [0, 1], "shape"),
        ([[0.1, float("nan")], [0.2, 0.3]], [0, 1], "NaN"),
        ([0.5, 1.0], [0, 1], "integers"),
        ([0, 1], [-1, 1], ">= 0"),
    ],
)
def test_accuracy_bad_input(pred, labels, match):
    with pytest.raises(UnpoisonError, match=match):
        accuracy(pred, labels)


# ---------------------------------------------------------------------------------------------------- ASR / R-Acc


def test_asr_all_to_one_excludes_target_class_samples():
    true = np.array([0, 1, 2, 3, 0, 0])  # target 0: only indices 1, 2, 3 are eligible
    pred = np.array([0, 0, 0, 3, 0, 0])
    # eligible preds 0, 0, 3 -> 2 of 3 hit the target -> 2/3.
    # Without the exclusion it would be 5 of 6 (the three class-0 images "hit" trivially) -> 0.8333.
    asr = attack_success_rate(pred, true, 0)
    assert asr == pytest.approx(2 / 3)
    assert asr != pytest.approx(5 / 6)
    # target as a per-sample array gives the same number
    assert attack_success_rate(pred, true, np.zeros(6, dtype=int)) == pytest.approx(2 / 3)


def test_asr_three_of_four():
    # 4 eligible (true != 1), 3 predicted as 1 -> 0.75
    assert attack_success_rate([1, 1, 1, 0], [0, 2, 3, 0], 1) == pytest.approx(0.75)


def test_asr_all_to_all():
    true = np.array([0, 1, 2, 3])
    target = (true + 1) % 4  # 1, 2, 3, 0: none excluded
    pred = np.array([1, 2, 2, 1])
    # hits: idx0 (1==1), idx1 (2==2); misses idx2 (2!=3), idx3 (1!=0) -> 2/4 = 0.5
    assert attack_success_rate(pred, true, target) == pytest.approx(0.5)


def test_robust_accuracy():
    true = np.array([0, 1, 2, 3, 0])
    pred = np.array([0, 1, 0, 3, 2])
    # target 0: eligible idx 1, 2, 3 ; true-class hits idx1, idx3 -> 2/3 (idx0 correct but excluded, idx4 excluded)
    assert robust_accuracy(pred, true, 0) == pytest.approx(2 / 3)


def test_asr_all_samples_target_class_raises():
    with pytest.raises(UnpoisonError, match="no eligible"):
        attack_success_rate([0, 0], [0, 0], 0)


def test_asr_target_length_mismatch_raises():
    with pytest.raises(UnpoisonError, match="length mismatch"):
        attack_success_rate([0, 1, 2], [0, 1, 2], [1, 1])


def test_backdoor_metrics_and_json():
    m = backdoor_metrics(
        pred_clean=[0, 1, 2, 3], y_clean=[0, 1, 2, 0],  # 3/4 -> 0.75
        pred_triggered=[0, 0, 0, 3, 0], y_true_triggered=[0, 1, 2, 3, 3], y_target_triggered=0,
        # eligible idx 1..4 (4 images): target hits idx 1, 2, 4 -> 0.75 ; true-class hit idx 3 -> 0.25
    )
    assert m == BackdoorMetrics(clean_acc=0.75, asr=0.75, robust_acc=0.25, n_clean=4, n_triggered=4)
    assert json.loads(json.dumps(m.to_dict())) == m.to_dict()


# ---------------------------------------------------------------------------------------------------- DER / RIR


def test_der_typical_defense():
    # ΔASR = 0.9-0.1 = 0.8 ; ΔACC = 0.9-0.85 = 0.05 -> (0.8 - 0.05 + 1)/2 = 0.875
    der = defense_effectiveness_rate(acc_before=0.9, acc_after=0.85, asr_before=0.9, asr_after=0.1)
    assert der == pytest.approx(0.875)
    # BackdoorBench's buggy '+': (0.8 + 0.05 + 1)/2 = 0.925 -- accuracy loss would be rewarded
    assert der != pytest.approx((0.8 + 0.05 + 1) / 2)


def test_der_accuracy_gain_not_rewarded():
    # ΔACC = 0.8-0.9 = -0.1 -> max(0,·)=0 ; ΔASR = 0.5 -> (0.5 - 0 + 1)/2 = 0.75
    assert defense_effectiveness_rate(0.8, 0.9, 0.6, 0.1) == pytest.approx(0.75)


def test_der_asr_increase_clipped():
    # ΔASR = 0.2-0.5 = -0.3 -> 0 ; ΔACC = 0.9-0.7 = 0.2 -> (0 - 0.2 + 1)/2 = 0.4
    assert defense_effectiveness_rate(0.9, 0.7, 0.2, 0.5) == pytest.approx(0.4)
    # no change at all -> 0.5 ; perfect -> 1.0 ; worst -> 0.0
    assert defense_effectiveness_rate(0.9, 0.9, 0.9, 0.9) == pytest.approx(0.5)
    assert defense_effectiveness_rate(0.9, 0.9, 1.0, 0.0) == pytest.approx(1.0)
    assert defense_effectiveness_rate(1.0, 0.0, 0.0, 1.0) == pytest.approx(0.0)


def test_der_rejects_percentages():
    with pytest.raises(UnpoisonError, match="fraction"):
        defense_effectiveness_rate(90.0, 85.0, 90.0, 10.0)


def test_rir():
    # R-Acc 0.05 -> 0.7: -ΔR = 0.65 ; ΔACC = 0.9-0.85 = 0.05 -> (0.65 - 0.05 + 1)/2 = 0.8
    assert robust_improvement_rate(0.05, 0.7, 0.9, 0.85) == pytest.approx(0.8)
    # R-Acc drops 0.6 -> 0.4: clipped to 0 ; ACC rises: clipped to 0 -> 0.5
    assert robust_improvement_rate(0.6, 0.4, 0.8, 0.9) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------- detection


def test_detection_hand_case():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)  # 3 poison, 5 clean
    flag = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    m = detection_metrics(truth, flag)
    # tp=2 (idx0,1), fn=1 (idx2), fp=1 (idx3), tn=4
    assert (m.tp, m.fp, m.tn, m.fn, m.n_poison, m.n_clean) == (2, 1, 4, 1, 3, 5)
    assert m.tpr == pytest.approx(2 / 3)  # 2/(2+1)
    assert m.recall == m.tpr
    assert m.fpr == pytest.approx(0.2)  # 1/(1+4)
    assert m.precision == pytest.approx(2 / 3)  # 2/(2+1)
    assert m.f1 == pytest.approx(2 / 3)  # 2·(2/3)·(2/3)/(4/3)
    assert m.roc_auc is None  # no scores given


def test_roc_auc_uses_scores_not_flags():
    truth = [0, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.9]  # perfectly ranked -> AUC 1.0
    flag = [0, 1, 0, 1]  # a bad threshold: TPR 0.5, FPR 0.5 -> thresholded AUC would be 0.5
    m = detection_metrics(truth, flag, scores)
    assert m.roc_auc == pytest.approx(1.0)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, flag) == pytest.approx(0.5)  # what TrojanZoo's approach would report


def test_roc_auc_ties_and_infinite_scores():
    # poison scores {inf, 0.5}, clean {0.5, -inf}: pairs (p>c) win 3, tie (0.5,0.5) counts 1/2 -> 3.5/4 = 0.875
    m = detection_metrics([1, 1, 0, 0], [1, 0, 0, 0], torch.tensor([math.inf, 0.5, 0.5, -math.inf]))
    assert m.roc_auc == pytest.approx(0.875)


def test_single_class_roc_auc_is_none_and_zero_division():
    m = detection_metrics([0, 0, 0], [0, 0, 0], [0.1, 0.5, 0.9])
    assert m.roc_auc is None
    # nothing flagged: precision 0/0 -> 0.0 ; no poison: recall 0/0 -> 0.0 ; f1 -> 0.0 ; fpr = 0/3 = 0.0
    assert (m.precision, m.recall, m.f1, m.fpr) == (0.0, 0.0, 0.0, 0.0)


def test_detection_bad_input():
    with pytest.raises(UnpoisonError, match="length mismatch"):
        detection_metrics([1, 0], [1, 0, 0])
    with pytest.raises(UnpoisonError, match="NaN"):
        detection_metrics([1, 0], [1, 0], [0.3, float("nan")])
    with pytest.raises(UnpoisonError, match="length mismatch"):
        detection_metrics([1, 0], [1, 0], [0.3, 0.2, 0.1])
    with pytest.raises(UnpoisonError, match="0/1"):
        detection_metrics([2, 0], [1, 0])


def test_detection_to_dict_json():
    m = detection_metrics(np.array([1, 0, 1, 0]), np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.4, 0.2]))
    assert isinstance(m, DetectionMetrics)
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["roc_auc"] == pytest.approx(1.0)  # 0.9, 0.4 both above 0.2, 0.1


# ---------------------------------------------------------------------------------------------------- availability


def test_recovery_ratio():
    # (0.8369 - 0.2717)/(0.9495 - 0.2717) = 0.5652/0.6778 ≈ 0.8339
    assert recovery_ratio(0.8369, 0.2717, 0.9495) == pytest.approx(0.8339, abs=1e-4)


def test_recovery_undefined_raises():
    with pytest.raises(UnpoisonError, match="undefined"):
        recovery_ratio(0.8, 0.5, 0.5)


def test_availability_metrics_json():
    m = availability_metrics(0.9495, 0.2717, 0.8369, peak_defended_acc=np.float32(0.85))
    assert isinstance(m, AvailabilityMetrics)
    assert m.recovery == pytest.approx(0.8339, abs=1e-4)
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    m2 = availability_metrics(0.9, 0.3, 0.6)
    assert m2.peak_defended_acc is None
    assert m2.recovery == pytest.approx(0.5)  # (0.6-0.3)/(0.9-0.3) = 0.3/0.6


# ---------------------------------------------------------------------------------------------------- per class


def test_per_class_accuracy():
    pred = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([0, 1, 1, 2, 2, 0])
    # class0: idx0 ok, idx5 wrong -> 0.5 ; class1: idx1 wrong, idx2 ok -> 0.5
    # class2: idx3, idx4 ok -> 1.0 ; class3: no samples -> NaN
    out = per_class_accuracy(pred, labels, 4)
    np.testing.assert_allclose(out, [0.5, 0.5, 1.0, np.nan])


def test_per_class_accuracy_bad_input():
    with pytest.raises(UnpoisonError, match="out of range"):
        per_class_accuracy([0, 1], [0, 5], 3)
    with pytest.raises(UnpoisonError, match="classes"):
        per_class_accuracy(np.zeros((2, 4)), [0, 1], 3)


# ------------------------------------------------------------------------------------------ purification fidelity


def test_purification_fidelity_known_cases():
    rng = np.random.default_rng(0)
    clean = rng.integers(20, 236, size=(6, 8, 8, 3)).astype(np.uint8)
    delta = rng.choice([-8, 8], size=clean.shape)
    poisoned = (clean.astype(int) + delta).astype(np.uint8)
    untouched = purification_fidelity(poisoned, clean, poisoned)
    assert untouched.poison_retained == pytest.approx(1.0)
    assert untouched.psnr_purified == pytest.approx(untouched.psnr_poisoned)
    assert untouched.psnr_poisoned == pytest.approx(10 * math.log10(255**2 / 64))  # every error is ±8 levels
    assert purification_fidelity(clean, clean, poisoned).poison_retained == 0.0
    assert math.isinf(purification_fidelity(clean, clean, poisoned).psnr_purified)
    half = (clean.astype(int) + delta // 2).astype(np.uint8)
    assert purification_fidelity(half, clean, poisoned).poison_retained == pytest.approx(0.5)
    # noise orthogonal-in-expectation to δ lowers PSNR but leaves the retained share near 0; floats on [0, 1] work
    noisy = clean / 255.0 + rng.normal(0, 0.02, clean.shape)
    f = purification_fidelity(noisy, clean / 255.0, poisoned / 255.0)
    assert abs(f.poison_retained) < 0.1 and f.residual_rms == pytest.approx(0.02, rel=0.1) and f.n == 6
    assert set(f.to_dict()) >= {"psnr_poisoned", "psnr_purified", "poison_retained"}
    assert psnr(poisoned, clean) == pytest.approx(untouched.psnr_poisoned) and math.isinf(psnr(clean, clean))


def test_purification_fidelity_rejects_bad_input():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(UnpoisonError, match="no perturbation"):
        purification_fidelity(x, x, x)
    with pytest.raises(UnpoisonError, match="one shape"):
        purification_fidelity(x[:1], x, x + 1)
