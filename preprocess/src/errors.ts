/**
 * The one error type of the preprocess service. Each kind maps to one gRPC code in `service.ts`
 * (`toGrpcError`); messages name the field and the limit.
 */

/** What went wrong, from the caller's point of view. */
export type PreprocessErrorKind =
  /**
   * Bad input: malformed request, corrupt or unsupported media, a prompt over the context limit, and every
   * configured size or count limit (bytes, pixels, images, frames, video duration): retrying cannot help.
   */
  | "invalid_argument"
  /** Capacity: the service is busy right now (its media queue is full); a retry later may succeed. */
  | "resource_exhausted"
  /** The caller cancelled. */
  | "cancelled"
  /** The deadline or a media timeout passed. */
  | "deadline_exceeded"
  /** A dependency of the service is missing or broken (e.g. no ffmpeg binary). */
  | "unavailable"
  /** A bug. */
  | "internal";

/** An error with a kind; anything else thrown inside the service is a bug (`internal`). */
export class PreprocessError extends Error {
  override readonly name = "PreprocessError";
  constructor(
    readonly kind: PreprocessErrorKind,
    message: string,
    /** What only the log may see (a tool's stderr, a path); never sent to the caller. */
    readonly detail?: string,
  ) {
    super(message);
  }
}

/** Shorthands. */
export const invalid = (message: string) => new PreprocessError("invalid_argument", message);
/** A configured size or count limit: the request can never pass it, so it is bad input (400), not a 429. */
export const overLimit = (message: string) => new PreprocessError("invalid_argument", message);
/** The service is at capacity; the caller may retry. */
export const exhausted = (message: string) => new PreprocessError("resource_exhausted", message);

/** The PreprocessError for an aborted signal (its reason decides cancelled vs deadline). */
export function abortError(signal: AbortSignal): PreprocessError {
  const reason: unknown = signal.reason;
  if (reason instanceof PreprocessError) return reason;
  const r = reason as { name?: string; code?: number; message?: string } | undefined;
  // grpc's DEADLINE_EXCEEDED is 4; AbortSignal.timeout() aborts with a TimeoutError.
  if (r?.name === "TimeoutError" || r?.code === 4) return new PreprocessError("deadline_exceeded", "deadline exceeded");
  return new PreprocessError("cancelled", "the request was cancelled");
}

/** Throws the matching PreprocessError if `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}
