/**
 * Tool calling the way Qwen2-family chat templates do it (hermes style), for MiniCPM-V 2.6 (a Qwen2 LLM):
 *
 *   tools ──> system prompt: "# Tools ... <tools>{function json}...</tools> ... <tool_call>...</tool_call>"
 *   assistant tool_calls ──> "<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>" in its content
 *   role "tool" messages ──> one user turn of "<tool_response>\n...\n</tool_response>" blocks
 *   tool_choice required / named ──> a structural tag: the text is <tool_call> blocks whose arguments follow
 *                                    the function's JSON Schema (the grammar forces it)
 *   tool_choice auto ──> free text, <tool_call> blocks parsed out of it (as vLLM's hermes parser)
 *   output ──> message.tool_calls [{id, type: "function", function: {name, arguments}}], finish "tool_calls"
 */
import type { StructuredSpec } from "./backends/types";
import { bad } from "./chat-request";
import type { ChatRequest, ToolCallJson, ToolJson } from "./schemas";

/** How the request uses its tools. */
export type ToolMode = "none" | "auto" | "required" | "named";

/** The tools of a chat request, resolved. */
export interface ToolPlan {
  mode: ToolMode;
  tools: ToolJson[];
  /** The grammar of `required` / named choices. */
  structured?: StructuredSpec;
}

/** One parsed tool call in OpenAI's shape. */
export interface ToolCallOut {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

const OPEN = "<tool_call>";
const CLOSE = "</tool_call>";

/** The tool plan of a request (undefined: no tools, or tool_choice "none"). */
export function toolPlan(
  req: Pick<ChatRequest, "tools" | "tool_choice" | "parallel_tool_calls">,
): ToolPlan | undefined {
  const tools = (req.tools ?? []) as ToolJson[];
  const choice = req.tool_choice ?? (tools.length > 0 ? "auto" : "none");
  if (tools.length === 0) {
    if (choice !== "none" && req.tool_choice != null) throw bad("tool_choice", "tool_choice needs tools");
    return undefined;
  }
  const seen = new Set<string>();
  for (const [i, t] of tools.entries()) {
    if (seen.has(t.function.name)) throw bad(`tools[${i}].function.name`, `"${t.function.name}" is defined twice`);
    seen.add(t.function.name);
  }
  if (choice === "none") return undefined;
  if (choice === "auto") return { mode: "auto", tools };
  const parallel = req.parallel_tool_calls ?? true;
  if (choice === "required") return { mode: "required", tools, structured: toolGrammar(tools, !parallel) };
  const named = tools.filter((t) => t.function.name === choice.function.name);
  if (named.length === 0)
    throw bad("tool_choice.function.name", `"${choice.function.name}" is not one of the tools' names`);
  return { mode: "named", tools: named, structured: toolGrammar(named, true) };
}

function parametersOf(t: ToolJson): Record<string, unknown> {
  return t.function.parameters ?? { type: "object", properties: {} };
}

/** xgrammar's structural tag: one or more <tool_call> blocks, each a listed function with valid arguments. */
function toolGrammar(tools: ToolJson[], single: boolean): StructuredSpec {
  const tags = tools.map((t) => ({
    type: "tag",
    begin: `${OPEN}\n{"name": ${JSON.stringify(t.function.name)}, "arguments": `,
    content: { type: "json_schema", json_schema: parametersOf(t) },
    end: `}\n${CLOSE}`,
  }));
  const format = { type: "tags_with_separator", tags, separator: "\n", at_least_one: true, stop_after_first: single };
  return { kind: "structural_tag", tag: JSON.stringify({ type: "structural_tag", format }) };
}

/** The tools section of the system prompt (the Qwen2.5 template's wording). */
export function toolsPrompt(tools: readonly ToolJson[]): string {
  const lines = tools.map((t) =>
    JSON.stringify({
      type: "function",
      function: {
        name: t.function.name,
        ...(t.function.description ? { description: t.function.description } : {}),
        parameters: parametersOf(t),
      },
    }),
  );
  return [
    "# Tools",
    "",
    "You may call one or more functions to assist with the user query.",
    "",
    "You are provided with function signatures within <tools></tools> XML tags:",
    "<tools>",
    ...lines,
    "</tools>",
    "",
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:",
    OPEN,
    '{"name": <function-name>, "arguments": <args-json-object>}',
    CLOSE,
  ].join("\n");
}

/** An assistant message's tool calls as the text the model would have written. */
export function toolCallsText(calls: readonly ToolCallJson[], param: string): string {
  return calls
    .map((c, i) => {
      let args: unknown = c.function.arguments ?? {};
      if (typeof args === "string") {
        try {
          args = args.trim() === "" ? {} : JSON.parse(args);
        } catch {
          throw bad(`${param}[${i}].function.arguments`, "must be a JSON object (as text)");
        }
      }
      return `${OPEN}\n${JSON.stringify({ name: c.function.name, arguments: args })}\n${CLOSE}`;
    })
    .join("\n");
}

/** A role "tool" message's text, wrapped the way the template shows tool results to the model. */
export function toolResponseText(content: string): string {
  return `<tool_response>\n${content}\n</tool_response>`;
}

function callId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

/** One <tool_call> block's JSON as a call, or undefined when it is not `{"name": string, "arguments": object}`. */
function parseBlock(body: string): ToolCallOut | undefined {
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!v || typeof v !== "object") return undefined;
  const { name, arguments: args } = v as { name?: unknown; arguments?: unknown };
  if (typeof name !== "string" || name === "") return undefined;
  const a = args ?? {};
  if (typeof a !== "object" || Array.isArray(a)) return undefined;
  return { id: callId(), type: "function", function: { name, arguments: JSON.stringify(a) } };
}

/**
 * A whole answer split into content and tool calls. The content is the text before the first <tool_call>
 * (null when empty); an answer whose blocks do not all parse is plain content.
 */
export function parseToolCalls(text: string): { content: string | null; calls: ToolCallOut[] } {
  const start = text.indexOf(OPEN);
  if (start < 0) return { content: text, calls: [] };
  const calls: ToolCallOut[] = [];
  let rest = text.slice(start);
  while (rest.trimStart().startsWith(OPEN)) {
    rest = rest.trimStart();
    const end = rest.indexOf(CLOSE);
    if (end < 0) return { content: text, calls: [] };
    const call = parseBlock(rest.slice(OPEN.length, end).trim());
    if (!call) return { content: text, calls: [] };
    calls.push(call);
    rest = rest.slice(end + CLOSE.length);
  }
  if (rest.trim() !== "") return { content: text, calls: [] };
  const content = text.slice(0, start).trim();
  return { content: content === "" ? null : content, calls };
}

/**
 * Streaming: splits one choice's text as it arrives into content (sent at once, except a tail that may be
 * the start of "<tool_call>") and tool calls (sent when their block closes).
 */
export class ToolCallStream {
  private buf = "";
  private inCalls = false;
  /** Calls sent so far. */
  calls = 0;

  /** Adds text; returns the content to send now and the calls completed by it. */
  push(text: string): { content: string; calls: ToolCallOut[] } {
    this.buf += text;
    if (!this.inCalls) {
      const at = this.buf.indexOf(OPEN);
      if (at < 0) {
        const keep = partialSuffix(this.buf, OPEN);
        const content = this.buf.slice(0, this.buf.length - keep);
        this.buf = this.buf.slice(this.buf.length - keep);
        return { content, calls: [] };
      }
      const content = this.buf.slice(0, at).replace(/\s+$/, "");
      this.buf = this.buf.slice(at);
      this.inCalls = true;
      return { content, calls: this.completed() };
    }
    return { content: "", calls: this.completed() };
  }

  /** The end of the choice: what is left (an unfinished or malformed block) is content. */
  flush(): string {
    const rest = this.buf;
    this.buf = "";
    return this.inCalls && rest.trim() === "" ? "" : rest;
  }

  private completed(): ToolCallOut[] {
    const out: ToolCallOut[] = [];
    for (;;) {
      const b = this.buf.trimStart();
      if (!b.startsWith(OPEN)) break;
      const end = b.indexOf(CLOSE);
      if (end < 0) break;
      const call = parseBlock(b.slice(OPEN.length, end).trim());
      if (!call) break;
      out.push(call);
      this.calls++;
      this.buf = b.slice(end + CLOSE.length);
    }
    return out;
  }
}

/** Length of the longest suffix of `s` that is a proper prefix of `token`. */
function partialSuffix(s: string, token: string): number {
  for (let k = Math.min(token.length - 1, s.length); k > 0; k--) if (token.startsWith(s.slice(s.length - k))) return k;
  return 0;
}
