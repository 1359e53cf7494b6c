"""Vectorizable transcendental functions emitted as LLVM IR (llvmlite).

``emit_unary(builder, name, x)`` and ``emit_binary(builder, "pow", x, y)``
compute a math function of ``x``: a ``float`` / ``double`` scalar or a
vector of them (``<N x float>``, ``<N x double>``). Every function is
straight-line IR: range reduction, a polynomial, and ``select`` for the
special cases, with no libm call and no branch, so LLVM's loop vectorizer
vectorizes loops that use them (and code that is already vectorized works
lane-wise). Only LLVM intrinsics that vectorize are used: ``fmuladd``,
``fabs``, ``copysign``, ``sqrt``, ``floor``, ``rint``.

By default each (function, type) pair is emitted once per module as an
``internal alwaysinline`` function (``graphc.math.<name>.<type>``, e.g.
``graphc.math.exp.v8f32``) and the builder gets a call to it: the IR stays
small, and the always-inliner (first in every optimisation pipeline) puts
the body back into the loop before the vectorizer runs. ``inline=True``
emits the body at the builder instead.

Accuracy against NumPy (docs/transcendentals.md has the table): float32
within 2 ULP for every float32 input (checked exhaustively; pow sampled);
float64 within 3 ULP on random sweeps, sin/cos/tan for ``|x| < 2**32 pi/2``
(beyond: the reduction is off by about an ulp of x; nan from 2**52 on).
Special values (inf, nan, signed zeros, denormals, overflow, gradual
underflow, pow's C99 cases) follow NumPy.

Methods, in short (the doc has details). Polynomial coefficients are minimax
fits (weighted Remez exchange, mpmath) derived for this module; the script
is in docs/transcendentals.md.

- exp, expm1: x = k ln2 + r (Cody-Waite, |r| <= ln2/2), expm1(r) = r + r^2 Q(r),
  2^k applied as two exact power-of-two factors so results underflow
  gradually and overflow to inf with one rounding.
- log, log1p: x = 2^e m, m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s),
  s = f/(2+f), f = m-1; log1p adds the rounding error of 1+x back.
- tanh = copysign(em / (em + 2), x), em = expm1(2|x|) (no cancellation).
- sigmoid = 1/(1+e) or e/(1+e), e = exp(-|x|).
- sin, cos, tan: float64 Cody-Waite reduction by pi/2 (six-part constant,
  exact for |x| < 2^32 pi/2); float32 is reduced exactly for every input by
  a Payne-Hanek reduction carried out in float64 (2/pi in 29-bit chunks,
  each product exact), then evaluated in float64.
- pow(x, y) = exp(y log|x|): float32 in float64; float64 with log|x| and
  y log|x| in double-double (Dekker products, no FMA needed).
- erf: x + x (P(x^2) - 1) for |x| < 1, else 1 - exp(-x^2) G(|x|), G fitted to erfcx.
- sqrt: ``llvm.sqrt`` (correctly rounded); rsqrt = 1 / sqrt(x).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import llvmlite.ir as ir

__all__ = ["SUPPORTED_UNARY", "SUPPORTED_BINARY", "emit_unary", "emit_binary", "math_function"]

SUPPORTED_UNARY = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "sin", "cos", "tan",
                   "sqrt", "rsqrt", "erf")
SUPPORTED_BINARY = ("pow",)

Number = Union[int, float]
Operand = Union[ir.Value, Number]

# ---------------------------------------------------------------------------
# Constants. Polynomials are in Horner order (constant term first). All were
# derived by the Remez script in docs/transcendentals.md; the comment gives
# the fitted form, the interval and the fit's own weighted error.
# ---------------------------------------------------------------------------
# expm1(r) = r + r^2 Q(r), |r| <= 1.002 ln2/2, relative error 2^-31.9 / 2^-61.7
EXPM1_Q = {
    32: (0.5000000044662566, 0.16666666367085514, 0.0416663586029485, 0.008333389797241937,
         0.0013940823008580013, 0.0001984589314306612),
    64: (0.5, 0.16666666666666677, 0.041666666666666505, 0.008333333333321513,
         0.0013888888888963463, 0.0001984126988647764, 2.4801587171116743e-05,
         2.7557243803897466e-06, 2.7557403237571426e-07, 2.5109195202013595e-08,
         2.08753352219433e-09),
}
# log1p(f) = 2 atanh(s) = 2s + s z P(z), z = s^2 <= 0.02947; error (weight z/2) 2^-30.2 / 2^-66.7
LOG_P = {
    32: (0.666667767171778, 0.3997749557392381, 0.29873073219686014),
    64: (0.6666666666666666, 0.40000000000006286, 0.2857142856907299, 0.2222222264874658,
         0.18181775508832118, 0.15387097637838434, 0.1324996231061294, 0.13252752320535544),
}
# float32 pow computes log|x| in double: a degree-3 P, error (weight z/2) 2^-37.6
LOG_P_POW32 = (0.6666666564130511, 0.40000336217021554, 0.2853723843951151, 0.2358356704276813)
# pow's double-double log: 2 atanh(s) = 2s + (2/3) s^3 + s^5 P(z); error (weight z^2/2) 2^-66.3
LOG5_P = (0.4000000000000227, 0.28571428570091884, 0.22222222521355084, 0.18181784237004558,
          0.1538676353134005, 0.13256668880051684, 0.13197749508851564)
# sin r = r + r^3 S(z), cos r = 1 - z/2 + z^2 C(z), z = r^2, |r| <= 1.001 pi/4.
# Both evaluated in float64; the float32 set is shorter (errors 2^-37.5, 2^-42.9).
SIN_S = {
    32: (-0.16666666640588387, 0.008333329280543634, -0.00019839304420837058,
         2.7180465170661555e-06),
    64: (-0.16666666666666666, 0.008333333333333323, -0.0001984126984125465,
         2.7557319213985157e-06, -2.5052104860779026e-08, 1.6058360440816017e-10,
         -7.578403330847389e-13),
}
COS_C = {
    32: (0.04166666661910661, -0.001388888346724017, 2.4799451546358912e-05,
         -2.72050460217482e-07),
    64: (0.041666666666666595, -0.0013888888888872895, 2.4801587288748234e-05,
         -2.755731414863355e-07, 2.0875696573618028e-09, -1.1358310531927826e-11),
}
# erf(x) = x P(x^2) on |x| <= 1, relative error 2^-29.6 / 2^-62.7
ERF_SMALL = {
    32: (1.1283791657266526, -0.3761262582409769, 0.11283585148319324, -0.026853811951148904,
         0.005188327752419464, -0.0008010194456952618, 7.853864757320464e-05),
    64: (1.1283791670955126, -0.3761263890318375, 0.11283791670954857, -0.026866170645072893,
         0.005223977624780849, -0.0008548326978741269, 0.00012055331036868164,
         -1.492559350619007e-05, 1.6460972806618244e-06, -1.6350025120702805e-07,
         1.4657879211358954e-08, -1.1365663730815376e-09, 5.945258317858944e-11),
}
# erfc(x) = exp(-x^2) G(x - c) on [1, ERF_XMAX]; error weighted by erfc/erf: 2^-31 / 2^-65.4
ERF_XMAX = {32: 4.0, 64: 6.0}
ERFC_CENTER = {32: 2.5, 64: 3.5}
ERFC_G = {
    32: (0.21080632445276737, -0.07434950234015365, 0.02492940161021285, -0.007999181708700266,
         0.0025234782495203788, -0.0006475504160056815, 0.00022145724919368204,
         -0.00013985979746031555, -5.969023095065668e-05, -2.834777532496505e-05),
    64: (0.155293655608891, -0.041323577833238395, 0.01066113319294004, -0.0026730744381588114,
         0.0006526863251312769, -0.00015546893617250084, 3.6181675871233774e-05,
         -8.237967483749044e-06, 1.8372977156400503e-06, -4.0163071963901377e-07,
         8.61763932836303e-08, -1.835594579850733e-08, 3.6369982703181085e-09,
         -7.440523735936053e-10, 2.5159487652184354e-10, 2.7522444410783247e-11,
         5.8908905643055835e-12, -1.9266415734803512e-11, -9.764670332301369e-12,
         -1.5346926673144086e-12, 8.444376798343458e-13, 5.363873240181856e-13,
         1.4197601829192247e-13, 1.9396400032723793e-14, 1.169854868279046e-15),
}
# ln2 = HI + LO with HI short enough that k * HI is exact for every k used
LN2 = {32: (0.693359375, -0.00021219444005469057),
       64: (0.6931471806019545, -4.2009150726810846e-11)}
LOG2E = 1.4426950408889634
# pi/2 = P1 + ... + P6; P1..P5 have 21 significant bits (k * Pi exact for k < 2^32)
PIO2_PARTS = (1.570796012878418, 3.139164164167596e-07, 6.22337468017542e-14,
              -2.5082791584901525e-20, 3.521561362568105e-27, -1.4973849048591698e-33)
PIO2 = 1.5707963267948966
TWO_OVER_PI = 0.6366197723675814
SIN_EXACT_LIMIT_F64 = 2.0 ** 32 * PIO2 * 0.999   # |x| below this: exact Cody-Waite reduction
SIN_NAN_LIMIT_F64 = 2.0 ** 52                     # |x| at or above this: nan
# 2/pi = C_0 + ... + C_6: C_0..C_5 are bits 29i+1 .. 29i+29 of 2/pi (x * C_i is
# exact for 24-bit x), C_6 the rest rounded to a double (sum within 2^-231)
TWO_OVER_PI_CHUNKS = (0.636619770899415, 1.4681663246252086e-09, 2.2760100671971816e-18,
                      5.8812147387730434e-27, 1.0346868700836215e-35, 3.783256351091319e-45,
                      3.7204748827448538e-53)
# |2/3 - TWO_THIRDS[0]| is carried by TWO_THIRDS[1]
TWO_THIRDS = (0.6666666666666666, 3.700743415417188e-17)


class _Fmt:
    """Bit layout of one IEEE binary format."""

    def __init__(self, bits: int):
        self.bits = bits
        self.mant = 52 if bits == 64 else 23
        self.bias = 1023 if bits == 64 else 127
        self.magic = 1.5 * 2.0 ** self.mant          # x + magic - magic rounds |x| < 2^(mant-1) to integer
        self.min_normal = 2.0 ** (1 - self.bias)
        self.sqrt_half_bits = 0x3FE6A09E667F3BCD if bits == 64 else 0x3F3504F3
        self.one_bits = 0x3FF0000000000000 if bits == 64 else 0x3F800000
        self.mant_mask = (1 << self.mant) - 1
        self.sign_mask = 1 << (bits - 1)
        self.denormal_scale = self.mant + 2            # 2^(mant+2) x is normal for every denormal x
        # exp / expm1: inputs are clamped to [lo, hi]; exp(lo) rounds to 0, exp(hi) to inf
        self.exp_lo, self.exp_hi = (-746.0, 710.0) if bits == 64 else (-104.0, 89.0)


_FMT = {32: _Fmt(32), 64: _Fmt(64)}


class _Ops:
    """Type-generic IR building: the same calls work on scalars and vectors
    of float or double. Python numbers are turned into constants of the
    operation's type."""

    def __init__(self, builder: ir.IRBuilder, ty: ir.Type):
        self.b = builder
        self.ty = ty
        self.lanes = ty.count if isinstance(ty, ir.VectorType) else None
        elem = ty.element if self.lanes else ty
        if not isinstance(elem, (ir.FloatType, ir.DoubleType)):
            raise TypeError(f"llvm_math: expected float or double (or a vector of them), got {ty}")
        self.fmt = _FMT[64 if isinstance(elem, ir.DoubleType) else 32]
        self.bits = self.fmt.bits
        ity = ir.IntType(self.bits)
        self.ity = ir.VectorType(ity, self.lanes) if self.lanes else ity

    def other(self, bits: int) -> "_Ops":
        """The same shape with float (32) or double (64) elements."""
        elem = ir.DoubleType() if bits == 64 else ir.FloatType()
        return _Ops(self.b, ir.VectorType(elem, self.lanes) if self.lanes else elem)

    # constants and conversion of operands
    def k(self, v: Number) -> ir.Constant:
        return ir.Constant(self.ty, float(v))

    def ki(self, v: int) -> ir.Constant:
        return ir.Constant(self.ity, v)

    def _f(self, v: Operand) -> ir.Value:
        return v if isinstance(v, ir.Value) else self.k(v)

    def _i(self, v: Union[ir.Value, int]) -> ir.Value:
        return v if isinstance(v, ir.Value) else self.ki(v)

    # float arithmetic
    def add(self, a: Operand, c: Operand) -> ir.Value:
        return self.b.fadd(self._f(a), self._f(c))

    def sub(self, a: Operand, c: Operand) -> ir.Value:
        return self.b.fsub(self._f(a), self._f(c))

    def mul(self, a: Operand, c: Operand) -> ir.Value:
        return self.b.fmul(self._f(a), self._f(c))

    def div(self, a: Operand, c: Operand) -> ir.Value:
        return self.b.fdiv(self._f(a), self._f(c))

    def neg(self, a: ir.Value) -> ir.Value:
        return self.b.fneg(a)

    def fma(self, a: Operand, c: Operand, d: Operand) -> ir.Value:
        """a*c + d, fused where the target has FMA (llvm.fmuladd). Only for
        polynomial-style evaluation where either rounding is fine."""
        return self.call("fmuladd", self._f(a), self._f(c), self._f(d))

    def poly(self, x: ir.Value, coeffs: Sequence[float]) -> ir.Value:
        acc = self.k(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, c)
        return acc

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        mod = self.b.module
        full = f"llvm.{name}.{_type_suffix(self.ty)}"
        fn = mod.globals.get(full)
        if fn is None:
            fn = ir.Function(mod, ir.FunctionType(self.ty, [self.ty] * len(args)), name=full)
        return self.b.call(fn, list(args))

    def fabs(self, a: ir.Value) -> ir.Value:
        return self.call("fabs", a)

    def copysign(self, mag: ir.Value, sign: ir.Value) -> ir.Value:
        return self.call("copysign", mag, sign)

    def floor(self, a: ir.Value) -> ir.Value:
        return self.call("floor", a)

    def rint(self, a: ir.Value) -> ir.Value:
        return self.call("rint", a)

    def sqrt(self, a: ir.Value) -> ir.Value:
        return self.call("sqrt", a)

    def rint_small(self, a: ir.Value) -> ir.Value:
        """Round to nearest integer, for |a| < 2^(mantissa bits - 1)."""
        return self.sub(self.add(a, self.fmt.magic), self.fmt.magic)

    # comparisons (ordered: false when either side is nan) and select
    def cmp(self, op: str, a: Operand, c: Operand, unordered: bool = False) -> ir.Value:
        fn = self.b.fcmp_unordered if unordered else self.b.fcmp_ordered
        return fn(op, self._f(a), self._f(c))

    def isnan(self, a: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, cond: ir.Value, a: Operand, c: Operand) -> ir.Value:
        return self.b.select(cond, self._f(a), self._f(c))

    def and_(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.and_(a, c)

    def not_(self, a: ir.Value) -> ir.Value:
        return self.b.not_(a)

    # bit manipulation on the same-width integer type
    def asint(self, a: ir.Value) -> ir.Value:
        return self.b.bitcast(a, self.ity)

    def from_bits(self, a: ir.Value) -> ir.Value:
        return self.b.bitcast(a, self.ty)

    def iadd(self, a: ir.Value, c: Union[ir.Value, int]) -> ir.Value:
        return self.b.add(a, self._i(c))

    def iand(self, a: ir.Value, c: Union[ir.Value, int]) -> ir.Value:
        return self.b.and_(a, self._i(c))

    def ior(self, a: ir.Value, c: Union[ir.Value, int]) -> ir.Value:
        return self.b.or_(a, self._i(c))

    def shl(self, a: ir.Value, n: int) -> ir.Value:
        return self.b.shl(a, self.ki(n))

    def lshr(self, a: ir.Value, n: int) -> ir.Value:
        return self.b.lshr(a, self.ki(n))

    def signbit(self, a: ir.Value) -> ir.Value:
        return self.iand(self.asint(a), self.fmt.sign_mask)

    def flip_sign(self, a: ir.Value, sign_bits: ir.Value) -> ir.Value:
        """a with its sign flipped where ``sign_bits`` (bits & sign mask) is set."""
        return self.from_bits(self.b.xor(self.asint(a), sign_bits))

    def pow2(self, kf: ir.Value) -> ir.Value:
        """2^kf for integer-valued kf with a normal result: the biased
        exponent is formed in the low bits of kf + magic and shifted up
        (no float-to-int conversion, which AVX2 lacks for 64-bit lanes)."""
        t = self.add(kf, self.fmt.magic + self.fmt.bias)
        return self.from_bits(self.shl(self.asint(t), self.fmt.mant))

    def int_to_float_small(self, a: ir.Value) -> ir.Value:
        """Float value of a non-negative integer below 2^mant (exact)."""
        two_m = 2.0 ** self.fmt.mant
        return self.sub(self.from_bits(self.ior(a, self.asint(self.k(two_m)))), two_m)

    # double-double helpers (plain mul/add: they rely on each op rounding once)
    def two_sum(self, a: ir.Value, c: ir.Value) -> Tuple[ir.Value, ir.Value]:
        s = self.add(a, c)
        bb = self.sub(s, a)
        err = self.add(self.sub(a, self.sub(s, bb)), self.sub(c, bb))
        return s, err

    def fast_two_sum(self, a: ir.Value, c: ir.Value) -> Tuple[ir.Value, ir.Value]:
        """Exact a + c = s + err when |a| >= |c|."""
        s = self.add(a, c)
        return s, self.sub(c, self.sub(s, a))

    def split(self, a: ir.Value) -> Tuple[ir.Value, ir.Value]:
        """Veltkamp split into two halves of at most 26 bits (|a| < 2^995)."""
        t = self.mul(a, 134217729.0)
        hi = self.sub(t, self.sub(t, a))
        return hi, self.sub(a, hi)

    def two_prod(self, a: ir.Value, c: ir.Value) -> Tuple[ir.Value, ir.Value]:
        """Exact a * c = p + err (Dekker), without relying on FMA."""
        p = self.mul(a, c)
        ah, al = self.split(a)
        ch, cl = self.split(c)
        err = self.add(self.add(self.add(self.sub(self.mul(ah, ch), p), self.mul(ah, cl)),
                                self.mul(al, ch)), self.mul(al, cl))
        return p, err


def _type_suffix(ty: ir.Type) -> str:
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_type_suffix(ty.element)}"
    return "f64" if isinstance(ty, ir.DoubleType) else "f32"


# ---------------------------------------------------------------------------
# exp family
# ---------------------------------------------------------------------------
def _clamp_exp_arg(o: _Ops, x: ir.Value, lower: bool = True, upper: bool = True) -> ir.Value:
    """x clamped to the range where exp is neither exactly 0 nor inf
    (ordered compares: nan passes through and propagates to the result)."""
    if lower:
        x = o.select(o.cmp("<", x, o.fmt.exp_lo), o.fmt.exp_lo, x)
    if upper:
        x = o.select(o.cmp(">", x, o.fmt.exp_hi), o.fmt.exp_hi, x)
    return x


def _exp_reduce(o: _Ops, x: ir.Value, prec: int = 0) -> Tuple[ir.Value, ir.Value, Optional[ir.Value]]:
    """x = k ln2 + r [+ r_err] with integer-valued k, |r| <= ln2/2 (x
    clamped). For float64 precision (``prec``, default: the arithmetic's)
    also r's rounding error r_err; float32 does not need it."""
    hi, lo = LN2[o.bits]
    kf = o.rint_small(o.mul(x, LOG2E))
    r_hi = o.sub(x, o.mul(kf, hi))          # exact: k*hi is exact and close to x
    t = o.mul(kf, lo)
    r = o.sub(r_hi, t)
    if (prec or o.bits) == 32:
        return kf, r, None
    return kf, r, o.sub(o.sub(r_hi, r), t)  # Fast2Sum: |r_hi| >= |t|


def _expm1_poly(o: _Ops, r: ir.Value, r_err: Optional[ir.Value], prec: int = 0) -> ir.Value:
    """expm1(r + r_err) = em + r_err (1 + em), em = r + r^2 Q(r)."""
    em = o.fma(o.mul(r, r), o.poly(r, EXPM1_Q[prec or o.bits]), r)
    if r_err is None:
        return em
    return o.fma(r_err, o.add(em, 1.0), em)


def _split_pow2(o: _Ops, kf: ir.Value) -> Tuple[ir.Value, ir.Value]:
    """2^k as two normal factors 2^k1 * 2^k2: multiplying by them in turn
    rounds once even when the result is denormal or overflows."""
    k1 = o.rint_small(o.mul(kf, 0.5))
    return o.pow2(k1), o.pow2(o.sub(kf, k1))


def _exp_core(o: _Ops, x: ir.Value, x_lo: Optional[ir.Value] = None, upper: bool = True,
              prec: int = 0) -> ir.Value:
    """exp(x [+ x_lo]) including inf, -inf and nan inputs (nan propagates
    through the arithmetic: the 2^k factors of a nan are finite). ``prec``
    32 with double arithmetic: accurate enough for a float32 result."""
    kf, r, r_err = _exp_reduce(o, _clamp_exp_arg(o, x, upper=upper), prec)
    if x_lo is not None:
        r_err = x_lo if r_err is None else o.add(r_err, x_lo)
    p = o.add(_expm1_poly(o, r, r_err, prec), 1.0)
    s1, s2 = _split_pow2(o, kf)
    return o.mul(o.mul(p, s1), s2)


def _exp(o: _Ops, x: ir.Value) -> ir.Value:
    return _exp_core(o, x)


def _expm1_small_k(o: _Ops, em: ir.Value, t: ir.Value) -> ir.Value:
    """2^k (1 + em) - 1 as 2^k em + (2^k - 1), t = 2^k: 2^k - 1 is exact
    for small k, which keeps em's relative accuracy."""
    return o.fma(em, t, o.sub(t, 1.0))


def _expm1(o: _Ops, x: ir.Value) -> ir.Value:
    kf, r, r_err = _exp_reduce(o, _clamp_exp_arg(o, x))
    em = _expm1_poly(o, r, r_err)
    s1, s2 = _split_pow2(o, kf)
    small = _expm1_small_k(o, em, o.mul(s1, s2))
    # large k: 2^k - 1 is no longer exact, and 2^k alone may overflow
    big = o.sub(o.mul(o.mul(o.add(em, 1.0), s1), s2), 1.0)
    res = o.select(o.cmp(">", kf, o.fmt.mant + 1), big, small)
    return o.select(o.cmp("==", x, 0.0), x, res)       # keeps -0


def _tanh(o: _Ops, x: ir.Value) -> ir.Value:
    # tanh|x| = em / (em + 2), em = expm1(2|x|): no cancellation anywhere.
    # |x| >= 20 gives exactly 1 in both formats, so 2|x| <= 40, k <= 58 and
    # one 2^k factor is enough; nan propagates.
    a = o.fabs(x)
    v = o.mul(o.select(o.cmp(">", a, 20.0), 20.0, a), 2.0)
    kf, r, r_err = _exp_reduce(o, v)
    em = _expm1_small_k(o, _expm1_poly(o, r, r_err), o.pow2(kf))
    q = o.div(em, o.add(em, 2.0))
    # small q: h - h q with h = em/2 equals q but takes none of the rounding of em + 2
    h = o.mul(em, 0.5)
    t = o.select(o.cmp("<", q, 0.25), o.fma(o.neg(h), q, h), q)
    return o.copysign(t, x)


def _sigmoid(o: _Ops, x: ir.Value) -> ir.Value:
    # exp(-|x|) never overflows; e/(1+e) keeps denormal results for x << 0
    e = _exp_core(o, o.neg(o.fabs(x)), upper=False)
    num = o.select(o.cmp(">=", x, 0.0), 1.0, e)
    return o.div(num, o.add(e, 1.0))


# ---------------------------------------------------------------------------
# log family
# ---------------------------------------------------------------------------
def _log_decompose(o: _Ops, x: ir.Value, denormals: bool = True) -> Tuple[ir.Value, ir.Value]:
    """x = 2^e (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)); e as a float, f
    exact. Meaningful for positive finite x only."""
    fmt = o.fmt
    eadj = None
    if denormals:
        tiny = o.cmp("<", x, fmt.min_normal)
        x = o.select(tiny, o.mul(x, 2.0 ** fmt.denormal_scale), x)
        eadj = o.select(tiny, -float(fmt.denormal_scale), 0.0)
    # adding one - sqrt_half carries into the exponent exactly when the
    # mantissa is >= sqrt(2), which halves m and bumps e
    ix = o.iadd(o.asint(x), fmt.one_bits - fmt.sqrt_half_bits)
    e_raw = o.lshr(ix, fmt.mant)
    ef = o.sub(o.int_to_float_small(e_raw), float(fmt.bias))
    if eadj is not None:
        ef = o.add(ef, eadj)
    m = o.from_bits(o.iadd(o.iand(ix, fmt.mant_mask), fmt.sqrt_half_bits))
    return ef, o.sub(m, 1.0)


def _log1p_reduced(o: _Ops, f: ir.Value, coeffs: Optional[Sequence[float]] = None) -> ir.Value:
    """log(1+f) for 1+f in [sqrt(1/2), sqrt(2)): 2 atanh(s), s = f/(2+f),
    written as f - f^2/2 + s (f^2/2 + R) so the large terms are exact-ish."""
    s = o.div(f, o.add(f, 2.0))
    z = o.mul(s, s)
    r = o.mul(z, o.poly(z, coeffs or LOG_P[o.bits]))
    hfsq = o.mul(o.mul(f, f), 0.5)
    return o.sub(f, o.sub(hfsq, o.mul(s, o.add(hfsq, r))))


def _log_specials(o: _Ops, x: ir.Value, res: ir.Value, zero_at: float) -> ir.Value:
    """log-like specials: x == zero_at -> -inf, x < zero_at -> nan, inf -> inf, nan -> nan."""
    inf = float("inf")
    res = o.select(o.cmp("==", x, inf), inf, res)
    res = o.select(o.cmp("==", x, zero_at), -inf, res)
    return o.select(o.cmp("<", x, zero_at, unordered=True), float("nan"), res)


def _log(o: _Ops, x: ir.Value) -> ir.Value:
    hi, lo = LN2[o.bits]
    ef, f = _log_decompose(o, x)
    lm = _log1p_reduced(o, f)
    res = o.add(o.mul(ef, hi), o.add(lm, o.mul(ef, lo)))
    return _log_specials(o, x, res, 0.0)


def _log1p(o: _Ops, x: ir.Value) -> ir.Value:
    hi, lo = LN2[o.bits]
    u = o.add(x, 1.0)
    ef, f = _log_decompose(o, u, denormals=False)
    # log1p(x) = log(u) + log(1 + d/u), d = x - (u - 1) the rounding error of 1 + x
    c = o.div(o.sub(x, o.sub(u, 1.0)), u)
    lm = _log1p_reduced(o, f)
    res = o.add(o.mul(ef, hi), o.add(lm, o.add(o.mul(ef, lo), c)))
    res = o.select(o.cmp("==", x, 0.0), x, res)
    return _log_specials(o, x, res, -1.0)


# ---------------------------------------------------------------------------
# sin, cos, tan
# ---------------------------------------------------------------------------
def _sincos_poly(o: _Ops, r: ir.Value, bits: int,
                 r_lo: Optional[ir.Value] = None) -> Tuple[ir.Value, ir.Value]:
    """(sin, cos) of r [+ r_lo] for |r| <= pi/4 in double, coefficients for
    `bits` precision; for float64, cos keeps the rounding error of 1 - r^2/2."""
    z = o.mul(r, r)
    s_tail = o.mul(o.mul(r, z), o.poly(z, SIN_S[bits]))
    hz = o.mul(z, 0.5)
    w = o.sub(1.0, hz)
    c_low = o.sub(o.sub(1.0, w), hz) if bits == 64 else o.k(0.0)
    c_tail = o.fma(o.mul(z, z), o.poly(z, COS_C[bits]), c_low)
    if r_lo is not None:
        # sin(r + d) ~ sin r + d cos r, cos(r + d) ~ cos r - d sin r
        s_tail = o.fma(r_lo, w, s_tail)
        c_tail = o.fma(o.neg(r), r_lo, c_tail)
    return o.add(r, s_tail), o.add(w, c_tail)


def _quadrant_bits(o: _Ops, kf: ir.Value) -> Tuple[ir.Value, ir.Value]:
    """(k & 1 != 0, k & 2 != 0) for integer-valued 0 <= kf < 2^52 (double),
    read from the low bits of kf + 2^52; never poison, even for nan."""
    kb = o.asint(o.add(kf, 2.0 ** o.fmt.mant))
    zero = o.ki(0)
    odd = o.b.icmp_unsigned("!=", o.iand(kb, 1), zero)
    two = o.b.icmp_unsigned("!=", o.iand(kb, 2), zero)
    return odd, two


def _trig_from_quadrant(o: _Ops, name: str, s: ir.Value, c: ir.Value, odd: ir.Value,
                        two: ir.Value) -> ir.Value:
    """sin, cos or tan of r + k pi/2 (k >= 0) from sin r, cos r and k's low bits."""
    if name == "tan":
        return o.select(odd, o.neg(o.div(c, s)), o.div(s, c))
    if name == "sin":
        v = o.select(odd, c, s)
        return o.select(two, o.neg(v), v)
    # cos(r + k pi/2): k=0 c, 1 -s, 2 -c, 3 s
    v = o.select(odd, s, c)
    return o.select(o.b.xor(odd, two), o.neg(v), v)


def _trig_f64(o: _Ops, name: str, x: ir.Value) -> ir.Value:
    """float64: Cody-Waite reduction of |x| by pi/2 with a six-part constant;
    every k * P_i is exact for |x| < 2^32 pi/2, beyond that the reduction
    carries an error of about one ulp of x; nan from 2^52 on."""
    a = o.fabs(x)
    kf = o.rint(o.mul(a, TWO_OVER_PI))
    r = o.sub(a, o.mul(kf, PIO2_PARTS[0]))      # exact (Sterbenz)
    lo = None
    for p in PIO2_PARTS[1:4]:
        r, e = o.two_sum(r, o.neg(o.mul(kf, p)))
        lo = e if lo is None else o.add(lo, e)
    for p in PIO2_PARTS[4:]:
        lo = o.sub(lo, o.mul(kf, p))
    r, r_lo = o.fast_two_sum(r, lo)
    s, c = _sincos_poly(o, r, 64, r_lo)
    odd, two = _quadrant_bits(o, kf)
    res = _trig_from_quadrant(o, name, s, c, odd, two)
    if name != "cos":
        res = o.flip_sign(res, o.signbit(x))   # odd functions
    return o.select(o.cmp(">=", a, SIN_NAN_LIMIT_F64), float("nan"), res)


def _trig_f32(o: _Ops, name: str, x: ir.Value) -> ir.Value:
    """float32: exact reduction for every input (Payne-Hanek in float64).
    |x| has 24 significant bits, so |x| * C_i is exact in float64 for the
    29-bit chunks C_i of 2/pi; each product is reduced mod 4 exactly and
    the sum is kept in double-double, giving |x| 2/pi mod 4 to ~2^-70."""
    d = o.other(64)
    a = d.b.fpext(o.fabs(x), d.ty)
    # chunks 0-4: products up to 2^127, reduced mod 4 exactly and summed in
    # double-double; chunks 5-6: |x| C_i < 2^-19, plain sums into the low part
    total = err = None
    for chunk in TWO_OVER_PI_CHUNKS[:5]:
        y = d.mul(a, chunk)
        t = d.sub(y, d.mul(d.floor(d.mul(y, 0.25)), 4.0))
        if total is None:
            total = t
        else:
            total, e = d.two_sum(total, t)
            err = e if err is None else d.add(err, e)
    tail = d.add(d.mul(a, TWO_OVER_PI_CHUNKS[5]), d.mul(a, TWO_OVER_PI_CHUNKS[6]))
    err = d.add(err, tail)
    total = d.sub(total, d.mul(d.floor(d.mul(total, 0.25)), 4.0))   # exact, in [0, 4)
    kf = d.rint(total)
    f = d.add(d.sub(total, kf), err)                                # in about [-1/2, 1/2]
    r = d.mul(f, PIO2)
    s, c = _sincos_poly(d, r, 32)
    odd, two = _quadrant_bits(d, kf)
    res = o.b.fptrunc(_trig_from_quadrant(d, name, s, c, odd, two), o.ty)
    if name != "cos":
        res = o.flip_sign(res, o.signbit(x))
    return res


def _trig(name: str) -> Callable[[_Ops, ir.Value], ir.Value]:
    def emit(o: _Ops, x: ir.Value) -> ir.Value:
        return _trig_f64(o, name, x) if o.bits == 64 else _trig_f32(o, name, x)
    return emit


# ---------------------------------------------------------------------------
# sqrt, rsqrt, erf
# ---------------------------------------------------------------------------
def _sqrt(o: _Ops, x: ir.Value) -> ir.Value:
    return o.sqrt(x)


def _rsqrt(o: _Ops, x: ir.Value) -> ir.Value:
    return o.div(1.0, o.sqrt(x))


def _erf(o: _Ops, x: ir.Value) -> ir.Value:
    bits = o.bits
    # x + x (P(x^2) - 1): rounds like x for small x instead of like 2/sqrt(pi) x
    p1 = (ERF_SMALL[bits][0] - 1.0,) + ERF_SMALL[bits][1:]
    small = o.fma(x, o.poly(o.mul(x, x), p1), x)
    a = o.fabs(x)
    xmax = ERF_XMAX[bits]
    a = o.select(o.cmp(">", a, xmax), xmax, a)   # erf is exactly 1 beyond (nan stays)
    g = o.poly(o.sub(a, ERFC_CENTER[bits]), ERFC_G[bits])
    if bits == 64:
        # exp(-a^2) with a^2 in double-double: a^2's rounding would cost ~1 ulp
        sq, sq_lo = o.two_prod(a, a)
        ex = _exp_core(o, o.neg(sq), o.neg(sq_lo), upper=False)
    else:
        ex = _exp_core(o, o.neg(o.mul(a, a)), upper=False)
    mid = o.copysign(o.sub(1.0, o.mul(ex, g)), x)
    return o.select(o.cmp("<", o.fabs(x), 1.0), small, mid)


# ---------------------------------------------------------------------------
# pow
# ---------------------------------------------------------------------------
def _log_dd(o: _Ops, ax: ir.Value) -> Tuple[ir.Value, ir.Value]:
    """log(ax) as a double-double (about 2^-100 relative), float64, ax > 0 finite."""
    hi, lo = LN2[64]
    ef, f = _log_decompose(o, ax)
    # s = f / (2 + f) as sh + sl
    d, dl = o.fast_two_sum(o.k(2.0), f)
    sh = o.div(f, d)
    p, pe = o.two_prod(sh, d)
    sl = o.div(o.sub(o.sub(o.sub(f, p), pe), o.mul(sh, dl)), d)
    z = o.mul(sh, sh)
    # (2/3) s^3 in double-double; z*sl and the s^5 tail are small enough for plain doubles
    zh, zl = o.two_prod(sh, sh)
    s3, s3e = o.two_prod(zh, sh)
    s3l = o.add(s3e, o.mul(zl, sh))
    c3, c3e = o.two_prod(s3, TWO_THIRDS[0])
    c3l = o.add(c3e, o.add(o.mul(s3l, TWO_THIRDS[0]), o.mul(s3, TWO_THIRDS[1])))
    tail = o.mul(o.mul(sh, o.mul(z, z)), o.poly(z, LOG5_P))
    low = o.add(o.add(o.mul(sl, 2.0), c3l), o.add(o.mul(o.mul(z, sl), 2.0), tail))
    # log1p(f) = 2 sh + c3 + low; then + e ln2 (e * hi exact)
    l1, l1e = o.fast_two_sum(o.mul(sh, 2.0), c3)
    big, be = o.two_sum(o.mul(ef, hi), l1)
    rest = o.add(o.add(be, l1e), o.add(low, o.mul(ef, lo)))
    return o.fast_two_sum(big, rest)


def _pow_specials(o: _Ops, x: ir.Value, y: ir.Value, p: ir.Value) -> ir.Value:
    """C99 / NumPy pow from p = pow(|x|, y) computed for finite nonzero |x|."""
    inf, nan = float("inf"), float("nan")
    ax = o.fabs(x)
    ay = o.fabs(y)
    y_int = o.cmp("==", o.rint(y), y)                        # true for +-inf, false for nan
    half_int = o.cmp("==", o.rint(o.mul(y, 0.5)), o.mul(y, 0.5))
    y_odd = o.and_(y_int, o.not_(half_int))
    ypos, yneg = o.cmp(">", y, 0.0), o.cmp("<", y, 0.0)
    m = o.select(o.isnan(x), x, p)   # log|x| of a nan is not nan by itself
    m = o.select(o.cmp("==", ax, 0.0), o.select(yneg, inf, o.select(ypos, 0.0, m)), m)
    m = o.select(o.cmp("==", ax, inf), o.select(yneg, 0.0, o.select(ypos, inf, m)), m)
    m = o.select(o.and_(o.cmp("==", ax, 1.0), o.cmp("==", ay, inf)), 1.0, m)
    neg_base = o.b.icmp_unsigned("!=", o.signbit(x), o.ki(0))
    res = o.select(o.and_(neg_base, y_odd), o.neg(m), m)
    finite_neg = o.and_(o.cmp("<", x, 0.0), o.cmp(">", x, -inf))
    res = o.select(o.and_(finite_neg, o.not_(y_int)), nan, res)
    res = o.select(o.cmp("==", x, 1.0), 1.0, res)
    return o.select(o.cmp("==", y, 0.0), 1.0, res)


def _pow(o: _Ops, x: ir.Value, y: ir.Value) -> ir.Value:
    if o.bits == 32:
        # log and exp in double with shorter polynomials: log|x| to 2^-37,
        # so y log|x| (|.| < 104 unless the result is 0 or inf) is within
        # 2^-30, and exp to 2^-31: far below float32's rounding
        d = o.other(64)
        xd, yd = d.b.fpext(x, d.ty), d.b.fpext(y, d.ty)
        ef, f = _log_decompose(d, d.fabs(xd), denormals=False)
        hi, lo = LN2[64]
        lg = d.add(d.mul(ef, hi), d.add(_log1p_reduced(d, f, LOG_P_POW32), d.mul(ef, lo)))
        p = _exp_core(d, d.mul(yd, lg), prec=32)
        return o.b.fptrunc(_pow_specials(d, xd, yd, p), o.ty)
    ax = o.fabs(x)
    lh, ll = _log_dd(o, ax)
    # |y| beyond 2^900 already over/underflows for every |x| != 1; the clamp
    # keeps the Dekker split finite (nan passes through)
    big = 2.0 ** 900
    ay = o.fabs(y)
    yc = o.copysign(o.select(o.cmp(">", ay, big), big, ay), y)
    zh, zl = o.two_prod(yc, lh)
    zl = o.add(zl, o.mul(yc, ll))
    # the low part only matters while exp(zh) is neither 0 nor inf
    zl = o.select(o.cmp("<", o.fabs(zh), 1000.0), zl, 0.0)
    p = _exp_core(o, zh, zl)
    return _pow_specials(o, x, y, p)


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------
_UNARY: Dict[str, Callable[[_Ops, ir.Value], ir.Value]] = {
    "exp": _exp, "expm1": _expm1, "log": _log, "log1p": _log1p, "tanh": _tanh,
    "sigmoid": _sigmoid, "sin": _trig("sin"), "cos": _trig("cos"), "tan": _trig("tan"),
    "sqrt": _sqrt, "rsqrt": _rsqrt, "erf": _erf,
}
_BINARY: Dict[str, Callable[[_Ops, ir.Value, ir.Value], ir.Value]] = {"pow": _pow}
assert set(_UNARY) == set(SUPPORTED_UNARY) and set(_BINARY) == set(SUPPORTED_BINARY)


def math_function(module: ir.Module, name: str, ty: ir.Type) -> ir.Function:
    """The module's ``internal alwaysinline`` function computing ``name`` on
    values of type ``ty`` (float, double or a vector of them), created on
    first use as ``graphc.math.<name>.<suffix>``."""
    if name in _UNARY:
        arity, gen = 1, _UNARY[name]
    elif name in _BINARY:
        arity, gen = 2, _BINARY[name]
    else:
        raise KeyError(f"llvm_math: no function {name!r}; supported: "
                       f"{', '.join(SUPPORTED_UNARY + SUPPORTED_BINARY)}")
    fname = f"graphc.math.{name}.{_type_suffix(_check_type(ty))}"
    fn = module.globals.get(fname)
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(ty, [ty] * arity), name=fname)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(gen(_Ops(builder, ty), *fn.args))
    return fn


def _check_type(ty: ir.Type) -> ir.Type:
    elem = ty.element if isinstance(ty, ir.VectorType) else ty
    if not isinstance(elem, (ir.FloatType, ir.DoubleType)):
        raise TypeError(f"llvm_math: expected float or double (or a vector of them), got {ty}")
    return ty


def emit_unary(builder: ir.IRBuilder, name: str, x: ir.Value, inline: bool = False) -> ir.Value:
    """``name(x)`` at ``builder`` for ``name`` in SUPPORTED_UNARY; ``x`` is a
    float or double scalar or vector. Returns a value of x's type."""
    if name not in _UNARY:
        raise KeyError(f"llvm_math: no unary function {name!r}; supported: {', '.join(SUPPORTED_UNARY)}")
    if inline:
        return _UNARY[name](_Ops(builder, _check_type(x.type)), x)
    return builder.call(math_function(builder.module, name, x.type), [x])


def emit_binary(builder: ir.IRBuilder, name: str, x: ir.Value, y: ir.Value, inline: bool = False) -> ir.Value:
    """``name(x, y)`` for ``name`` in SUPPORTED_BINARY (``pow``); x and y
    have the same float/double scalar or vector type."""
    if name not in _BINARY:
        raise KeyError(f"llvm_math: no binary function {name!r}; supported: {', '.join(SUPPORTED_BINARY)}")
    if x.type != y.type:
        raise TypeError(f"llvm_math: {name} needs operands of one type, got {x.type} and {y.type}")
    if inline:
        return _BINARY[name](_Ops(builder, _check_type(x.type)), x, y)
    return builder.call(math_function(builder.module, name, x.type), [x, y])
