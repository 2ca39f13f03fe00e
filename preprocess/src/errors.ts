/**
 * The one error type of the preprocess service. Each kind maps to one gRPC code in `service.ts`
 * (`toGrpcError`); messages name the field and the limit.
 */

/** What went wrong, from the caller's point of view. */
export type PreprocessErrorKind =
  /** Bad input: malformed request, corrupt or unsupported media, a prompt over the context limit. */
  | "invalid_argument"
  /** A configured size limit: bytes, pixels, images, frames, video duration. */
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
  ) {
    super(message);
  }
}

/** Shorthands. */
export const invalid = (message: string) => new PreprocessError("invalid_argument", message);
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
