/**
 * The edge's one error type and the one place that turns errors into HTTP statuses and OpenAI-style bodies
 * (`{"error":{"message","type","param","code"}}`, `code` = the HTTP status, as vLLM does).
 *
 * Backend failures arrive as gRPC status names; `backendError` maps each to a kind, and `httpError` maps each
 * kind to a status. Nothing else in the edge chooses a status code.
 */

/** What went wrong, independent of transport. */
export type ErrorKind =
  | "invalid_request" // 400: a field is missing, has the wrong type or is out of range
  | "context_too_long" // 400: prompt (+ max_tokens) does not fit the model's context
  | "unauthorized" // 401: missing or wrong API key
  | "not_found" // 404: unknown model or route
  | "unsupported_media_type" // 415: the body is not application/json
  | "rate_limited" // 429: a per-key rate limit is exhausted (Retry-After)
  | "overloaded" // 429: the concurrency cap is reached, or a backend is out of capacity (Retry-After)
  | "cancelled" // 499: the client went away
  | "internal" // 500
  | "not_implemented" // 501: a backend does not implement the call yet
  | "unavailable" // 503: no healthy backend
  | "timeout"; // 504: the request's deadline passed

/** Why a request was turned away, for the `edge_rejected_requests_total{reason}` metric. */
export type RejectReason =
  | "validation"
  | "content_type"
  | "body_too_large"
  | "auth"
  | "rate_limit_requests"
  | "rate_limit_tokens"
  | "concurrency"
  | "backend_busy"
  | "context_too_long";

/** An error with a kind, a message that names the field and the limit, and the field itself. */
export class EdgeError extends Error {
  override readonly name = "EdgeError";
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly extra: {
      /** The request field at fault, e.g. "messages[0].content[1].image_url.url". */
      param?: string;
      /** Seconds after which a retry may succeed (429 and 503). */
      retryAfterS?: number;
      /** Why the request was rejected, when it was. */
      reason?: RejectReason;
      /** The gRPC status name when the error came from a backend. */
      backendCode?: string;
      /** What went wrong inside, for the log only: never sent to the client (an internal error is a bug). */
      detail?: string;
    } = {},
  ) {
    super(message);
  }
}

const STATUS: Record<ErrorKind, number> = {
  invalid_request: 400,
  context_too_long: 400,
  unauthorized: 401,
  not_found: 404,
  unsupported_media_type: 415,
  rate_limited: 429,
  overloaded: 429,
  cancelled: 499,
  internal: 500,
  not_implemented: 501,
  unavailable: 503,
  timeout: 504,
};

const TYPE: Record<ErrorKind, string> = {
  invalid_request: "BadRequestError",
  context_too_long: "BadRequestError",
  unauthorized: "AuthenticationError",
  not_found: "NotFoundError",
  unsupported_media_type: "UnsupportedMediaTypeError",
  rate_limited: "RateLimitError",
  overloaded: "RateLimitError",
  cancelled: "ClientClosedRequest",
  internal: "InternalServerError",
  not_implemented: "NotImplementedError",
  unavailable: "ServiceUnavailableError",
  timeout: "GatewayTimeoutError",
};

/** The OpenAI/vLLM error envelope. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

/** An error as HTTP: status, JSON body and extra headers. */
export interface HttpError {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
}

/** Maps any thrown value to an HTTP error; values that are not EdgeErrors are internal errors (a bug). */
export function httpError(err: unknown): HttpError {
  const e = err instanceof EdgeError ? err : new EdgeError("internal", "internal error", { detail: String(err) });
  const status = STATUS[e.kind];
  const headers: Record<string, string> = {};
  if (e.extra.retryAfterS !== undefined) headers["retry-after"] = String(Math.max(1, Math.ceil(e.extra.retryAfterS)));
  return {
    status,
    body: { error: { message: e.message, type: TYPE[e.kind], param: e.extra.param ?? null, code: status } },
    headers,
  };
}

/** True for failures of the backend itself (crash, overload, lost connection) rather than of the request. */
export function isBackendFailure(err: unknown): boolean {
  return err instanceof EdgeError && (err.kind === "unavailable" || err.kind === "internal");
}

/** True for a call that failed in transport (UNAVAILABLE: no connection, reset, the server going away). */
export function isTransportFailure(err: unknown): boolean {
  return err instanceof EdgeError && err.kind === "unavailable";
}

// A backend's INVALID_ARGUMENT about length reads like "prompt has 9000 tokens, more than max_prompt_tokens 8192".
const CONTEXT_RE = /context|too long|max_prompt_tokens|max_model_len|exceeds the model/i;

/** Prepare option names (the contract's) -> the mm_processor_kwargs names clients send. */
const OPTION_NAMES: Record<string, string> = {
  max_slice_nums: "max_slice_nums",
  use_image_id: "use_image_id",
  video_fps: "fps",
  video_max_frames: "max_frames",
  video_max_slice_nums: "video_max_slice_nums",
};

/**
 * Backend messages name fields by the gRPC contract's path (`messages[0].parts[1].image.url`); clients sent
 * OpenAI's (`messages[0].content[1].image_url.url`). Content parts map one to one, so the path translates.
 */
export function toOpenAiFieldPath(message: string): { message: string; param: string | undefined } {
  const translated = message
    .replace(
      /\bmessages\[(\d+)\]\.parts\[(\d+)\](?:\.(image|video|text)\b)?/g,
      (_m, i: string, j: string, kind?: string) =>
        `messages[${i}].content[${j}]${kind === "image" ? ".image_url" : kind === "video" ? ".video_url" : kind === "text" ? ".text" : ""}`,
      // Prepare's options are the request's mm_processor_kwargs.
    )
    .replace(/\boptions\.(\w+)/g, (_m, name: string) => `mm_processor_kwargs.${OPTION_NAMES[name] ?? name}`);
  const param = /^(messages\[\d+\]\.content\[\d+\][\w.]*|mm_processor_kwargs\.\w+|messages)\b/.exec(translated)?.[1];
  return { message: translated, param };
}

function invalidRequest(message: string, extra: { backendCode: string }): EdgeError {
  const { message: m, param } = toOpenAiFieldPath(message);
  return new EdgeError("invalid_request", m, param === undefined ? extra : { ...extra, param });
}

/**
 * Maps a backend's gRPC status (by name, e.g. "RESOURCE_EXHAUSTED") to an EdgeError:
 * RESOURCE_EXHAUSTED -> 429 + Retry-After, UNAVAILABLE -> 503, INVALID_ARGUMENT / FAILED_PRECONDITION /
 * NOT_FOUND / PERMISSION_DENIED (a media URL that may not or cannot be fetched) -> 400, OUT_OF_RANGE or an
 * INVALID_ARGUMENT about the context length -> 400 context_too_long, DEADLINE_EXCEEDED -> 504,
 * CANCELLED -> 499, UNIMPLEMENTED -> 501, anything else -> 500.
 */
export function backendError(
  backend: string,
  codeName: string,
  message: string,
  retryAfterS?: number | undefined,
): EdgeError {
  const extra = { backendCode: codeName };
  const msg = `${backend}: ${message}`;
  switch (codeName) {
    case "RESOURCE_EXHAUSTED":
      return new EdgeError("overloaded", msg, { ...extra, retryAfterS: retryAfterS ?? 1, reason: "backend_busy" });
    case "UNAVAILABLE":
      return new EdgeError("unavailable", msg, { ...extra, retryAfterS: retryAfterS ?? 1 });
    case "OUT_OF_RANGE":
      return new EdgeError("context_too_long", message, { ...extra, param: "messages", reason: "context_too_long" });
    case "INVALID_ARGUMENT":
      if (CONTEXT_RE.test(message))
        return new EdgeError("context_too_long", message, { ...extra, param: "messages", reason: "context_too_long" });
      return invalidRequest(message, extra);
    case "FAILED_PRECONDITION":
    case "NOT_FOUND":
    case "PERMISSION_DENIED":
      return invalidRequest(message, extra);
    case "DEADLINE_EXCEEDED":
      return new EdgeError("timeout", `${msg} (the request's deadline passed)`, extra);
    case "CANCELLED":
      return new EdgeError("cancelled", msg, extra);
    case "UNIMPLEMENTED":
      return new EdgeError("not_implemented", msg, extra);
    default:
      // A backend's internal error is a bug there: its text (stack, paths) goes to the log, not to the client.
      return new EdgeError("internal", `${backend}: internal error`, { ...extra, detail: message });
  }
}
