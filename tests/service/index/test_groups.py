"""A group's rows: ids map to live rows by binary search, views stay consistent across later writes."""

from __future__ import annotations

import numpy as np
import pytest

from service.index.groups import Group

DIM = 4


def components(ids):
    rng = np.random.default_rng(len(ids))
    leaves = rng.standard_normal((len(ids), 2, DIM)).astype(np.float32)
    return (np.asarray(ids, dtype=np.int64), leaves, np.einsum("nld,nmd->nlm", leaves, leaves).astype(np.float64),
            leaves[:, 0].copy())


def test_rows_of_finds_live_items_and_marks_the_rest():
    group = Group("text", ["a", "b"], DIM, capacity=2)  # grows twice below
    group.append(*components([3, 5, 9]))
    group.append(*components([10, 40]))
    assert group.kill(np.array([5])) == 1 and group.kill(np.array([40])) == 1
    assert group.kill(np.array([5, 7])) == 0  # already gone, never there
    ids = np.array([9, 5, 1, 3, 40, 10, 99, 7])
    assert group.rows_of(ids).tolist() == [2, -1, -1, 0, -1, 3, -1, -1]
    assert group.live == 3
    assert sorted(group.live_ids().tolist()) == [3, 9, 10]
    assert group.kill(np.array([9, 9, 3])) == 2 and group.live == 1  # a repeated id counts once


def test_a_replacement_row_is_found_under_its_new_id():
    group = Group("text", ["a", "b"], DIM)
    group.append(*components([1, 2]))
    group.kill(np.array([2]))
    group.append(*components([3]))  # item 2 replaced: SQLite gave it id 3
    assert group.rows_of(np.array([2, 3])).tolist() == [-1, 2]
    view = group.compacted()
    assert view.rows_of(np.array([1, 2, 3])).tolist() == [0, -1, 1]


def test_empty_group_finds_nothing():
    assert Group("text", ["a"], DIM).rows_of(np.array([1, 2])).tolist() == [-1, -1]


@pytest.mark.parametrize("ids", [[4, 4], [6, 5], [2]])
def test_ids_out_of_order_are_refused(ids):
    group = Group("text", ["a", "b"], DIM)
    group.append(*components([1, 3]))
    with pytest.raises(ValueError, match="ascending"):
        group.append(*components(ids))
    assert group.n == 2 and group.live == 2  # nothing half-appended


def test_a_view_keeps_its_moment():
    group = Group("text", ["a", "b"], DIM, capacity=2)
    group.append(*components([1, 2]))
    view = group.view()
    group.kill(np.array([1]))
    group.append(*components([3, 4, 5]))  # grows into fresh arrays
    assert view.ids.tolist() == [1, 2] and view.alive.tolist() == [True, True]
    assert view.live_rows().tolist() == [0, 1]
