"""The counter-based draw in plain torch: the specification every backend reproduces bit for bit.

z is a pure function of (key, element index): nothing is carried from one element to the next, so any
slice of a tensor draws its own part (the slice starting at element ``offset`` of a tensor is the draw
with that offset), on any launch shape, on any device.

For a 63-bit key (k0 = low, k1 = high 32 bits) and a counter j (lo/hi 32 bits):

    w1(j) = H(H(lo ^ k0) ^ k1 ^ (hi · 0x9E3779B9))      H = lowbias32, a 32-bit bijection
    w2(j) = H(w1 + 0x632BE5AB)
    gaussian:   elements 2j and 2j + 1 are the Box-Muller pair of counter j,
                r·cos(2π u2) and r·sin(2π u2), r = sqrt(−2 ln u1), u1 = (w1 >> 8 + 1) 2^-24 ∈ (0, 1],
                u2 = (w2 >> 8) 2^-24 (one hash, log and sqrt per two numbers)
    rademacher: element i is 1 − 2 (w1(i) >> 31)

ln and cos use only float32 +, −, × on fixed constants, in a fixed order (Cephes' logf polynomial and
Taylor polynomials of sin/cos on [0, π/2] after an exact quadrant split), and sqrt is IEEE (correctly
rounded). No fused multiply-add anywhere: every backend rounds each operation as written here, which is
what makes the numbers identical across the C kernel, Triton and this file. ln/cos are accurate to a few
ulp; |z| <= sqrt(48 ln 2) ≈ 5.77 (the grid of u1), so the tails beyond 5.77σ (probability 8e-9) are cut.
"""

from __future__ import annotations

import struct

import torch

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
W2_SALT = 0x632BE5AB
LAWS = ("gaussian", "rademacher")


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (constants are float32 in every backend)."""
    return struct.unpack("f", struct.pack("f", x))[0]


# Cephes logf: ln(1 + x) ≈ x − x²/2 + x³·P(x) on x ∈ [√½ − 1, √2 − 1]
LOG_P = [f32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1)]
LN2_HI, LN2_LO = f32(0.693359375), f32(-2.12194440e-4)
SQRT2 = f32(1.41421356)
HALF_PI = f32(1.5707963267948966)
# Taylor coefficients, highest degree first: cos(a) = Σ (−1)^k a^2k/(2k)!, sin(a)/a = Σ (−1)^k a^2k/(2k+1)!
COS_C = [f32(c) for c in (1 / 479001600, -1 / 3628800, 1 / 40320, -1 / 720, 1 / 24, -1 / 2, 1.0)]
SIN_C = [f32(c) for c in (1 / 6227020800, -1 / 39916800, 1 / 362880, -1 / 5040, 1 / 120, -1 / 6, 1.0)]
TWO_M24 = f32(2.0**-24)
TWO_M22 = f32(2.0**-22)


def split_key(key: int) -> tuple[int, int]:
    key = int(key)
    if not 0 <= key < 2**64:
        raise ValueError(f"invalid key {key}; allowed: an integer in [0, 2**64)")
    return key & M32, (key >> 32) & M32


def _h32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons) on uint32 values held in int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def words(key: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w1, w2) for int64 element indices (>= 0)."""
    k0, k1 = split_key(key)
    lo, hi = index & M32, index >> 32
    w1 = _h32(_h32(lo ^ k0) ^ ((hi * GOLDEN) & M32) ^ k1)
    w2 = _h32((w1 + W2_SALT) & M32)
    return w1, w2


def _horner(coefs: list[float], x: torch.Tensor) -> torch.Tensor:
    y = torch.full_like(x, coefs[0])
    for c in coefs[1:]:
        y = y * x + c  # two roundings: never an FMA
    return y


def log_unit(u: torch.Tensor) -> torch.Tensor:
    """ln u for float32 u in (0, 1] (Cephes logf without special cases)."""
    bits = u.view(torch.int32)
    e = (bits >> 23) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # u = m·2^e, m ∈ [1, 2)
    big = m > SQRT2
    m = torch.where(big, m * 0.5, m)
    e = torch.where(big, e + 1, e)
    x = m - 1.0  # exact
    fe = e.to(torch.float32)
    z = x * x
    y = _horner(LOG_P, x) * x * z
    y = y + fe * LN2_LO
    y = y - z * 0.5
    r = x + y
    return r + fe * LN2_HI


def turn(w2: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """cos(2π u) (where ``odd`` is False) or sin(2π u) (True), u = (w2 >> 8)·2^-24: the quadrant q is
    w2's top 2 bits, the rest is a = f·π/2 ∈ [0, π/2)."""
    q = w2 >> 30
    f = ((w2 >> 8) & 0x3FFFFF).to(torch.float32) * TWO_M22  # exact, in [0, 1)
    a = f * HALF_PI
    a2 = a * a
    c = _horner(COS_C, a2)
    s = _horner(SIN_C, a2) * a
    # cos(qπ/2 + a): q = 0: cos a, 1: −sin a, 2: −cos a, 3: sin a
    cos = torch.where((q & 1) == 1, s, c)
    cos = torch.where((q == 1) | (q == 2), -cos, cos)
    # sin(qπ/2 + a): q = 0: sin a, 1: cos a, 2: −sin a, 3: −cos a
    sin = torch.where((q & 1) == 1, c, s)
    sin = torch.where(q >= 2, -sin, sin)
    return torch.where(odd, sin, cos)


def sqrt_rn(t: torch.Tensor) -> torch.Tensor:
    """IEEE (correctly rounded) sqrt of a float32 or float64 tensor. torch's vectorised CPU sqrt may be
    1 ulp off. float32: round the float64 root, then move to the float32 neighbour when the midpoint test
    says so (all products exact in float64). float64: numpy's sqrt on CPU, CUDA's (IEEE) on a GPU."""
    if t.dtype == torch.float64:
        if t.device.type == "cpu":
            import numpy as np

            return torch.from_numpy(np.sqrt(t.numpy()))
        return torch.sqrt(t)
    s = torch.sqrt(t.double()).float()
    t64 = t.double()
    up, dn = torch.nextafter(s, torch.full_like(s, float("inf"))), torch.nextafter(s, torch.zeros_like(s))
    mid_up, mid_dn = (s.double() + up.double()) * 0.5, (s.double() + dn.double()) * 0.5
    s = torch.where(mid_up * mid_up < t64, up, s)
    return torch.where(mid_dn * mid_dn > t64, dn, s)


def draw(key: int, n: int, offset: int = 0, law: str = "gaussian", device="cpu") -> torch.Tensor:
    """n float32 draws for element indices offset … offset + n − 1."""
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; allowed: {list(LAWS)}")
    index = torch.arange(offset, offset + n, dtype=torch.int64, device=device)
    return draw_at(key, index, law)


def draw_at(key: int, index: torch.Tensor, law: str = "gaussian") -> torch.Tensor:
    """float32 draws for arbitrary int64 element indices (rows of an embedding, say)."""
    if law == "rademacher":
        w1, _ = words(key, index)
        return 1.0 - (w1 >> 31).to(torch.float32) * 2.0
    w1, w2 = words(key, index >> 1)
    u1 = ((w1 >> 8) + 1).to(torch.float32) * TWO_M24
    r = sqrt_rn(log_unit(u1) * -2.0)
    return r * turn(w2, (index & 1) == 1)


# ---------------------------------------------------------------------------------------------- half storage
HALF = (torch.bfloat16, torch.float16)


def round_half(x: torch.Tensor, dtype: torch.dtype, key: int | None = None, index: torch.Tensor | None = None):
    """float32 ``x`` stored as bfloat16 or float16, every backend's rounding, on the bits of x.

    ``key`` None: to nearest, ties to even (torch's conversion). Otherwise stochastic: |x| rounds up to the next
    value of ``dtype`` with probability (|x| − the value below)/(their spacing), from the 32 counter bits
    w = w1(key, i) of element index i (``index``): bfloat16 adds w's low 16 bits to x's and keeps the top 16;
    float16 adds w's low 13 bits where its spacing is x's 2^13 ulps (|x| ≥ 2^-14), and in its subnormal range
    (spacing 2^-24) rounds up when (w >> 8)·2^-24 < the fraction of |x|·2^24. Unbiased up to 2^-24 of a
    spacing; the carry into the exponent is the next value, past the largest one infinity. NaN stays NaN."""
    if dtype not in HALF:
        raise ValueError(f"round_half to {dtype}; allowed: {list(HALF)}")
    bits = x.float().contiguous().view(torch.int32).to(torch.int64) & M32
    sign, a = (bits >> 16) & 0x8000, bits & 0x7FFFFFFF
    w = words(key, index.to(torch.int64))[0] if key is not None else None
    if dtype == torch.bfloat16:
        add = (a >> 16 & 1) + 0x7FFF if w is None else w & 0xFFFF
        h = (a + add) >> 16
        nan = 0x7FC0
    else:
        add = (a >> 13 & 1) + 0xFFF if w is None else w & 0x1FFF
        r = (a + add) & ~0x1FFF
        normal = torch.where(r >= 0x47800000, 0x7C00, (r >> 13) - (112 << 10))  # 2^16 and beyond: infinity
        s = torch.minimum(a, torch.tensor(0x38800000)).to(torch.int32).view(torch.float32) * 2.0**24  # exact
        k = s.trunc()
        frac = s - k
        if w is None:
            up = (frac > 0.5) | ((frac == 0.5) & (k.to(torch.int64) % 2 == 1))
        else:
            up = (w >> 8).to(torch.float32) * TWO_M24 < frac
        h = torch.where(a >= 0x38800000, normal, k.to(torch.int64) + up.to(torch.int64))
        nan = 0x7E00
    h = sign | torch.where(a > 0x7F800000, nan, h)
    return h.to(torch.uint16).view(dtype).view(x.shape)


def widen(t: torch.Tensor) -> torch.Tensor:
    """A bfloat16/float16 tensor as float32 (exact); float32/float64 as they are."""
    return t.float() if t.dtype in HALF else t
