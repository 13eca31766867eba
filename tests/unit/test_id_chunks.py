"""The id lists of ``/user/list?user_ids=``: a page's worth, and a request line an ingress takes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncd.litellm import id_chunks


def test_a_hundred_uuids_a_request() -> None:
    ids = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(250)]
    assert [len(c) for c in id_chunks(ids, 100)] == [100, 100, 50]


def test_long_email_ids_are_split_before_the_request_line_grows_past_the_limit() -> None:
    ids = [f"{'x' * 90}{n}@example.com" for n in range(100)]
    chunks = id_chunks(ids, 100, max_chars=6000)
    assert len(chunks) == 2
    assert all(len(",".join(c)) <= 6000 for c in chunks)


@given(st.lists(st.text(min_size=1, max_size=40), max_size=60),
       st.integers(1, 10), st.integers(1, 120))
def test_every_id_once_in_order_within_both_limits(ids: list[str], size: int,
                                                    max_chars: int) -> None:
    chunks = id_chunks(ids, size, max_chars)
    assert [i for c in chunks for i in c] == ids
    for chunk in chunks:
        assert 1 <= len(chunk) <= size
        assert len(chunk) == 1 or len(",".join(chunk)) <= max_chars
