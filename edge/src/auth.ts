/**
 * API keys: `Authorization: Bearer <key>` checked against the configured list in constant time
 * (sha256 both sides, timingSafeEqual, and every key is compared so the time does not tell which matched).
 */
import { createHash, timingSafeEqual } from "node:crypto";

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Checks bearer keys; with no keys configured every request passes (the API is open, as vLLM's without --api-key). */
export class ApiKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = keys.map(digest);
  }

  /** True when no key is configured. */
  get open(): boolean {
    return this.digests.length === 0;
  }

  /**
   * The caller's identity for rate limiting ("key:<8 hex chars of its sha256>"), "anonymous" for an open API,
   * or null when the Authorization header is missing or holds no configured key.
   */
  identify(authorization: string | undefined): string | null {
    if (this.open) return "anonymous";
    const m = /^Bearer\s+(.+)$/i.exec(authorization?.trim() ?? "");
    if (!m?.[1]) return null;
    const d = digest(m[1].trim());
    let found = -1;
    this.digests.forEach((k, i) => {
      if (timingSafeEqual(k, d) && found < 0) found = i;
    });
    return found < 0 ? null : `key:${d.subarray(0, 4).toString("hex")}`;
  }
}
