"""The memos that let two ConSE encoders of one space prepare and classify a photo once: pixels by the photo
object, logits by the pixels' digest."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from bonds.encoders.conse import LogitsMemo, PixelsMemo  # noqa: E402


class _Encoder:
    """A reader of the memo (the memo counts it while it lives)."""


def _network(calls: list[int]):
    """A stand-in classifier: logits are the pixels' row sums times the class index, rows counted."""
    def run(pixels):
        calls.append(len(pixels))
        return pixels.flatten(1).sum(1, keepdim=True) * torch.arange(1000, dtype=torch.float32)
    return run


def _photos(n: int):
    photos = torch.rand(n, 3, 4, 4)
    return photos, [LogitsMemo.digest(p) for p in photos]


def test_a_photo_one_encoder_classified_is_read_once_by_a_sibling_never_by_itself():
    memo, starter, e5 = LogitsMemo(), _Encoder(), _Encoder()
    memo.register(starter)
    memo.register(e5)
    photos, digests = _photos(5)
    calls, sibling_calls = [], []
    first = memo.logits(photos[:3], digests[:3], _network(calls), starter)
    # the sibling reads three (in another order) and computes two new ones, which it leaves in turn
    second = memo.logits(photos[[4, 1, 0, 2, 3]], [digests[i] for i in (4, 1, 0, 2, 3)], _network(sibling_calls), e5)
    assert calls == [3] and sibling_calls == [2]
    reference = _network([])(photos)
    torch.testing.assert_close(first, reference[:3])
    torch.testing.assert_close(second, reference[[4, 1, 0, 2, 3]])
    assert set(memo._rows) == {digests[3], digests[4]}  # read rows are gone
    memo.logits(photos[3:], digests[3:], _network(calls), e5)  # its own rows: e5 classifies them again
    assert calls == [3, 2]
    memo.logits(photos[3:], digests[3:], _network(calls), starter)  # ... and its sibling reads them once
    assert calls == [3, 2] and not memo._rows
    assert LogitsMemo.digest(photos[0] + 1e-6) != digests[0] and LogitsMemo.digest(photos[0].clone()) == digests[0]


def test_readers_count_while_they_live_and_rows_are_bounded_in_number_and_age(monkeypatch):
    import gc

    clock = [100.0]
    monkeypatch.setattr("bonds.encoders.conse.time.monotonic", lambda: clock[0])
    memo = LogitsMemo(size=2, ttl_s=5.0)
    encoders = [_Encoder(), _Encoder()]
    memo.register(encoders[0])
    memo.register(encoders[1])
    assert memo.readers == 2
    encoders.pop()
    gc.collect()
    assert memo.readers == 1
    photos, digests = _photos(3)
    memo.logits(photos, digests, _network([]), encoders[0])  # the oldest row is pushed out
    assert list(memo._rows) == digests[1:]
    clock[0] += 6  # rows nobody read are gone after ttl_s
    memo.logits(photos[:1], digests[:1], _network([]), encoders[0])
    assert list(memo._rows) == digests[:1]


def test_a_sibling_waits_for_a_photo_being_classified_instead_of_classifying_it_again():
    memo, starter, e5 = LogitsMemo(), _Encoder(), _Encoder()
    photos, digests = _photos(2)
    started, release = threading.Event(), threading.Event()
    calls, sibling_calls = [], []

    def slow(pixels):
        started.set()
        release.wait(5)
        return _network(calls)(pixels)

    first = {}
    worker = threading.Thread(target=lambda: first.update(rows=memo.logits(photos, digests, slow, starter)))
    worker.start()
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()  # the first call finishes while the sibling already waits
    second = memo.logits(photos[[1, 0]], [digests[1], digests[0]], _network(sibling_calls), e5)
    worker.join(5)
    assert calls == [2] and sibling_calls == []
    torch.testing.assert_close(second, first["rows"][[1, 0]])
    assert not memo._rows


def test_when_the_classifying_call_fails_the_sibling_classifies_itself():
    memo, starter, e5 = LogitsMemo(), _Encoder(), _Encoder()
    photos, digests = _photos(1)
    started, release = threading.Event(), threading.Event()

    def broken(pixels):
        started.set()
        release.wait(5)
        raise RuntimeError("the device went away")

    failures = []

    def first():
        try:
            memo.logits(photos, digests, broken, starter)
        except RuntimeError as exc:
            failures.append(str(exc))

    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    calls: list[int] = []
    rows = memo.logits(photos, digests, _network(calls), e5)
    worker.join(5)
    assert failures == ["the device went away"] and calls == [1]
    torch.testing.assert_close(rows, _network([])(photos))


def test_one_encoder_on_two_threads_waits_for_its_own_photo_and_leaves_the_row_to_its_sibling():
    memo, starter, e5 = LogitsMemo(), _Encoder(), _Encoder()
    photos, digests = _photos(1)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(pixels):
        started.set()
        release.wait(5)
        return _network(calls)(pixels)

    worker = threading.Thread(target=lambda: memo.logits(photos, digests, slow, starter))
    worker.start()
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    again = memo.logits(photos, digests, _network(calls), starter)  # the same encoder, another thread
    worker.join(5)
    assert calls == [1]
    sibling_calls: list[int] = []
    torch.testing.assert_close(memo.logits(photos, digests, _network(sibling_calls), e5), again)
    assert sibling_calls == [] and not memo._rows


class _Photo:
    """A photo object as the engine hands it to each encoder (weakly referable, unhashable like a PIL image)."""

    __hash__ = None

    def __init__(self, value: float):
        self.value = value


def _preparer(calls: list[float]):
    def prepare(photo):
        calls.append(photo.value)
        return torch.full((3, 2, 2), photo.value), b"digest"
    return prepare


def test_pixels_are_prepared_once_for_a_sibling_that_embeds_the_same_photo_object():
    memo, starter, e5 = PixelsMemo(), _Encoder(), _Encoder()
    photo, twin = _Photo(1.0), _Photo(1.0)  # equal, but another object: the engine decoded it again
    calls, sibling_calls = [], []
    mine = memo.prepared(photo, starter, _preparer(calls))
    assert memo.prepared(photo, e5, _preparer(sibling_calls)) is mine  # read once...
    assert not memo._entries and calls == [1.0] and sibling_calls == []
    memo.prepared(photo, e5, _preparer(sibling_calls))  # ... so a later call prepares anew
    memo.prepared(photo, e5, _preparer(sibling_calls))  # its own entry: never read by itself
    memo.prepared(twin, starter, _preparer(calls))
    assert sibling_calls == [1.0, 1.0] and calls == [1.0, 1.0]
    assert memo.prepared(b"raw bytes", e5, lambda item: ("as is", item)) == ("as is", b"raw bytes")


def test_an_entry_is_never_taken_for_a_new_object_and_is_bounded_in_number_and_age(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("bonds.encoders.conse.time.monotonic", lambda: clock[0])
    memo, starter, e5 = PixelsMemo(size=2, ttl_s=5.0), _Encoder(), _Encoder()
    photos = [_Photo(float(i)) for i in range(3)]
    for photo in photos:
        memo.prepared(photo, starter, _preparer([]))
    assert list(memo._entries) == [id(photos[1]), id(photos[2])]  # the oldest pushed out
    clock[0] += 6
    memo.prepared(photos[0], starter, _preparer([]))
    assert list(memo._entries) == [id(photos[0])]  # unread entries are gone after ttl_s
    # an entry whose object died is not another object's, even at the same address
    stranger = _Photo(9.0)
    memo._entries[id(stranger)] = memo._entries.pop(id(photos[0]))
    calls: list[float] = []
    assert memo.prepared(stranger, e5, _preparer(calls))[0][0, 0, 0] == 9.0 and calls == [9.0]


def test_a_sibling_waits_for_a_photo_being_prepared_and_prepares_it_itself_when_that_fails():
    memo, starter, e5 = PixelsMemo(), _Encoder(), _Encoder()
    for broken in (False, True):
        photo, started, release = _Photo(2.0), threading.Event(), threading.Event()
        calls, sibling_calls, outcome = [], [], {}

        def slow(item, broken=broken, started=started, release=release, calls=calls):
            started.set()
            release.wait(5)
            if broken:
                raise OSError("truncated photo")
            return _preparer(calls)(item)

        def first(photo=photo, slow=slow, outcome=outcome):
            try:
                outcome["pixels"] = memo.prepared(photo, starter, slow)
            except OSError as exc:
                outcome["error"] = str(exc)

        worker = threading.Thread(target=first)
        worker.start()
        assert started.wait(5)
        threading.Timer(0.2, release.set).start()  # it finishes while the sibling already waits
        second = memo.prepared(photo, e5, _preparer(sibling_calls))
        worker.join(5)
        if broken:  # the sibling prepares the photo itself (a bad photo would fail there too)
            assert outcome == {"error": "truncated photo"} and sibling_calls == [2.0]
        else:
            assert second is outcome["pixels"] and calls == [2.0] and sibling_calls == []
        assert not memo._entries
