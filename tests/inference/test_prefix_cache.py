"""The host-side prefix cache: longest indexed shared prefix, bounded LRU."""

from rstar_jax.inference.prefix_cache import PrefixCache


def test_lookup_finds_the_longest_shared_prefix_including_a_changed_last_token():
    cache = PrefixCache(1000, stride=8, tail=2, min_reuse=4)
    parent = list(range(100, 130))  # 30 tokens
    cache.insert(parent, "kv-parent", cost=32)
    # The child re-tokenized the parent's last token: shares 29 tokens.
    child = parent[:29] + [7, 8, 9]
    assert cache.lookup(child) == ("kv-parent", 29)  # indexed at 28..30 (tail) and 8, 16, 24
    assert cache.lookup(parent[:20] + [1] * 10) == ("kv-parent", 16)  # stride point
    assert cache.lookup([1, 2, 3, 4, 5]) is None
    assert cache.lookup(parent[:3] + [0] * 5) is None  # below min_reuse
    assert cache.hits == 2 and cache.reused_tokens == 45


def test_memory_is_bounded_and_least_recently_used_goes_first():
    cache = PrefixCache(100, stride=8, tail=1, min_reuse=4)
    a, b, c = ([i] * 10 for i in (1, 2, 3))
    cache.insert(a, "A", cost=40)
    cache.insert(b, "B", cost=40)
    assert cache.lookup(a + [0]) == ("A", 10)  # touch A: B is now the oldest
    cache.insert(c, "C", cost=40)
    assert cache.tokens == 80 and len(cache) == 2
    assert cache.lookup(b + [0]) is None
    assert cache.lookup(a + [0]) == ("A", 10) and cache.lookup(c + [0]) == ("C", 10)
    cache.insert([9] * 10, "too big", cost=101)  # never stored, nothing evicted for it
    assert len(cache) == 2
