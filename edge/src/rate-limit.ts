/**
 * Per-caller rate limits: requests per minute and tokens (prompt + completion) per minute, as token buckets
 * that refill continuously. Tokens are charged when a request finishes (its size is unknown before); a caller
 * whose token bucket is in deficit is turned away until it refills.
 */
import type { RejectReason } from "./errors";

/** The outcome of an admission check. */
export type Admission = { ok: true } | { ok: false; reason: RejectReason; retryAfterS: number; message: string };

interface Bucket {
  requests: number;
  tokens: number;
  at: number;
}

/** Token-bucket limits per caller identity; a limit of 0 is off. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly rpm: number,
    private readonly tpm: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** True when any limit is on. */
  get enabled(): boolean {
    return this.rpm > 0 || this.tpm > 0;
  }

  private bucket(id: string): Bucket {
    const t = this.now();
    let b = this.buckets.get(id);
    if (!b) {
      if (this.buckets.size >= 100_000) this.prune();
      b = { requests: this.rpm, tokens: this.tpm, at: t };
      this.buckets.set(id, b);
    }
    const dtMin = (t - b.at) / 60_000;
    b.requests = Math.min(this.rpm, b.requests + dtMin * this.rpm);
    b.tokens = Math.min(this.tpm, b.tokens + dtMin * this.tpm);
    b.at = t;
    return b;
  }

  // Full buckets carry no state worth keeping.
  private prune(): void {
    for (const [id, b] of this.buckets) {
      const dtMin = (this.now() - b.at) / 60_000;
      if (b.requests + dtMin * this.rpm >= this.rpm && b.tokens + dtMin * this.tpm >= this.tpm) this.buckets.delete(id);
    }
  }

  /** Admits one request of `id`, taking one request from its bucket, or says why not and when to retry. */
  admit(id: string): Admission {
    if (!this.enabled) return { ok: true };
    const b = this.bucket(id);
    if (this.rpm > 0 && b.requests < 1) {
      return {
        ok: false,
        reason: "rate_limit_requests",
        retryAfterS: ((1 - b.requests) / this.rpm) * 60,
        message: `rate limit of ${this.rpm} requests per minute reached`,
      };
    }
    if (this.tpm > 0 && b.tokens <= 0) {
      return {
        ok: false,
        reason: "rate_limit_tokens",
        retryAfterS: ((1 - b.tokens) / this.tpm) * 60,
        message: `rate limit of ${this.tpm} tokens per minute reached`,
      };
    }
    if (this.rpm > 0) b.requests -= 1;
    return { ok: true };
  }

  /**
   * Charges `count` more requests to `id` (the extra sequences of a batched or n>1 request); the bucket may go
   * into deficit, which turns the caller's next requests away until it refills.
   */
  chargeRequests(id: string, count: number): void {
    if (this.rpm > 0 && count > 0) this.bucket(id).requests -= count;
  }

  /** Charges `tokens` used by a finished request of `id`. */
  charge(id: string, tokens: number): void {
    if (this.tpm > 0 && tokens > 0) this.bucket(id).tokens -= tokens;
  }
}
