"""Group-aware, stratified, deterministic split helpers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fracture.data.splits import DEFAULT_FRACTIONS, leaking_groups, split_groups, stratum_keys, union_groups
from fracture.errors import DatasetError


def _items(n: int = 3000, n_groups: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n)
    # one label and part per group, like a patient with one condition
    group_label = (rng.random(n_groups) < 0.2).astype(int)
    group_part = rng.choice(["hand", "wrist", "elbow", "hip"], n_groups)
    return pd.DataFrame({
        "group": [f"p{g:05d}" for g in groups],
        "label": group_label[groups],
        "part": group_part[groups],
    })


def _split(items: pd.DataFrame, seed: int = 0, fractions=DEFAULT_FRACTIONS) -> np.ndarray:
    return split_groups(items["group"], stratum_keys(items["label"], items["part"]), fractions, seed)


def test_no_group_on_two_sides():
    items = _items()
    items["split"] = _split(items)
    assert leaking_groups(items, "group", "split") == []


def test_fractions_and_strata_roughly_held():
    items = _items()
    items["split"] = _split(items)
    shares = items["split"].value_counts(normalize=True)
    for split, share in DEFAULT_FRACTIONS.items():
        assert abs(shares[split] - share) < 0.02
    overall_rate = items["label"].mean()
    for split in DEFAULT_FRACTIONS:
        assert abs(items.loc[items["split"] == split, "label"].mean() - overall_rate) < 0.04
    for part, rows in items.groupby("part"):
        part_share = rows["split"].value_counts(normalize=True)
        assert abs(part_share.get("train", 0) - 0.70) < 0.08, part


def test_deterministic_and_seed_dependent():
    items = _items()
    first, second = _split(items, seed=7), _split(items, seed=7)
    np.testing.assert_array_equal(first, second)
    assert (first != _split(items, seed=8)).any()


def test_independent_of_row_order():
    items = _items()
    items["split"] = _split(items, seed=3)
    shuffled = items.sample(frac=1.0, random_state=1).reset_index(drop=True)
    shuffled["again"] = _split(shuffled, seed=3)
    merged = shuffled.groupby("group")[["split", "again"]].first()
    assert (merged["split"] == merged["again"]).all()


def test_singletons_split_exactly():
    split = split_groups([f"img{i}" for i in range(100)], fractions=DEFAULT_FRACTIONS, seed=0)
    counts = pd.Series(split).value_counts()
    assert counts.to_dict() == {"train": 70, "val": 15, "test": 15}


def test_zero_fraction_split_stays_empty_and_two_way_split():
    split = split_groups([f"g{i % 40}" for i in range(200)], fractions={"train": 0.9, "val": 0.1, "test": 0.0})
    assert "test" not in set(split)
    assert set(split) == {"train", "val"}


def test_group_takes_majority_stratum():
    # g1 has two positive items and one negative; it must count as positive and stay whole
    groups = ["g1", "g1", "g1"] + [f"s{i}" for i in range(20)]
    strata = ["1", "1", "0"] + ["0"] * 20
    split = split_groups(groups, strata, {"train": 0.5, "test": 0.5}, seed=0)
    assert len(set(split[:3])) == 1


@pytest.mark.parametrize("fractions", [{"train": 0.8, "val": 0.1}, {"train": 1.2, "val": -0.2}, {}])
def test_bad_fractions_raise(fractions):
    with pytest.raises(DatasetError):
        split_groups(["a", "b"], fractions=fractions)


def test_strata_length_mismatch_raises():
    with pytest.raises(DatasetError, match="strata"):
        split_groups(["a", "b"], ["x"])


def test_empty_input():
    assert len(split_groups([], [])) == 0


def test_stratum_keys_joins_columns():
    assert stratum_keys([1, 0], ["hand", "leg"]).tolist() == ["1|hand", "0|leg"]
    with pytest.raises(DatasetError):
        stratum_keys([1, 0], ["hand"])


def test_union_groups_merges_chains_and_names_by_smallest():
    groups = union_groups(["e", "d", "c", "b", "a"], [("d", "e"), ("c", "b"), ("e", "c"), ("a", "missing")])
    assert groups == {"a": "a", "b": "b", "c": "b", "d": "b", "e": "b"}
    assert union_groups(["x", "y"], [("y", "x")]) == union_groups(["y", "x"], [("x", "y")])


def test_leaking_groups_lists_offenders():
    frame = pd.DataFrame({"patient_id": ["a", "a", "b", "c", "c"], "split": ["train", "test", "val", "val", "val"]})
    assert leaking_groups(frame) == ["a"]
