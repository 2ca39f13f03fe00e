/**
 * `Math.exp` for the sampler's hot loops, bit for bit: V8's `Math.exp` is fdlibm's `__ieee754_exp`
 * (src/base/ieee754.cc), plain double arithmetic, so the same steps written in JS give the same bits while
 * TurboFan inlines them instead of calling out to C for every element (about 1.5x over 150k values).
 *
 * Only the range the sampler feeds it is done here (finite x in (-708, 0]: scaled log-probabilities, no
 * subnormal results); anything else goes to `Math.exp`. `fast-exp.test.ts` checks the bits against
 * `Math.exp` over millions of values, so a runtime whose `Math.exp` is not fdlibm's fails loudly there.
 */

// fdlibm's constants, written as the shortest decimals of the same doubles.
const P1 = 0.16666666666666602;
const P2 = -0.0027777777777015593;
const P3 = 6.613756321437934e-5;
const P4 = -1.6533902205465252e-6;
const P5 = 4.1381367970572385e-8;
const LN2_HI = 0.6931471803691238;
const LN2_LO = 1.9082149292705877e-10;
const INV_LN2 = Math.LOG2E; // fdlibm's invln2, the same double

/** The double whose high 32 bits are `hi` and low 32 bits 0 (fdlibm compares high words). */
function fromHighWord(hi: number): number {
  const f = new Float64Array(1);
  new Uint32Array(f.buffer)[1] = hi;
  return f[0] as number;
}

// fdlibm's `hx > 0x3fd62e42` (|x| > 0.5 ln2), `hx < 0x3ff0a2b2` (|x| < 1.5 ln2), `hx < 0x3e300000` (|x| < 2^-28)
const HALF_LN2 = fromHighWord(0x3fd62e43);
const THREE_HALF_LN2 = fromHighWord(0x3ff0a2b2);
const TINY = fromHighWord(0x3e300000);
/** 2^k for k in [-1100, 1100): a power-of-two multiply is exact here, as fdlibm's exponent add. */
const POW2 = new Float64Array(2200).map((_, i) => 2 ** (i - 1100));

/** exp(x), identical to `Math.exp(x)`; fast for finite x in (-708, 0]. */
export function fastExp(x: number): number {
  if (!(x <= 0 && x > -708)) return Math.exp(x);
  const ax = -x;
  let hi = 0;
  let lo = 0;
  let k = 0;
  if (ax >= HALF_LN2) {
    if (ax < THREE_HALF_LN2) {
      hi = x + LN2_HI;
      lo = -LN2_LO;
      k = -1;
    } else {
      k = (INV_LN2 * x - 0.5) | 0; // C's (int) truncation
      hi = x - k * LN2_HI;
      lo = k * LN2_LO;
    }
    x = hi - lo;
  } else if (ax < TINY) return 1 + x;
  const t = x * x;
  const c = x - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
  if (k === 0) return 1 - ((x * c) / (c - 2.0) - x);
  const y = 1 - (lo - (x * c) / (2.0 - c) - hi);
  return y * (POW2[k + 1100] as number);
}
