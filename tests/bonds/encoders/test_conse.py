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


def _memo(readers: int, size: int = 8) -> LogitsMemo:
    memo = LogitsMemo(size=size)
    for _ in range(readers):
        memo.register()
    return memo


def test_a_photo_one_encoder_classified_is_read_once_by_its_sibling_in_any_order():
    memo, calls = _memo(readers=2), []
    photos = torch.rand(5, 3, 4, 4)
    digests = [LogitsMemo.digest(p) for p in photos]
    first = memo.logits(photos[:3], digests[:3], _network(calls))
    # the sibling: three it reads (in another order) and two new ones, which it computes and leaves in turn
    second = memo.logits(photos[[4, 1, 0, 2, 3]], [digests[i] for i in (4, 1, 0, 2, 3)], _network(calls))
    assert calls == [3, 2]
    reference = _network([])(photos)
    torch.testing.assert_close(first, reference[:3])
    torch.testing.assert_close(second, reference[[4, 1, 0, 2, 3]])
    assert set(memo._rows) == {digests[3], digests[4]}  # read rows are gone: nothing is cached for later requests
    memo.logits(photos[3:], digests[3:], _network(calls))
    assert calls == [3, 2] and not memo._rows
    memo.logits(photos[:1], digests[:1], _network(calls))  # a photo seen before is classified anew
    assert calls == [3, 2, 1]
    assert LogitsMemo.digest(photos[0] + 1e-6) != digests[0] and LogitsMemo.digest(photos[0].clone()) == digests[0]


def test_one_encoder_alone_stores_nothing_and_the_memo_is_bounded():
    alone, calls = _memo(readers=1), []
    photos = torch.rand(3, 3, 4, 4)
    digests = [LogitsMemo.digest(p) for p in photos]
    alone.logits(photos, digests, _network(calls))
    alone.logits(photos, digests, _network(calls))
    assert calls == [3, 3] and not alone._rows
    bounded = _memo(readers=2, size=2)
    bounded.logits(photos, digests, _network(calls))  # the oldest row is pushed out
    assert list(bounded._rows) == digests[1:]
