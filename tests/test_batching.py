"""The batch plan: deterministic, complete, length-grouped, sharded without loss."""

import numpy as np

from tunelab.engine.batching import epoch_batches, eval_batches, shard


def lengths(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 300, size=n)


def test_every_row_once_per_epoch():
    batches = epoch_batches(lengths(), 16, seed=0, epoch=3, group_by_length=True)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    assert all(len(b) == 16 for b in batches[:-1] if len(b) != 1000 % 16)


def test_plan_is_a_function_of_seed_and_epoch():
    a = epoch_batches(lengths(), 16, seed=7, epoch=2, group_by_length=True)
    b = epoch_batches(lengths(), 16, seed=7, epoch=2, group_by_length=True)
    c = epoch_batches(lengths(), 16, seed=7, epoch=3, group_by_length=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_length_grouping_cuts_padding():
    lens = lengths()

    def padded_tokens(batches):
        return sum(lens[b].max() * len(b) for b in batches)

    grouped = epoch_batches(lens, 16, seed=0, epoch=0, group_by_length=True)
    plain = epoch_batches(lens, 16, seed=0, epoch=0, group_by_length=False)
    assert padded_tokens(grouped) < 0.7 * padded_tokens(plain)
    assert lens[grouped[0]].max() == lens.max()  # the longest batch runs first


def test_shards_partition_a_batch():
    batch = np.arange(10, 21)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), batch)
    assert [len(p) for p in parts] == [4, 4, 3]
    assert len(shard(np.array([5]), 1, 2)) == 0  # fewer rows than processes: the loop pads with a stand-in


def test_eval_batches_cover_each_row_once_across_processes():
    lens = lengths(101)
    rows = np.concatenate([b for r in range(2) for b in eval_batches(lens, 8, r, 2)])
    assert sorted(rows.tolist()) == list(range(101))
