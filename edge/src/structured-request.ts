/**
 * Constrained decoding requests -> one `StructuredSpec` for the gpu-service, and the request field it came
 * from (so that a grammar the gpu-service cannot compile is a 400 naming that field).
 *
 * Accepted (at most one per request): OpenAI's `response_format` (`json_object`, `json_schema`), vLLM's
 * `structured_outputs` (`json`, `json_object`, `regex`, `choice`, `grammar`, `structural_tag`) and its older
 * `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`.
 */
import type { StructuredSpec } from "./backends/types";
import { bad } from "./chat-request";
import { EdgeError } from "./errors";
import type { ChatRequest } from "./schemas";

/** A spec and the request field that set it (`response_format.json_schema.schema`, `guided_regex`, ...). */
export interface StructuredPlan {
  spec: StructuredSpec;
  param: string;
}

type StructuredFields = Pick<
  ChatRequest,
  "response_format" | "structured_outputs" | "guided_json" | "guided_regex" | "guided_choice" | "guided_grammar"
>;

function schemaText(v: unknown, param: string): string {
  if (typeof v === "string") {
    try {
      JSON.parse(v);
    } catch (err) {
      throw bad(param, `not valid JSON (${(err as Error).message})`);
    }
    return v;
  }
  return JSON.stringify(v);
}

/** The request's constraint, or undefined; a 400 naming the field when two are given or one is malformed. */
export function structuredPlan(req: StructuredFields): StructuredPlan | undefined {
  const found: StructuredPlan[] = [];
  const rf = req.response_format;
  if (rf?.type === "json_object") found.push({ spec: { kind: "json_object" }, param: "response_format" });
  if (rf?.type === "json_schema") {
    const param = "response_format.json_schema.schema";
    if (rf.json_schema.schema == null) throw bad(param, "a JSON Schema is required");
    found.push({ spec: { kind: "json_schema", schema: schemaText(rf.json_schema.schema, param) }, param });
  }
  const so = req.structured_outputs;
  if (so) {
    const before = found.length;
    if (so.json != null)
      found.push({
        spec: { kind: "json_schema", schema: schemaText(so.json, "structured_outputs.json") },
        param: "structured_outputs.json",
      });
    if (so.json_object) found.push({ spec: { kind: "json_object" }, param: "structured_outputs.json_object" });
    if (so.regex != null) found.push({ spec: { kind: "regex", pattern: so.regex }, param: "structured_outputs.regex" });
    if (so.choice != null)
      found.push({ spec: { kind: "choice", choices: so.choice }, param: "structured_outputs.choice" });
    if (so.grammar != null)
      found.push({ spec: { kind: "grammar", ebnf: so.grammar }, param: "structured_outputs.grammar" });
    if (so.structural_tag != null) {
      schemaText(so.structural_tag, "structured_outputs.structural_tag");
      found.push({
        spec: { kind: "structural_tag", tag: so.structural_tag },
        param: "structured_outputs.structural_tag",
      });
    }
    if (found.length === before) throw bad("structured_outputs", "give one of json, regex, choice, grammar");
  }
  if (req.guided_json != null)
    found.push({
      spec: { kind: "json_schema", schema: schemaText(req.guided_json, "guided_json") },
      param: "guided_json",
    });
  if (req.guided_regex != null)
    found.push({ spec: { kind: "regex", pattern: req.guided_regex }, param: "guided_regex" });
  if (req.guided_choice != null)
    found.push({ spec: { kind: "choice", choices: req.guided_choice }, param: "guided_choice" });
  if (req.guided_grammar != null)
    found.push({ spec: { kind: "grammar", ebnf: req.guided_grammar }, param: "guided_grammar" });
  if (found.length > 1) {
    const [a, b] = found as [StructuredPlan, StructuredPlan];
    throw bad(b.param, `only one constraint per request (${a.param} is also set)`);
  }
  return found[0];
}

/**
 * Checks the fields that cannot go with a grammar (before any backend call): beam search, ignore_eos (the
 * grammar ends the text with a terminator) and min_tokens (the grammar decides where the text ends).
 */
export function checkStructuredInterplay(
  plan: StructuredPlan,
  req: {
    use_beam_search?: boolean | null | undefined;
    ignore_eos?: boolean | null | undefined;
    min_tokens?: number | null | undefined;
  },
): void {
  const what = `constrained decoding (${plan.param})`;
  if (req.use_beam_search) throw bad("use_beam_search", `beam search cannot be combined with ${what}`);
  if (req.ignore_eos) throw bad("ignore_eos", `ignore_eos cannot be combined with ${what}`);
  if (req.min_tokens) throw bad("min_tokens", `min_tokens cannot be combined with ${what}`);
}

/**
 * A gpu-service refusal of the grammar (`params.structured.<kind>: cannot compile: reason`) in the client's
 * terms: a 400 naming the field the constraint came from. Other errors pass through.
 */
export function renameStructuredError(err: unknown, param: string | undefined): unknown {
  if (!param || !(err instanceof EdgeError) || err.kind !== "invalid_request") return err;
  const m = /^params\.structured(?:\.\w+)?:\s*(.*)$/s.exec(err.message);
  if (!m) return err;
  return new EdgeError("invalid_request", `${param}: ${m[1]}`, { ...err.extra, param, reason: "validation" });
}
