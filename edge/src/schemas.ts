/**
 * zod schemas of the OpenAI/vLLM chat and legacy completions requests, and the one function that turns a zod failure into a 400
 * naming the field. Unknown fields are dropped (zod's default for objects), as vLLM ignores them.
 */
import { type ZodError, z } from "zod";
import { EdgeError } from "./errors";

/** Limits that come from configuration. */
export interface SchemaLimits {
  maxN: number;
}

/**
 * Wire ranges: every integer is bounded by the protobuf type it travels as, so that no value a client sends
 * can fail serialization between the services (a 500 then, and a replica wrongly thought broken).
 */
export const UINT32_MAX = 4_294_967_295;
export const INT32_MIN = -2_147_483_648;
export const INT32_MAX = 2_147_483_647;
/** Most stop_token_ids one request may carry. */
export const MAX_STOP_TOKEN_IDS = 64;
/** Most logit_bias entries one request may carry (the gpu-service's own limit). */
export const MAX_LOGIT_BIAS = 1024;
/** Longest regex, grammar or structural tag accepted (compiles run on the engine's thread). */
export const MAX_GRAMMAR_CHARS = 65_536;
/** Most entries in a choice constraint, and the longest entry. */
export const MAX_CHOICES = 256;
export const MAX_CHOICE_CHARS = 4096;

/** A token id as the wire carries it (uint32); the vocabulary is checked by the services. */
export const tokenId = () => z.int().min(0).max(UINT32_MAX);
/** A count carried as uint32 (max_tokens, min_tokens). */
const count32 = (min: number) => z.int().min(min).max(UINT32_MAX);

const mediaUrl = z.union([z.string().min(1), z.object({ url: z.string().min(1), detail: z.string().nullish() })]);

const textPart = z.object({ type: z.literal("text"), text: z.string() });
const imagePart = z.object({ type: z.literal("image_url"), image_url: mediaUrl, uuid: z.string().nullish() });
const videoPart = z.object({ type: z.literal("video_url"), video_url: mediaUrl, uuid: z.string().nullish() });

// vLLM also accepts the short forms {"image_url": "..."} and {"video_url": "..."} without "type".
const part = z.preprocess(
  (v) => {
    if (v && typeof v === "object" && !("type" in v)) {
      if ("image_url" in v) return { ...v, type: "image_url" };
      if ("video_url" in v) return { ...v, type: "video_url" };
      if ("text" in v) return { ...v, type: "text" };
    }
    return v;
  },
  z.discriminatedUnion("type", [textPart, imagePart, videoPart]),
);

/** One content part (text, image_url or video_url). */
export type ContentPartJson = z.infer<typeof part>;

const toolCall = z.object({
  id: z.string().nullish(),
  type: z.literal("function").nullish(),
  function: z.object({
    name: z.string().min(1),
    // OpenAI sends the arguments as JSON text; an object is accepted too.
    arguments: z.union([z.string(), z.record(z.string(), z.unknown())]).nullish(),
  }),
});

/** One tool call of an assistant message in the conversation. */
export type ToolCallJson = z.infer<typeof toolCall>;

const message = z.object({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(part)]).nullish(),
  name: z.string().nullish(),
  tool_calls: z.array(toolCall).nullish(),
  tool_call_id: z.string().nullish(),
});

/** A JSON Schema: an object (checked by the grammar compiler) or a boolean. */
const jsonSchema = z.union([z.record(z.string(), z.unknown()), z.boolean()]);

/** OpenAI's response_format: text, json_object, or json_schema {name, schema, strict}. */
const responseFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z.object({
      name: z.string().max(64).nullish(),
      description: z.string().nullish(),
      schema: jsonSchema.nullish(),
      strict: z.boolean().nullish(),
    }),
  }),
]);

const grammarText = () => z.string().min(1).max(MAX_GRAMMAR_CHARS);
const choiceList = () => z.array(z.string().max(MAX_CHOICE_CHARS)).min(1).max(MAX_CHOICES);

/** vLLM's structured_outputs (exactly one of its constraints). */
const structuredOutputs = z.object({
  json: z.union([jsonSchema, z.string()]).nullish(),
  json_object: z.boolean().nullish(),
  regex: grammarText().nullish(),
  choice: choiceList().nullish(),
  grammar: grammarText().nullish(),
  structural_tag: grammarText().nullish(),
});

const functionDef = z.object({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1 to 64 letters, digits, underscores, dots or dashes"),
  description: z.string().nullish(),
  parameters: z.record(z.string(), z.unknown()).nullish(),
  strict: z.boolean().nullish(),
});

/** One entry of `tools`. */
export type ToolJson = { type: "function"; function: z.infer<typeof functionDef> };

const tool = z.object({ type: z.literal("function"), function: functionDef });

const toolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1) }) }),
]);

const probability = z.number().min(0).max(1);

/** A vLLM extra this server does not implement: refused by name instead of silently ignored. */
const refused = (what: string) =>
  z
    .unknown()
    .refine((v) => v == null, { message: `${what} is not supported` })
    .optional();
/** A vLLM flag whose only supported value is `value` (the behaviour this server always has). */
const onlyValue = (value: boolean, what: string) =>
  z
    .boolean()
    .refine((v) => v === value, { message: `${what} is not supported` })
    .nullish();

/**
 * Sampling and stopping fields shared by chat and legacy completions (OpenAI names, then vLLM's extras).
 * Unset ones take the gpu-service's reference defaults.
 */
function samplingFields(limits: SchemaLimits) {
  return {
    model: z.string().nullish(),
    max_tokens: count32(1).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().gt(0).max(1).nullish(),
    presence_penalty: z.number().min(-2).max(2).nullish(),
    frequency_penalty: z.number().min(-2).max(2).nullish(),
    // Any safe integer: it is wrapped into the wire's uint64 like a C cast.
    seed: z.int().nullish(),
    n: z.int().min(1).max(limits.maxN).nullish(),
    stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
    logit_bias: z
      .record(z.string(), z.number().min(-100).max(100))
      .refine((b) => Object.keys(b).length <= MAX_LOGIT_BIAS, {
        message: `at most ${MAX_LOGIT_BIAS} entries are allowed`,
      })
      .nullish(),
    stream: z.boolean().nullish(),
    user: z.string().nullish(),
    best_of: z.int().min(1).max(limits.maxN).nullish(),
    // vLLM extras
    top_k: z.int().min(-1).max(INT32_MAX).nullish(),
    min_p: probability.nullish(),
    repetition_penalty: z.number().gt(0).max(2).nullish(),
    stop_token_ids: z.array(tokenId()).max(MAX_STOP_TOKEN_IDS).nullish(),
    ignore_eos: z.boolean().nullish(),
    min_tokens: count32(0).nullish(),
    priority: z.int().min(INT32_MIN).max(INT32_MAX).nullish(),
    // Constrained decoding (vLLM's names; OpenAI's response_format).
    response_format: responseFormat.nullish(),
    structured_outputs: structuredOutputs.nullish(),
    guided_json: z.union([jsonSchema, z.string()]).nullish(),
    guided_regex: grammarText().nullish(),
    guided_choice: choiceList().nullish(),
    guided_grammar: grammarText().nullish(),
    // vLLM extras that are not implemented: a 400 naming them beats an answer that silently ignores them.
    prompt_logprobs: refused("prompt_logprobs"),
    include_stop_str_in_output: onlyValue(false, "include_stop_str_in_output=true"),
    skip_special_tokens: z.boolean().nullish(),
    return_tokens_as_token_ids: onlyValue(false, "return_tokens_as_token_ids=true"),
  };
}

/** The body of POST /v1/chat/completions (and /render). */
export function chatRequestSchema(limits: SchemaLimits) {
  return z.object({
    ...samplingFields(limits),
    messages: z.array(message).min(1),
    max_completion_tokens: count32(1).nullish(),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.int().min(0).max(20).nullish(),
    tools: z.array(tool).max(128).nullish(),
    tool_choice: toolChoice.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    // OpenAI's deprecated function calling: refused rather than ignored (use tools / tool_choice).
    functions: refused("functions (deprecated; use tools)"),
    function_call: refused("function_call (deprecated; use tool_choice)"),
    stream_options: z
      .object({ include_usage: z.boolean().nullish(), continuous_usage_stats: z.boolean().nullish() })
      .nullish(),
    // vLLM extras
    use_beam_search: z.boolean().nullish(),
    length_penalty: z.number().min(-10).max(10).nullish(),
    echo: onlyValue(false, "echo=true in chat completions"),
    add_generation_prompt: z.boolean().nullish(),
    continue_final_message: z.boolean().nullish(),
    mm_processor_kwargs: z
      .object({
        max_slice_nums: z.int().min(1).max(64).nullish(),
        use_image_id: z.boolean().nullish(),
        fps: z.number().gt(0).max(60).nullish(),
        max_frames: z.int().min(1).max(1024).nullish(),
        video_max_slice_nums: z.int().min(1).max(64).nullish(),
      })
      .nullish(),
    media_io_kwargs: z
      .object({
        video: z
          .object({ fps: z.number().gt(0).max(60).nullish(), num_frames: z.int().min(1).max(1024).nullish() })
          .nullish(),
      })
      .nullish(),
  });
}

/** Most prompts one POST /v1/completions may batch. */
export const MAX_COMPLETION_PROMPTS = 32;

/** A completions prompt, normalised to a batch: texts, or token-id lists; `batched` when the client sent a list. */
export type PromptBatch = ({ form: "text"; prompts: string[] } | { form: "ids"; prompts: number[][] }) & {
  batched: boolean;
};

const PROMPT_FORMS = "a string, a list of strings, a list of token ids, or a list of token-id lists";
const isTokenId = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= UINT32_MAX;

/**
 * `prompt` of a completions request (string | string[] | number[] | number[][]) as a batch; errors name the
 * element (`prompt[1][3]`) and the limit.
 */
const promptField = z.unknown().transform((v, ctx): PromptBatch => {
  const fail = (message: string, path: PropertyKey[] = []) => {
    ctx.issues.push({ code: "custom", message, input: v, path });
    return z.NEVER;
  };
  if (typeof v === "string")
    return v === "" ? fail("must not be empty") : { form: "text", prompts: [v], batched: false };
  if (!Array.isArray(v)) return fail(`expected ${PROMPT_FORMS}`);
  if (v.length === 0) return fail("must not be empty");
  const first: unknown = v[0];
  if (typeof first === "number") {
    const bad = v.findIndex((x) => !isTokenId(x));
    if (bad >= 0)
      return fail(`expected a token id (an integer in [0, ${UINT32_MAX}]), got ${JSON.stringify(v[bad])}`, [bad]);
    return { form: "ids", prompts: [v as number[]], batched: false };
  }
  if (v.length > MAX_COMPLETION_PROMPTS) {
    return fail(`a batch holds at most ${MAX_COMPLETION_PROMPTS} prompts, got ${v.length}`);
  }
  if (typeof first === "string") {
    for (const [k, x] of v.entries()) {
      if (typeof x !== "string") return fail("expected a string, like the batch's first prompt", [k]);
      if (x === "") return fail("must not be empty", [k]);
    }
    return { form: "text", prompts: v as string[], batched: true };
  }
  if (Array.isArray(first)) {
    for (const [k, ids] of v.entries()) {
      if (!Array.isArray(ids)) return fail("expected a list of token ids, like the batch's first prompt", [k]);
      if (ids.length === 0) return fail("must not be empty", [k]);
      const bad = ids.findIndex((x) => !isTokenId(x));
      if (bad >= 0)
        return fail(`expected a token id (an integer in [0, ${UINT32_MAX}]), got ${JSON.stringify(ids[bad])}`, [
          k,
          bad,
        ]);
    }
    return { form: "ids", prompts: v as number[][], batched: true };
  }
  return fail(`expected ${PROMPT_FORMS}`, [0]);
});

/**
 * The body of POST /v1/completions (OpenAI legacy completions + vLLM extras). `prompt` is a string, a batch
 * of strings, token ids, or a batch of token-id lists; `logprobs` is the number of alternatives (0..5).
 */
export function completionRequestSchema(limits: SchemaLimits) {
  return z.object({
    ...samplingFields(limits),
    prompt: promptField,
    logprobs: z.int().min(0).max(5).nullish(),
    echo: z.boolean().nullish(),
    suffix: z.string().nullish(),
    stream_options: z
      .object({ include_usage: z.boolean().nullish(), continuous_usage_stats: z.boolean().nullish() })
      .nullish(),
  });
}

/** A validated completions request. */
export type CompletionRequest = z.infer<ReturnType<typeof completionRequestSchema>>;

/** A validated chat request. */
export type ChatRequest = z.infer<ReturnType<typeof chatRequestSchema>>;

/** Renders a zod path as the OpenAI-style param: messages[0].content[1].image_url.url */
export function paramOf(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

type Issue = ZodError["issues"][number];

function deepest(issue: Issue, base: readonly PropertyKey[]): { path: PropertyKey[]; issue: Issue } {
  const path = [...base, ...issue.path];
  if (issue.code !== "invalid_union" || issue.errors.length === 0) return { path, issue };
  // A union failed: report the branch that got furthest into the value (e.g. the array form of `content`).
  const branches = issue.errors.map((errs) => errs.map((i) => deepest(i, path)));
  const depth = (b: { path: PropertyKey[] }[]) => Math.max(...b.map((x) => x.path.length));
  const best = branches.reduce((a, b) => (depth(b) > depth(a) ? b : a));
  if (depth(best) === path.length) {
    // Every branch failed on the value itself, so the type is wrong: list what would have been accepted.
    const expected = issue.errors.flatMap((errs) =>
      errs.flatMap((i) => (i.code === "invalid_type" ? [String(i.expected)] : [])),
    );
    if (expected.length === issue.errors.length) {
      return { path, issue: { ...issue, message: `Invalid input: expected ${expected.join(" or ")}` } };
    }
  }
  return best.reduce((a, b) => (b.path.length > a.path.length ? b : a));
}

/** Turns a zod failure into a 400 EdgeError naming the first bad field and the limit it broke. */
export function validationError(err: ZodError): EdgeError {
  const first = err.issues[0];
  if (!first) return new EdgeError("invalid_request", "invalid request", { reason: "validation" });
  const { path, issue } = deepest(first, []);
  const param = paramOf(path);
  const message = param ? `${param}: ${issue.message}` : issue.message;
  return new EdgeError("invalid_request", message, { param: param || "body", reason: "validation" });
}
