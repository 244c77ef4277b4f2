"""Seeded, stratified, group-aware splits shared by the dataset readers.

A "group" is whatever must never sit on two sides of a split: a patient in
MURA, a set of duplicate images in FracAtlas, a single image when nothing
better is known. Splits are decided per group, stratified (e.g. by label and
body part) so every split sees the same mix, and reproducible on every
machine: groups and strata are sorted as strings before shuffling (no
dependence on file-system order or hash randomisation) and shuffling uses
``numpy.random.RandomState``, whose stream NumPy keeps fixed across versions.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fracture.errors import DatasetError

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.70, "val": 0.15, "test": 0.15}
"""70/15/15, the split used when a dataset does not bring its own."""


def split_groups(
    groups: Sequence,
    strata: Sequence | None = None,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> np.ndarray:
    """Assign each item a split name so that all items of one group share a split.

    Each group takes the stratum most of its items have (ties: the largest
    stratum value, so a group holding any positive counts as positive when
    the label leads the key). Strata are visited in sorted order; within one,
    groups are shuffled and handed, one by one, to the split furthest below
    its share. Shares are counted in items and carried across strata, so the
    overall proportions come out exact (up to group sizes) and each stratum
    close to proportional.

    Args:
        groups: one group id per item (any values; compared as strings).
        strata: one stratum key per item, e.g. from :func:`stratum_keys`;
            ``None`` for no stratification.
        fractions: split name -> fraction of items, in the order splits
            should be preferred on ties; fractions >= 0 summing to 1.
        seed: the shuffling seed.

    Returns:
        An array of split names, one per item.

    Raises:
        DatasetError: the fractions are negative, do not sum to 1, or
            ``strata`` has a different length than ``groups``.
    """
    names, shares = _check_fractions(fractions)
    group_ids = np.asarray([str(g) for g in groups], dtype=object)
    if strata is None:
        stratum_ids = np.full(len(group_ids), "", dtype=object)
    else:
        stratum_ids = np.asarray([str(s) for s in strata], dtype=object)
        if len(stratum_ids) != len(group_ids):
            raise DatasetError(
                f"split_groups got {len(group_ids)} groups but {len(stratum_ids)} strata"
            )
    if len(group_ids) == 0:
        return np.asarray([], dtype=object)

    table = _group_table(group_ids, stratum_ids)
    rng = np.random.RandomState(seed)
    usable = shares > 0
    assigned_total = np.zeros(len(names), dtype=np.int64)
    items_seen = 0
    split_of_group: dict[str, str] = {}
    for _, members in table.groupby("stratum", sort=True):
        members = members.sort_values("group")
        member_groups = members["group"].to_numpy()
        member_sizes = members["size"].to_numpy()
        order = rng.permutation(len(members))
        items_seen += int(member_sizes.sum())
        remaining = _apportion(items_seen, shares) - assigned_total
        for index in order:
            group, size = member_groups[index], int(member_sizes[index])
            candidates = np.where(usable, remaining, np.iinfo(np.int64).min)
            chosen = int(np.argmax(candidates))  # first maximum: earlier split wins ties
            split_of_group[group] = names[chosen]
            remaining[chosen] -= size
            assigned_total[chosen] += size
    return np.asarray([split_of_group[g] for g in group_ids], dtype=object)


def stratum_keys(*columns: Iterable) -> np.ndarray:
    """Join per-item values of several columns into one stratum key per item.

    Example: ``stratum_keys(labels, body_parts)`` -> ``["1|hand", "0|leg", ...]``.
    """
    columns = [list(c) for c in columns]
    if not columns:
        raise DatasetError("stratum_keys needs at least one column")
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise DatasetError(f"stratum_keys got columns of different lengths {sorted(lengths)}")
    return np.asarray(["|".join(str(v) for v in values) for values in zip(*columns)], dtype=object)


def union_groups(items: Iterable[str], pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Merge items linked by pairs (e.g. duplicate images) into groups.

    Union-find over the pairs; pairs naming an item not in ``items`` are
    ignored. Each group is named by its smallest member, so the result does
    not depend on the order of items or pairs.

    Args:
        items: all item ids.
        pairs: (a, b) links; a and b end up in one group.

    Returns:
        item id -> group id (an item alone is its own group).
    """
    parent = {item: item for item in items}

    def find(item: str) -> str:
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:  # path compression
            parent[item], item = root, parent[item]
        return root

    for a, b in pairs:
        if a not in parent or b not in parent:
            continue
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            low, high = sorted((root_a, root_b))
            parent[high] = low
    return {item: find(item) for item in parent}


def leaking_groups(frame: pd.DataFrame, group_column: str = "patient_id", split_column: str = "split") -> list[str]:
    """Groups (e.g. patients) that appear in more than one split, sorted.

    An empty list means the split is clean.
    """
    per_group = frame.groupby(group_column, sort=True)[split_column].nunique()
    return per_group[per_group > 1].index.astype(str).tolist()


def _check_fractions(fractions: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    names = list(fractions)
    shares = np.asarray([float(fractions[name]) for name in names], dtype=np.float64)
    if not names:
        raise DatasetError("split fractions are empty; give e.g. {'train': 0.7, 'val': 0.15, 'test': 0.15}")
    if (shares < 0).any() or not np.isfinite(shares).all():
        raise DatasetError(f"split fractions must be >= 0, got {dict(fractions)}")
    if abs(shares.sum() - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must sum to 1, got {dict(fractions)} (sum {shares.sum():.4g})")
    return names, shares


def _group_table(group_ids: np.ndarray, stratum_ids: np.ndarray) -> pd.DataFrame:
    """One row per group: its size and its (majority) stratum."""
    items = pd.DataFrame({"group": group_ids, "stratum": stratum_ids})
    counts = items.groupby(["group", "stratum"], sort=True).size().rename("count").reset_index()
    counts = counts.sort_values(["group", "count", "stratum"], ascending=[True, False, False])
    majority = counts.drop_duplicates("group", keep="first").set_index("group")["stratum"]
    sizes = items.groupby("group", sort=True).size()
    return pd.DataFrame({
        "group": sizes.index,
        "size": sizes.to_numpy(),
        "stratum": majority.loc[sizes.index].to_numpy(),
    })


def _apportion(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` closest to ``total * shares`` (largest remainder)."""
    exact = total * shares
    counts = np.floor(exact).astype(np.int64)
    shortfall = int(total - counts.sum())
    if shortfall > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:shortfall]] += 1
    return counts
