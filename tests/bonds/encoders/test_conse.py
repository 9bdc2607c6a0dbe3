"""The classifier's logits memo that lets two ConSE encoders of one space classify a photo once."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from bonds.encoders.conse import LogitsMemo  # noqa: E402


def _network(calls: list[int]):
    """A stand-in classifier: logits are the pixels' row sums times the class index, rows counted."""
    def run(pixels):
        calls.append(len(pixels))
        return pixels.flatten(1).sum(1, keepdim=True) * torch.arange(1000, dtype=torch.float32)
    return run


def test_the_network_runs_only_on_photos_it_has_not_seen_and_rows_keep_their_order():
    memo, calls = LogitsMemo(size=8), []
    photos = torch.rand(5, 3, 4, 4)
    digests = [LogitsMemo.digest(p) for p in photos]
    first = memo.logits(photos[:3], digests[:3], _network(calls))
    # two seen (in another order), two new: the network gets the new ones only
    mixed = memo.logits(photos[[4, 1, 0, 3]], [digests[i] for i in (4, 1, 0, 3)], _network(calls))
    assert calls == [3, 2]
    reference = _network([])(photos)
    torch.testing.assert_close(first, reference[:3])
    torch.testing.assert_close(mixed, reference[[4, 1, 0, 3]])
    # other pixels, another digest
    assert LogitsMemo.digest(photos[0] + 1e-6) != digests[0] and LogitsMemo.digest(photos[0].clone()) == digests[0]


def test_the_memo_keeps_the_most_recently_used_rows_only():
    memo, calls = LogitsMemo(size=2), []
    photos = torch.rand(3, 3, 4, 4)
    digests = [LogitsMemo.digest(p) for p in photos]
    for i in (0, 1, 0, 2):  # 0 used again before 2 arrives: 1 is the one evicted
        memo.logits(photos[i : i + 1], digests[i : i + 1], _network(calls))
    assert calls == [1, 1, 1]
    memo.logits(photos[[0, 2]], [digests[0], digests[2]], _network(calls))
    memo.logits(photos[1:2], digests[1:2], _network(calls))
    assert calls == [1, 1, 1, 1] and len(memo._rows) == 2
