"""The quantization report says what its images can tell (issue 36, item 10): README command 1
holds back 7 unlabelled crops of the bundled photos, where one disagreement is 14 points."""

import pytest

from edgeeff.export.quantreport import MIN_IMAGES_FOR_ESTIMATE, QuantReport


def _rep(n: int, agree: int, **kw) -> QuantReport:
    return QuantReport(images=n, top1_agreement=agree / n, mean_abs_score_error=0.01,
                       max_abs_score_error=0.2, **kw)


def test_seven_unlabelled_images_give_agreement_not_a_drop():
    r = _rep(7, 5, labelled=False)
    line = r.summary()
    assert "agreed with float32 on 5 of 7" in line and "drop:" not in line
    assert "too few to estimate" in line and "--calib" in line and "edgeeff eval" in line
    d = r.to_dict()
    assert d["agreeing"] == 5 and d["can_estimate_accuracy"] is False and d["labelled"] is False
    assert d["top1_drop_points"] == pytest.approx(28.57)  # what --max-int8-drop still checks
    back = QuantReport.from_dict(d)  # the card's section reads back (agreement rounded)
    assert (back.agreeing, back.labelled, back.images, back.summary()) == (5, False, 7, line)


def test_enough_labelled_images_give_a_drop():
    r = _rep(100, 97, labelled=True, labels_note="from sub-folder names", float_top1=0.93,
             int8_top1=0.92)
    assert r.can_estimate_accuracy and r.images >= MIN_IMAGES_FOR_ESTIMATE
    assert r.drop_points == 1.0 and r.basis.startswith("top-1 accuracy")
    assert r.summary().startswith("int8 top-1 drop: 1 points on 100") and "too few" not in r.summary()


def test_labelled_report_needs_both_accuracies():
    with pytest.raises(ValueError):
        _rep(10, 9, labelled=True, float_top1=0.9)
