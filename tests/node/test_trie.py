"""The database-free tries must give exactly trie.HexaryTrie's roots."""

import random

import rlp
from hypothesis import given, settings, strategies as st
from trie import HexaryTrie

from node.chain.trie import BLANK_ROOT, IncrementalTrie, ordered_trie_root


def hexary_ordered_root(values):
    reference = HexaryTrie({})
    for index, value in enumerate(values):
        reference[rlp.encode(index)] = value
    return reference.root_hash


def test_blank_root_is_the_empty_hexary_root():
    assert BLANK_ROOT == HexaryTrie({}).root_hash
    assert ordered_trie_root([]) == BLANK_ROOT
    assert IncrementalTrie().root_hash() == BLANK_ROOT


def test_ordered_root_matches_hexary_for_every_count_up_to_300():
    rng = random.Random(7)
    # Mix short values (inlined leaves) with long ones (hashed leaves), as receipts
    # and transactions of every size appear in real blocks.
    values = [rng.randbytes(rng.choice((1, 3, 20, 31, 32, 33, 100, 300))) for _ in range(301)]
    reference = HexaryTrie({})
    for count in range(0, 301):
        if count:
            reference[rlp.encode(count - 1)] = values[count - 1]
        assert ordered_trie_root(values[:count]) == reference.root_hash, count


def test_ordered_root_of_tiny_values_that_inline_whole_subtrees():
    for count in (1, 2, 3, 17, 128, 129, 200):
        values = [bytes([i % 256]) for i in range(count)]
        assert ordered_trie_root(values) == hexary_ordered_root(values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), max_size=150))
def test_ordered_root_matches_hexary_for_arbitrary_values(values):
    assert ordered_trie_root(values) == hexary_ordered_root(values)


def test_ordered_root_skips_empty_values_like_hexary():
    values = [b"a", b"", b"c" * 40]
    assert ordered_trie_root(values) == hexary_ordered_root(values)


# Keys drawn from a small alphabet and short lengths so that streams share prefixes,
# make keys prefixes of other keys (branch values), overwrite and delete often.
_keys = st.binary(min_size=0, max_size=4).map(lambda b: bytes(x % 4 for x in b))
_values = st.one_of(st.just(b""), st.binary(min_size=1, max_size=3), st.binary(min_size=30, max_size=70))
_ops = st.lists(st.tuples(st.sampled_from(("set", "delete")), _keys, _values), max_size=60)


@settings(max_examples=250, deadline=None)
@given(_ops)
def test_incremental_trie_matches_hexary_after_every_step(ops):
    ours = IncrementalTrie()
    reference = HexaryTrie({})
    present = {}
    for op, key, value in ops:
        if op == "set":
            ours.set(key, value)
            reference[key] = value
            if value:
                present[key] = value
            else:
                present.pop(key, None)
        else:
            ours.delete(key)
            if key in present:
                del reference[key]
                del present[key]
        assert ours.root_hash() == reference.root_hash
        assert len(ours) == len(present)
    for key, value in present.items():
        assert ours.get(key) == value


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=1, max_size=90)), max_size=80),
       st.randoms(use_true_random=False))
def test_incremental_trie_over_hashed_keys_matches_hexary_with_deletes(items, rng):
    ours = IncrementalTrie()
    reference = HexaryTrie({})
    for key, value in items:
        ours.set(key, value)
        reference[key] = value
        assert ours.root_hash() == reference.root_hash
    keys = sorted({key for key, _ in items})
    rng.shuffle(keys)
    for key in keys:
        ours.delete(key)
        del reference[key]
        assert ours.root_hash() == reference.root_hash
    assert ours.root_hash() == BLANK_ROOT


def test_root_is_independent_of_insertion_order_and_of_cached_hashes():
    rng = random.Random(3)
    items = [(rng.randbytes(32), rng.randbytes(rng.choice((2, 40)))) for _ in range(500)]
    first = IncrementalTrie()
    for key, value in items:
        first.set(key, value)
    root_all = first.root_hash()
    second = IncrementalTrie()
    for count, (key, value) in enumerate(reversed(items)):
        second.set(key, value)
        if count % 37 == 0:
            second.root_hash()  # cache some hashes midway; later changes must clear them
    assert second.root_hash() == root_all
    # Changing then restoring a value gives back the same root.
    key, value = items[10]
    second.set(key, b"other")
    assert second.root_hash() != root_all
    second.set(key, value)
    assert second.root_hash() == root_all


def test_deleting_an_absent_key_changes_nothing():
    ours = IncrementalTrie()
    ours.set(b"\x01\x02", b"x" * 40)
    ours.set(b"\x01\x03", b"y")
    root = ours.root_hash()
    ours.delete(b"\x01\x04")
    ours.delete(b"\x01")
    assert ours.root_hash() == root
    assert len(ours) == 2
