"""cnnkit.metrics functions against seed 000's slides, the formulas and scikit-learn."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
import torchvision

from cnnkit import ConfigError, ShapeError
from cnnkit import metrics as M

# ------------------------------------------------------------ seed 000's confusion matrix
TP, FN, FP, TN = 18508, 53, 112, 166  # positive class "True" -> label 1, "Artefact" -> 0


def seed000_arrays():
    """y_true / y_pred holding exactly the slide's counts (shuffled)."""
    y_true = np.r_[np.ones(TP + FN, np.int64), np.zeros(FP + TN, np.int64)]
    y_pred = np.r_[np.ones(TP), np.zeros(FN), np.ones(FP), np.zeros(TN)].astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y_true))
    return y_true[perm], y_pred[perm]


def test_seed000_confusion_matrix_layout():
    yt, yp = seed000_arrays()
    cm = M.confusion_matrix(yt, yp)
    # rows = true class, columns = predicted (scikit-learn's layout)
    np.testing.assert_array_equal(cm, [[TN, FP], [FN, TP]])
    np.testing.assert_array_equal(cm, skm.confusion_matrix(yt, yp))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_seed000_functional_values_to_slide_rounding(as_tensor):
    yt, yp = seed000_arrays()
    if as_tensor:
        yt, yp = torch.from_numpy(yt), torch.from_numpy(yp)
    acc = M.accuracy_score(yt, yp)
    assert round(acc, 3) == 0.991
    assert round(M.recall_score(yt, yp), 3) == 0.997
    assert round(M.precision_score(yt, yp), 3) == 0.994
    assert round(M.balanced_accuracy_score(yt, yp), 2) == 0.80
    f1 = M.f1_score(yt, yp)
    assert round(f1, 4) == 0.9956
    assert math.floor(f1 * 1000) / 1000 == 0.995  # the deck truncates
    assert round(M.false_omission_rate(yt, yp), 2) == 0.24
    assert round(M.mean_iou(yt, yp), 3) == 0.746
    iou = M.jaccard_score(yt, yp, average=None)
    np.testing.assert_allclose(np.round(iou, 3), [0.502, 0.991])  # slide: 0.991 and 0.502
    assert round(M.jaccard_score(yt, yp, average="macro"), 3) == 0.746
    assert round(M.dice_score(yt, yp), 4) == 0.9956
    # and exactly the slide's formulas
    assert acc == (TP + TN) / (TP + TN + FP + FN)
    assert M.recall_score(yt, yp) == pytest.approx(TP / (TP + FN), abs=1e-15)
    assert M.precision_score(yt, yp) == pytest.approx(TP / (TP + FP), abs=1e-15)
    tpr, tnr = TP / (TP + FN), TN / (TN + FP)
    assert M.balanced_accuracy_score(yt, yp) == pytest.approx((tpr + tnr) / 2, abs=1e-15)
    assert M.specificity_score(yt, yp) == pytest.approx(tnr, abs=1e-15)
    ppv = TP / (TP + FP)
    assert f1 == pytest.approx(2 * ppv * tpr / (ppv + tpr), abs=1e-15)
    assert M.false_omission_rate(yt, yp) == pytest.approx(FN / (FN + TN), abs=1e-15)
    ref_iou = (TP / (TP + FP + FN) + TN / (TN + FP + FN)) / 2
    assert M.mean_iou(yt, yp) == pytest.approx(ref_iou, abs=1e-15)


def test_seed000_report():
    r = M.report([[TN, FP], [FN, TP]])
    assert round(r["accuracy"], 3) == 0.991
    assert round(r["recall"], 3) == 0.997
    assert round(r["precision"], 3) == 0.994
    assert round(r["balanced_accuracy"], 2) == 0.80
    assert round(r["f1"], 4) == 0.9956
    assert round(r["dice"], 4) == 0.9956
    assert round(r["false_omission_rate"], 2) == 0.24
    assert round(r["mean_iou"], 3) == 0.746
    np.testing.assert_allclose(np.round(r["iou"], 3), [0.502, 0.991])
    assert r["specificity"] == pytest.approx(TN / (TN + FP))
    np.testing.assert_array_equal(r["support"], [TN + FP, TP + FN])
    # the report of the functional path's matrix agrees with the functional scores
    yt, yp = seed000_arrays()
    r2 = M.report(torch.from_numpy(M.confusion_matrix(yt, yp, num_classes=2)))
    assert r2["f1"] == M.f1_score(yt, yp)
    assert r2["precision_macro"] == M.precision_score(yt, yp, average="macro")
    # the deck's "True" at index 0 instead: pos_label=0 gives the same numbers
    r0 = M.report([[TP, FN], [FP, TN]], pos_label=0)
    for k in ("precision", "recall", "f1", "specificity", "false_omission_rate"):
        assert r0[k] == pytest.approx(r[k])


# ---------------------------------------------------------------- random vs sklearn
def rand_data(seed, n_classes, n=200, missing_pred=(), shape=None):
    rng = np.random.default_rng(seed)
    yt = rng.integers(0, n_classes, n)
    yp = np.where(rng.random(n) < 0.6, yt, rng.integers(0, n_classes, n))
    for c in missing_pred:  # a class never predicted
        yp[yp == c] = (c + 1) % n_classes
    if shape is not None:
        yt, yp = yt.reshape(shape), yp.reshape(shape)
    return yt, yp


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


def sk_takes(ref, zd):
    """sklearn's jaccard_score does not take zero_division=nan."""
    return not (ref is skm.jaccard_score and isinstance(zd, float) and math.isnan(zd))


def assert_same(ours, ref):
    if isinstance(ref, np.ndarray):
        assert isinstance(ours, np.ndarray)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    else:
        assert isinstance(ours, float)
        if math.isnan(ref):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(ref, rel=1e-10, abs=1e-12)


SETWISE = [
    (M.precision_score, skm.precision_score),
    (M.recall_score, skm.recall_score),
    (M.f1_score, skm.f1_score),
    (M.jaccard_score, skm.jaccard_score),
    (M.dice_score, skm.f1_score),
]
ZDS = ["warn", 0, 1, np.nan]


CASES = [(2, "binary")] + [(n, a) for n in (2, 3, 5) for a in ("micro", "macro", "weighted", None)]


@pytest.mark.parametrize("ours,ref", SETWISE, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("n_classes,average", CASES)
def test_setwise_vs_sklearn(ours, ref, n_classes, average):
    for seed, missing in [(0, ()), (1, (1,)), (2, (0,))]:
        yt, yp = rand_data(seed, n_classes, missing_pred=missing)
        for zd in filter(lambda z: sk_takes(ref, z), ZDS):
            got = quiet(ours, yt, yp, average=average, zero_division=zd)
            assert_same(got, quiet(ref, yt, yp, average=average, zero_division=zd))


@pytest.mark.parametrize("ours,ref", SETWISE, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("zd", ZDS)
def test_setwise_zero_division_cases(ours, ref, zd):
    if not sk_takes(ref, zd):
        # our jaccard takes nan too: nan for the undefined label, which np.average spreads
        got = M.jaccard_score([0, 1], [0, 0], labels=[0, 1, 2], average=None, zero_division=zd)
        assert_same(got, np.array([0.5, 0.0, np.nan]))
        assert math.isnan(
            M.jaccard_score([0, 1], [0, 0], labels=[0, 2], average="macro", zero_division=zd)
        )
        return
    # class 3 in labels but absent from both; class 2 never predicted; class 4 never true
    yt = np.array([0, 0, 1, 1, 2, 2, 1, 0])
    yp = np.array([0, 1, 1, 1, 0, 4, 1, 0])
    for average in ["micro", "macro", "weighted", None]:
        for labels in [None, [0, 1, 2, 3, 4], [3, 2], [2, 3], [3]]:
            got = quiet(ours, yt, yp, average=average, labels=labels, zero_division=zd)
            want = quiet(ref, yt, yp, average=average, labels=labels, zero_division=zd)
            assert_same(got, want)
    # binary: no positives at all in truth / prediction
    for yt2, yp2 in [([0, 0, 0], [0, 0, 0]), ([0, 0, 1], [0, 0, 0]), ([0, 0, 0], [1, 0, 0])]:
        got = quiet(ours, yt2, yp2, zero_division=zd)
        assert_same(got, quiet(ref, yt2, yp2, zero_division=zd))


def test_warn_emits_undefined_metric_warning_like_sklearn():
    yt, yp = [0, 0, 1], [0, 0, 0]
    with pytest.warns(skm._classification.UndefinedMetricWarning):
        skm.precision_score(yt, yp)
    with pytest.warns(M.UndefinedMetricWarning, match="Precision is ill-defined"):
        assert M.precision_score(yt, yp) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.precision_score(yt, yp, zero_division=0) == 0.0


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0, math.inf])
@pytest.mark.parametrize("average", ["binary", "micro", "macro", "weighted", None])
def test_fbeta_vs_sklearn(beta, average):
    n_classes = 2 if average == "binary" else 4
    for seed, missing in [(3, ()), (4, (1,))]:
        yt, yp = rand_data(seed, n_classes, missing_pred=missing)
        for zd in ZDS:
            got = quiet(M.fbeta_score, yt, yp, beta=beta, average=average, zero_division=zd)
            want = quiet(skm.fbeta_score, yt, yp, beta=beta, average=average, zero_division=zd)
            assert_same(got, want)


@pytest.mark.parametrize("pos_label", [0, 1])
def test_binary_pos_label_and_noncontiguous_binary_labels(pos_label):
    yt, yp = rand_data(5, 2)
    for ours, ref in SETWISE:
        assert_same(ours(yt, yp, pos_label=pos_label), ref(yt, yp, pos_label=pos_label))
    yt3, yp3 = yt * 3, yp * 3  # labels {0, 3}: still binary, pos_label must be 0 or 3
    assert_same(M.recall_score(yt3, yp3, pos_label=3), skm.recall_score(yt3, yp3, pos_label=3))
    with pytest.raises(
        ConfigError, match=r"pos_label=1 is not a valid label. It should be one of \[0, 3\]"
    ):
        M.recall_score(yt3, yp3)
    with pytest.raises(ValueError, match=r"pos_label=1 is not a valid label"):
        skm.recall_score(yt3, yp3)


@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
def test_num_classes_equals_sklearn_labels_range(average):
    yt, yp = rand_data(6, 4, missing_pred=(2,))  # classes 0..3 seen, 4 and 5 never
    for ours, ref in SETWISE:
        got = quiet(ours, yt, yp, average=average, num_classes=6, zero_division=0)
        want = quiet(ref, yt, yp, average=average, labels=range(6), zero_division=0)
        assert_same(got, want)


@pytest.mark.parametrize("average", ["binary", "micro", "macro", "weighted", None])
def test_specificity_and_for_vs_sklearn_one_vs_rest(average):
    n_classes = 2 if average == "binary" else 4
    yt, yp = rand_data(7, n_classes, missing_pred=() if average == "binary" else (3,))
    mcm = skm.multilabel_confusion_matrix(yt, yp, labels=range(n_classes))
    tn, fp, fn = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0]
    support = fn + mcm[:, 1, 1]
    # per class: specificity = recall of "not c", FOR = 1 - precision of "not c"
    spec = np.array([skm.recall_score(yt != c, yp != c) for c in range(n_classes)])
    fomr = np.array([1 - skm.precision_score(yt != c, yp != c) for c in range(n_classes)])
    ref = {
        None: (spec, fomr),
        "binary": (spec[1], fomr[1]),
        "macro": (spec.mean(), fomr.mean()),
        "weighted": (np.average(spec, weights=support), np.average(fomr, weights=support)),
        "micro": (tn.sum() / (tn.sum() + fp.sum()), fn.sum() / (fn.sum() + tn.sum())),
    }[average]
    assert_same(M.specificity_score(yt, yp, average=average), ref[0])
    assert_same(M.false_omission_rate(yt, yp, average=average), ref[1])


def test_specificity_zero_division():
    # everything is class 0: class 0 has no negatives (TN + FP = 0)
    yt, yp = [0, 0, 0], [0, 0, 0]
    assert M.specificity_score(yt, yp, average=None, num_classes=2, zero_division=0)[0] == 0.0
    assert M.specificity_score(yt, yp, average=None, num_classes=2, zero_division=1)[0] == 1.0
    assert M.specificity_score(yt, yp, pos_label=1, zero_division=1) == 1.0  # class 1: TN=3
    assert math.isnan(M.false_omission_rate(yt, yp, pos_label=0, zero_division=np.nan))


def test_dice_is_set_formula():
    rng = np.random.default_rng(8)
    a = rng.random((4, 16, 16)) < 0.3
    b = rng.random((4, 16, 16)) < 0.3
    ref = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert M.dice_score(a, b) == pytest.approx(ref, abs=1e-15)
    assert M.jaccard_score(a, b) == pytest.approx((a & b).sum() / (a | b).sum(), abs=1e-15)


@pytest.mark.parametrize("n_classes", [2, 4, 7])
def test_accuracy_balanced_vs_sklearn(n_classes):
    for seed in range(3):
        yt, yp = rand_data(seed, n_classes, missing_pred=(1,) if seed else ())
        assert_same(M.accuracy_score(yt, yp), skm.accuracy_score(yt, yp))
        assert_same(
            M.accuracy_score(yt, yp, normalize=False),
            float(skm.accuracy_score(yt, yp, normalize=False)),
        )
        for adjusted in (False, True):
            assert_same(
                M.balanced_accuracy_score(yt, yp, adjusted=adjusted),
                skm.balanced_accuracy_score(yt, yp, adjusted=adjusted),
            )


def test_balanced_accuracy_class_only_in_pred_warns_like_sklearn():
    yt, yp = [0, 0, 1, 1], [0, 2, 1, 1]
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        want = skm.balanced_accuracy_score(yt, yp)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert_same(M.balanced_accuracy_score(yt, yp, num_classes=5), want)


@pytest.mark.parametrize("n_classes", [2, 3, 6])
def test_confusion_matrix_vs_sklearn(n_classes):
    yt, yp = rand_data(9, n_classes, missing_pred=(1,))
    np.testing.assert_array_equal(M.confusion_matrix(yt, yp), skm.confusion_matrix(yt, yp))
    assert M.confusion_matrix(yt, yp).dtype == np.int64
    for normalize in ("true", "pred", "all"):
        np.testing.assert_allclose(
            M.confusion_matrix(yt, yp, normalize=normalize),
            skm.confusion_matrix(yt, yp, normalize=normalize),
            rtol=1e-10,
            atol=1e-12,
        )
    labs = list(range(n_classes + 2))
    np.testing.assert_array_equal(
        M.confusion_matrix(yt, yp, num_classes=n_classes + 2),
        skm.confusion_matrix(yt, yp, labels=labs),
    )
    for labels in ([1, 0], [n_classes - 1, 0, n_classes + 3], [0]):
        want = quiet(skm.confusion_matrix, yt, yp, labels=labels)
        np.testing.assert_array_equal(M.confusion_matrix(yt, yp, labels=labels), want)


def test_confusion_matrix_present_labels_only_and_large_indices():
    yt = np.array([0, 2, 5000, 2, 0, 5000, 7])
    yp = np.array([2, 2, 5000, 0, 0, 7, 7])
    np.testing.assert_array_equal(M.confusion_matrix(yt, yp), skm.confusion_matrix(yt, yp))
    for average in ("micro", "macro", "weighted"):  # > DENSE_CM_LIMIT classes: 1D counts
        assert_same(
            quiet(M.precision_score, yt, yp, average=average),
            quiet(skm.precision_score, yt, yp, average=average),
        )
        assert_same(
            quiet(M.jaccard_score, yt, yp, average=average, num_classes=6000, zero_division=0),
            quiet(skm.jaccard_score, yt, yp, average=average, labels=range(6000), zero_division=0),
        )


def test_per_pixel_inputs_and_input_types():
    yt, yp = rand_data(10, 4, n=2 * 8 * 8, shape=(2, 8, 8))
    ft, fp = yt.ravel(), yp.ravel()
    np.testing.assert_array_equal(
        M.confusion_matrix(torch.from_numpy(yt), torch.from_numpy(yp), num_classes=4),
        skm.confusion_matrix(ft, fp, labels=range(4)),
    )
    assert_same(M.f1_score(yt, yp, average="macro"), skm.f1_score(ft, fp, average="macro"))
    assert_same(M.jaccard_score(yt, yp, average=None), skm.jaccard_score(ft, fp, average=None))
    # floats holding integers, int32, lists, (N,) vs (N, 1)
    assert_same(
        M.accuracy_score(yt.astype(np.float32), yp.astype(np.int32)), skm.accuracy_score(ft, fp)
    )
    assert_same(M.accuracy_score(ft.tolist(), fp[:, None]), skm.accuracy_score(ft, fp))
    assert isinstance(M.precision_score(yt, yp, average=None), np.ndarray)
    assert isinstance(M.confusion_matrix(yt, yp), np.ndarray)


@pytest.mark.parametrize("num_classes", [None, 5])
def test_mean_iou_vs_sklearn_and_ignore_index(num_classes):
    yt, yp = rand_data(11, 4, n=3 * 10 * 10, shape=(3, 10, 10))
    ft, fp = yt.ravel(), yp.ravel()
    present = np.union1d(ft, fp)
    ref = skm.jaccard_score(ft, fp, labels=present, average="macro")
    assert_same(M.mean_iou(yt, yp, num_classes=num_classes), ref)
    # class 4 (num_classes=5) is absent from both and is ignored, unlike jaccard's macro
    if num_classes:
        assert M.mean_iou(yt, yp, num_classes) > quiet(
            M.jaccard_score, yt, yp, average="macro", num_classes=5
        )
    void = yt.copy()
    void[:, :2, :] = 255  # unlabelled pixels
    keep = void.ravel() != 255
    ref_void = skm.jaccard_score(ft[keep], fp[keep], average="macro")
    assert_same(M.mean_iou(void, yp, num_classes=num_classes, ignore_index=255), ref_void)
    assert_same(
        M.confusion_matrix(void, yp, ignore_index=255).astype(float),
        skm.confusion_matrix(ft[keep], fp[keep]).astype(float),
    )
    assert_same(
        M.accuracy_score(void, yp, ignore_index=255), skm.accuracy_score(ft[keep], fp[keep])
    )


def test_mean_iou_class_only_in_prediction_counts():
    yt, yp = [0, 0, 1, 1], [0, 2, 1, 1]
    assert M.mean_iou(yt, yp) == pytest.approx((1 / 2 + 1 + 0) / 3)


# --------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("n_classes", [3, 5, 8])
def test_top_k_vs_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    yt = rng.integers(0, n_classes, 300)
    scores = rng.normal(size=(300, n_classes))
    ties = rng.integers(0, 3, size=(300, n_classes)).astype(float)  # many ties
    for s in (scores, ties):
        for k in range(1, n_classes + 1):
            want = quiet(skm.top_k_accuracy_score, yt, s, k=k, labels=range(n_classes))
            assert_same(quiet(M.top_k_accuracy_score, yt, s, k), want)
            want_n = quiet(
                skm.top_k_accuracy_score, yt, s, k=k, labels=range(n_classes), normalize=False
            )
            assert_same(
                quiet(M.top_k_accuracy_score, yt, torch.from_numpy(s), k, normalize=False), want_n
            )


def test_top_k_per_pixel_binary_and_labels():
    rng = np.random.default_rng(12)
    s = rng.normal(size=(2, 4, 5, 6))
    yt = rng.integers(0, 4, (2, 5, 6))
    flat_s = np.moveaxis(s, 1, -1).reshape(-1, 4)
    want = skm.top_k_accuracy_score(yt.ravel(), flat_s, k=2, labels=range(4))
    assert_same(M.top_k_accuracy_score(yt, s, k=2), want)
    # labels naming the columns
    labels = [2, 5, 7, 9]
    yl = np.array(labels)[yt.ravel()]
    assert_same(
        M.top_k_accuracy_score(yl, flat_s, k=2, labels=labels),
        skm.top_k_accuracy_score(yl, flat_s, k=2, labels=labels),
    )
    # binary: one score per sample, probabilities and logits
    yb = rng.integers(0, 2, 100)
    for sb in (rng.random(100), rng.normal(size=100)):
        for k in (1, 2):
            want = quiet(skm.top_k_accuracy_score, yb, sb, k=k)
            assert_same(quiet(M.top_k_accuracy_score, yb, sb, k), want)


# --------------------------------------------------------------------------- boxes
def random_boxes(rng, n):
    xy = rng.random((n, 2)) * 10
    wh = rng.random((n, 2)) * 5 + 0.1
    return torch.from_numpy(np.concatenate([xy, xy + wh], 1))


def test_box_iou_vs_torchvision():
    rng = np.random.default_rng(13)
    a, b = random_boxes(rng, 30), random_boxes(rng, 20)
    ref = torchvision.ops.box_iou(a, b)
    torch.testing.assert_close(M.box_iou(a, b), ref)
    np.testing.assert_allclose(M.box_iou(a.numpy(), b.numpy()), ref.numpy(), rtol=1e-10, atol=1e-12)
    b2 = random_boxes(rng, 30)
    diag = torch.diagonal(torchvision.ops.box_iou(a, b2))
    torch.testing.assert_close(M.matched_box_iou(a, b2), diag)
    assert M.mean_box_iou(a, b2) == pytest.approx(float(diag.mean()))
    assert M.mean_box_iou(a, a) == pytest.approx(1.0)
    # empty boxes: IoU 0 (torchvision: nan), disjoint boxes 0
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert float(M.matched_box_iou(z, z)[0]) == 0.0
    assert M.mean_box_iou([[0, 0, 1, 1]], [[2, 2, 3, 3]]) == 0.0
    assert M.mean_box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]]) == pytest.approx(2 / 6)


def test_box_errors():
    with pytest.raises(ShapeError, match=r"\(N, 4\).*\(3, 5\)"):
        M.box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match=r"box 1 = \[2.0, 0.0, 1.0, 1.0\]"):
        M.box_iou(torch.tensor([[0.0, 0, 1, 1], [2, 0, 1, 1]]), torch.zeros(1, 4))
    with pytest.raises(ShapeError, match=r"\(2, 4\) and \(3, 4\)"):
        M.matched_box_iou(torch.zeros(2, 4), torch.zeros(3, 4))


# ------------------------------------------------------------------------ bad input
def test_errors_shape_and_values():
    with pytest.raises(ShapeError, match=r"y_true of shape \(3,\) and y_pred of shape \(4,\)"):
        M.accuracy_score([0, 1, 1], [0, 1, 1, 0])
    with pytest.raises(ShapeError, match=r"empty"):
        M.f1_score([], [])
    with pytest.raises(ShapeError, match=r"ignore_index=9"):
        M.mean_iou([9, 9], [0, 1], ignore_index=9)
    with pytest.raises(ConfigError, match=r"y_true .* received the label -1"):
        M.confusion_matrix([0, -1], [0, 1])
    with pytest.raises(ConfigError, match=r"y_pred .* received the label -3"):
        M.precision_score([0, 1], [0, -3])
    with pytest.raises(ConfigError, match=r"y_pred contains the label 5 but num_classes=3"):
        M.confusion_matrix([0, 1], [0, 5], num_classes=3)
    with pytest.raises(ConfigError, match=r"y_true contains the label 3 but num_classes=3"):
        M.mean_iou(np.array([[3, 1]]), np.array([[0, 1]]), num_classes=3)
    with pytest.raises(ConfigError, match=r"received the value 0.5"):
        M.accuracy_score([0.5, 1.0], [0, 1])
    with pytest.raises(ConfigError, match=r"dtype <U1"):
        M.accuracy_score(["a", "b"], ["a", "b"])
    with pytest.raises(ConfigError, match=r"num_classes must be >= 1; received 0"):
        M.confusion_matrix([0], [0], num_classes=0)
    with pytest.raises(ConfigError, match=r"received 2.5"):
        M.confusion_matrix([0], [0], num_classes=2.5)


def test_errors_average_and_labels():
    yt, yp = rand_data(14, 3)
    with pytest.raises(ConfigError, match=r"Unknown average 'macroo'.*Did you mean 'macro'"):
        M.f1_score(yt, yp, average="macroo")
    with pytest.raises(ConfigError, match=r"Unknown average 'samples'"):
        M.recall_score(yt, yp, average="samples")
    msg = r"Target is multiclass but average='binary'.*labels \[0, 1, 2\].*one of \[None, 'micro'"
    with pytest.raises(ConfigError, match=msg):
        M.precision_score(yt, yp)
    with pytest.raises(ValueError, match=r"Target is multiclass but average='binary'"):
        skm.precision_score(yt, yp)
    with pytest.raises(ConfigError, match=r"num_classes=3"):
        M.jaccard_score([0, 1], [0, 1], num_classes=3)
    with pytest.raises(ConfigError, match=r"labels must be unique; received \[1, 1\]"):
        M.f1_score(yt, yp, average="macro", labels=[1, 1])
    with pytest.raises(ConfigError, match=r"labels must be < num_classes=3; received \[0, 4\]"):
        M.f1_score(yt, yp, average="macro", labels=[0, 4], num_classes=3)
    with pytest.raises(ConfigError, match=r"At least one label specified must be in y_true"):
        M.confusion_matrix([0, 1], [0, 1], labels=[5])
    with pytest.raises(ConfigError, match=r"zero_division must be .* received 0.3"):
        M.f1_score(yt, yp, average="macro", zero_division=0.3)
    with pytest.raises(ConfigError, match=r"beta must be a number >= 0; received -1"):
        M.fbeta_score(yt, yp, beta=-1, average="macro")
    with pytest.raises(ConfigError, match=r"Unknown normalize 'rows'"):
        M.confusion_matrix(yt, yp, normalize="rows")


def test_errors_top_k_and_report():
    s = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ConfigError, match=r"k must be a positive int; received 0"):
        M.top_k_accuracy_score([0, 1, 2, 0], s, 0)
    with pytest.raises(ShapeError, match=r"y_true \(4,\) and y_score \(4, 3, 1, 1\)"):
        M.top_k_accuracy_score([0, 1, 2, 0], s[:, :, None, None], 1)
    with pytest.raises(ConfigError, match=r"label 3 but y_score has 3 classes"):
        M.top_k_accuracy_score([0, 1, 3, 0], s, 1)
    with pytest.warns(M.UndefinedMetricWarning, match=r"'k' \(3\) greater than or equal"):
        assert M.top_k_accuracy_score([0, 1, 2, 0], s, 3) == 1.0
    with pytest.raises(ShapeError, match=r"square.*\(2, 3\)"):
        M.report(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match=r"-4"):
        M.report([[1, -4], [0, 2]])
    with pytest.raises(ShapeError, match=r"all zeros"):
        M.report(np.zeros((2, 2)))


def test_report_multiclass_equals_functional():
    yt, yp = rand_data(15, 4, missing_pred=(3,))
    cm = M.confusion_matrix(yt, yp, num_classes=4)
    r = M.report(cm)
    assert_same(r["accuracy"], skm.accuracy_score(yt, yp))
    assert_same(r["balanced_accuracy"], skm.balanced_accuracy_score(yt, yp))
    for key, ref in [("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score), ("dice", skm.f1_score), ("iou", skm.jaccard_score)]:  # fmt: skip
        for avg in ("macro", "micro", "weighted"):
            assert_same(r[f"{key}_{avg}"], quiet(ref, yt, yp, average=avg, zero_division=0))
        assert_same(r[f"{key}_per_class"], quiet(ref, yt, yp, average=None, zero_division=0))
    assert_same(r["precision"], r["precision_macro"])
    assert_same(r["specificity_per_class"], M.specificity_score(yt, yp, average=None))
    assert_same(r["false_omission_rate_macro"], M.false_omission_rate(yt, yp, average="macro"))
    assert_same(r["mean_iou"], M.mean_iou(yt, yp))


def test_large_segmentation_is_fast():
    import time

    g = torch.Generator().manual_seed(0)
    yt = torch.randint(0, 21, (8, 256, 256), generator=g)
    yp = torch.where(
        torch.rand(yt.shape, generator=g) < 0.7, yt, torch.randint(0, 21, yt.shape, generator=g)
    )
    t0 = time.perf_counter()
    m = M.mean_iou(yt, yp, num_classes=21)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed  # 524288 pixels
    cm = np.zeros((21, 21), np.int64)
    np.add.at(cm, (yt.numpy().ravel(), yp.numpy().ravel()), 1)
    tp = np.diag(cm)
    assert m == pytest.approx(np.mean(tp / (cm.sum(0) + cm.sum(1) - tp)), abs=1e-14)
