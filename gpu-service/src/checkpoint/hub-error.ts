/** What went wrong in a Hub download (`HubError.code`). */
export type HubErrorCode =
  /** 401/403: gated or private repository, missing or refused token. */
  | "auth"
  /** 404: repository, revision or file not found. */
  | "not-found"
  /** The repository has no safetensors weights, or lacks a file the stack reads. */
  | "unsupported"
  /** A bad argument or a malformed answer from the Hub. */
  | "invalid"
  /** sha256 or size mismatch; the bad file was deleted. */
  | "integrity"
  /** Another HTTP status. */
  | "http"
  /** Connection refused, reset or cut, or no data for too long. */
  | "network"
  /** The caller's AbortSignal fired; `.incomplete` files stay for the next run to resume. */
  | "aborted";

/** The one error type of the Hub downloader. Messages name the repository and the file; never the token. */
export class HubError extends Error {
  override readonly name = "HubError";
  constructor(
    readonly code: HubErrorCode,
    message: string,
    /** Worth another attempt (network errors, 5xx, 429). */
    readonly retryable = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
