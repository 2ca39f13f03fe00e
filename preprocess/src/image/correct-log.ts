/**
 * A correctly rounded natural logarithm for float64.
 *
 * Slicing picks the grid with the smallest `|ln(W/H) − ln(m/n)|` (MINICPMV26.md §3.3), and ties are
 * decided by the last bit of those float64 values (golden quirk 3). The reference's libm `log` is
 * correctly rounded on the golden inputs; Node's `Math.log` is not (e.g. `ln(3)` is one ulp off),
 * which flips a real grid decision. So the log is evaluated in 192-bit fixed point with BigInt and
 * rounded once to the nearest double.
 */

const P = 192n; // fractional bits of the fixed-point evaluation
const ONE = 1n << P;

/** atanh(z) for |z| <= 1/3 in P-bit fixed point; `z` is scaled by 2^P. */
function atanhFixed(z: bigint): bigint {
  // Odd function: work on |z| so that the truncating shifts converge to 0.
  if (z < 0n) return -atanhFixed(-z);
  const z2 = (z * z) >> P;
  let power = z;
  let sum = z;
  for (let k = 3n; power !== 0n; k += 2n) {
    power = (power * z2) >> P;
    sum += power / k;
  }
  return sum;
}

// ln 2 = 2·atanh(1/3)
const LN2 = 2n * atanhFixed(ONE / 3n);
const REDUCE_ABOVE = (ONE * 181n) / 128n; // ≈ √2; any threshold near it keeps the series short

const view = new DataView(new ArrayBuffer(8));

/** ln(x) rounded to the nearest float64 (ties to even); NaN/±Infinity/0 follow Math.log. */
export function logCorrectlyRounded(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) return Math.log(x);
  if (x === 1) return 0;
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let exp: number;
  if (biased === 0) {
    // Subnormal: normalise the mantissa so that it has 53 significant bits.
    exp = -1074;
    while (mant < 1n << 52n) {
      mant <<= 1n;
      exp -= 1;
    }
    exp += 52;
  } else {
    mant |= 1n << 52n;
    exp = biased - 1023;
  }
  // x = m · 2^exp with m = mant / 2^52 in [1, 2); keep m in [0.707, 1.414] so that |z| < 0.18.
  let m = mant << (P - 52n);
  if (m > REDUCE_ABOVE) {
    m >>= 1n;
    exp += 1;
  }
  const z = ((m - ONE) << P) / (m + ONE);
  const fixed = BigInt(exp) * LN2 + 2n * atanhFixed(z);
  // Number(bigint) rounds to nearest, ties to even; the scaling by 2^-P is exact.
  return Number(fixed) / 2 ** Number(P);
}
