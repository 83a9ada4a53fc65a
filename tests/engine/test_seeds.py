"""Seeds: mix is the splitmix64 chain written out, mix_each its shortcut, CounterStream a running offset."""

from zolab.engine.seeds import CounterStream, mix, mix_each

M64 = (1 << 64) - 1


def splitmix64_chain(*keys):
    """Vigna's splitmix64 step applied to h ^ key for each key, from the fixed start π's digits; top 63 bits."""
    h = 0x243F6A8885A308D3
    for k in keys:
        z = ((h ^ (k % (1 << 64))) + 0x9E3779B97F4A7C15) % (1 << 64)
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % (1 << 64)
        h = z ^ (z >> 31)
    return h >> 1


def test_mix_is_a_pure_63_bit_hash():
    assert mix(1, 2, 3) == mix(1, 2, 3) and mix(1, 2, 3) != mix(1, 3, 2)
    assert 0 <= mix(2**70, -5) < 2**63


def test_mix_is_the_splitmix64_chain_written_out():
    for keys in [(), (0,), (7, 1, 0, 3), (2**64 - 1, 2**63), (-1,), (2**70 + 5, 12)]:
        assert mix(*keys) == splitmix64_chain(*keys), keys


def test_mix_each_equals_mix_with_the_common_prefix():
    assert mix_each((3, 7, 0), range(5)) == [mix(3, 7, 0, k) for k in range(5)]
    assert mix_each((), [4, 9]) == [mix(4), mix(9)]


def test_a_counter_stream_hands_out_consecutive_element_ranges():
    s = CounterStream(2**63 + 3, offset=10)
    assert s.key == 2**63 + 3
    assert (s.take(3), s.take(4), s.take(0), s.offset) == (10, 13, 17, 17)
