import numpy as np
import pytest

from psr.data.labels import DATASET_ORDERS, EXPRESSIONS, class_names, permutation, remap


def test_every_dataset_order_uses_canonical_names_once():
    for name, order in DATASET_ORDERS.items():
        assert len(set(order)) == len(order), name
        assert set(order) <= set(EXPRESSIONS), name


def test_orders_match_datasets_doc():
    # datasets.md, "Label orders side by side"
    assert class_names("fer2013")[0] == "anger" and class_names("fer2013")[6] == "neutral"
    assert class_names("rafdb")[0] == "surprise" and class_names("rafdb")[6] == "neutral"
    assert class_names("affectnet")[2] == "sadness" and class_names("affectnet")[7] == "contempt"


def test_seven_class_protocol_drops_contempt():
    assert class_names("affectnet", 7) == DATASET_ORDERS["affectnet"][:7]
    assert "contempt" not in class_names("ferplus", 7)
    with pytest.raises(ValueError, match="no 6-class protocol"):
        class_names("ferplus", 6)
    with pytest.raises(ValueError, match="unknown dataset"):
        class_names("imagenet")


def test_remap_goes_through_names():
    raf = np.array([0, 3, 6])  # surprise, happiness, neutral in RAF-DB order
    out = remap(raf, DATASET_ORDERS["rafdb"], EXPRESSIONS)
    assert [EXPRESSIONS[i] for i in out] == ["surprise", "happiness", "neutral"]
    contempt = remap(np.array([7]), EXPRESSIONS, class_names("ferplus", 7))
    assert contempt.tolist() == [-1]
    with pytest.raises(ValueError, match="out of range"):
        remap(np.array([8]), EXPRESSIONS, EXPRESSIONS)


def test_permutation_reorders_rows_by_name():
    src, dst = EXPRESSIONS, DATASET_ORDERS["rafdb"]
    rows = np.arange(len(src))[permutation(src, dst)]
    assert [src[i] for i in rows] == list(dst)
    with pytest.raises(ValueError, match="contempt"):
        permutation(DATASET_ORDERS["rafdb"], EXPRESSIONS)
