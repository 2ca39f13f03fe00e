import { describe, expect, it } from "vitest";
import { backendError } from "./errors";
import { errorOf, gpu0, postJson, setup, sseEvents } from "./testing/app-harness";
import { parseToolCalls, ToolCallStream } from "./tools";

const hello = { messages: [{ role: "user", content: "hello there" }] };
const chat = (s: ReturnType<typeof setup>, body: unknown) => postJson(s.app, "/v1/chat/completions", body);

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather of a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

describe("constrained decoding requests", () => {
  it.each([
    [
      {
        response_format: { type: "json_schema", json_schema: { name: "p", schema: { type: "object" }, strict: true } },
      },
      { kind: "json_schema", schema: '{"type":"object"}' },
    ],
    [{ response_format: { type: "json_object" } }, { kind: "json_object" }],
    [{ structured_outputs: { regex: "[0-9]+" } }, { kind: "regex", pattern: "[0-9]+" }],
    [{ structured_outputs: { choice: ["a", "b"] } }, { kind: "choice", choices: ["a", "b"] }],
    [{ structured_outputs: { grammar: 'root ::= "x"' } }, { kind: "grammar", ebnf: 'root ::= "x"' }],
    [{ structured_outputs: { json: { type: "array" } } }, { kind: "json_schema", schema: '{"type":"array"}' }],
    [{ guided_json: '{"type": "string"}' }, { kind: "json_schema", schema: '{"type": "string"}' }],
    [{ guided_regex: "a|b" }, { kind: "regex", pattern: "a|b" }],
    [{ guided_choice: ["yes", "no"] }, { kind: "choice", choices: ["yes", "no"] }],
    [{ guided_grammar: 'root ::= "y"' }, { kind: "grammar", ebnf: 'root ::= "y"' }],
    [{ response_format: { type: "text" } }, undefined],
  ])("%j -> params.structured %j", async (extra, spec) => {
    const s = setup();
    const res = await chat(s, { ...hello, ...extra });
    expect(res.status).toBe(200);
    expect(gpu0(s).calls[0]?.params.structured).toEqual(spec);
  });

  it.each([
    [{ guided_regex: "a".repeat(65_537) }, "guided_regex"],
    [{ structured_outputs: { grammar: "x".repeat(65_537) } }, "structured_outputs.grammar"],
    [{ guided_choice: Array.from({ length: 257 }, (_, i) => `c${i}`) }, "guided_choice"],
    [{ structured_outputs: { choice: ["a", "b".repeat(4097)] } }, "structured_outputs.choice[1]"],
  ])("refuses an over-size constraint before it reaches a compiler: %#", async (extra, param) => {
    const s = setup();
    const res = await chat(s, { ...hello, ...extra });
    expect(res.status).toBe(400);
    expect((await errorOf(res)).param).toBe(param);
    expect(gpu0(s).calls).toHaveLength(0);
  });

  it("works on /v1/completions too", async () => {
    const s = setup();
    const res = await postJson(s.app, "/v1/completions", { prompt: "a b", guided_choice: ["x", "y"], n: 2 });
    expect(res.status).toBe(200);
    expect(gpu0(s).calls[0]?.params).toMatchObject({ n: 2, structured: { kind: "choice", choices: ["x", "y"] } });
  });

  it("a schema the gpu-service cannot compile is a 400 naming response_format.json_schema.schema and the reason", async () => {
    const s = setup();
    gpu0(s).script = {
      failBeforeFirst: backendError(
        "gpu-service gpu-0",
        "INVALID_ARGUMENT",
        "params.structured.json_schema: cannot compile: Cannot find field nope",
      ),
    };
    const res = await chat(s, {
      ...hello,
      response_format: { type: "json_schema", json_schema: { name: "x", schema: { $ref: "#/nope" } } },
    });
    expect(res.status).toBe(400);
    const e = await errorOf(res);
    expect(e.param).toBe("response_format.json_schema.schema");
    expect(e.message).toMatch(/^response_format\.json_schema\.schema: cannot compile: Cannot find field nope/);
  });
});

describe("tools", () => {
  it("renders the tools into the system prompt and the conversation's tool calls and results into turns", async () => {
    const s = setup();
    const res = await chat(s, {
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Weather in Paris and Rome?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
            { id: "call_2", type: "function", function: { name: "get_weather", arguments: '{"city":"Rome"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "sunny" },
        { role: "tool", tool_call_id: "call_2", content: "rain" },
      ],
      tools: [WEATHER],
    });
    expect(res.status).toBe(200);
    const msgs = s.pre.calls[0]?.messages ?? [];
    const text = (i: number) => (msgs[i]?.parts ?? []).map((p) => (p.kind === "text" ? p.text : "")).join("");
    expect(msgs.map((m) => m.role)).toEqual(["system", "user", "assistant", "user"]);
    expect(text(0)).toContain("Be brief.\n\n# Tools\n");
    expect(text(0)).toContain(`<tools>\n${JSON.stringify(WEATHER)}\n</tools>`);
    expect(text(2)).toBe(
      '<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris"}}\n</tool_call>\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Rome"}}\n</tool_call>',
    );
    expect(text(3)).toBe("<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response>");
    // auto: no grammar
    expect(gpu0(s).calls[0]?.params.structured).toBeUndefined();
  });

  it("tool_choice none leaves the tools out; required and named send a structural tag", async () => {
    const s = setup();
    await chat(s, { ...hello, tools: [WEATHER], tool_choice: "none" });
    expect(s.pre.calls[0]?.messages.map((m) => m.role)).toEqual(["user"]);
    await chat(s, { ...hello, tools: [WEATHER], tool_choice: "required" });
    await chat(s, { ...hello, tools: [WEATHER], tool_choice: { type: "function", function: { name: "get_weather" } } });
    for (const k of [1, 2]) {
      const spec = gpu0(s).calls[k]?.params.structured;
      expect(spec?.kind).toBe("structural_tag");
      const tag = JSON.parse((spec as { tag: string }).tag);
      expect(tag.format.tags[0]).toEqual({
        type: "tag",
        begin: '<tool_call>\n{"name": "get_weather", "arguments": ',
        content: { type: "json_schema", json_schema: WEATHER.function.parameters },
        end: "}\n</tool_call>",
      });
      expect(tag.format.stop_after_first).toBe(k === 2);
    }
  });

  it("answers tool_calls with ids and finish_reason tool_calls", async () => {
    const s = setup();
    gpu0(s).script = {
      texts: ["Let me check.\n<tool_", 'call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'],
    };
    const res = await chat(s, { ...hello, tools: [WEATHER] });
    const body = (await res.json()) as {
      choices: {
        message: { content: string | null; tool_calls: { id: string; function: unknown }[] };
        finish_reason: string;
      }[];
    };
    const c = body.choices[0];
    expect(c?.finish_reason).toBe("tool_calls");
    expect(c?.message.content).toBe("Let me check.");
    expect(c?.message.tool_calls).toHaveLength(1);
    expect(c?.message.tool_calls[0]?.id).toMatch(/^call_[0-9a-f]{24}$/);
    expect(c?.message.tool_calls[0]).toMatchObject({
      type: "function",
      function: { name: "get_weather", arguments: '{"city":"Paris"}' },
    });
  });

  it("streams tool calls as delta.tool_calls fragments (id and name, then arguments)", async () => {
    const s = setup();
    gpu0(s).script = {
      texts: [
        "<tool_call>\n",
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", ',
        '"arguments": {"city": "Rome"}}\n</tool_call>',
      ],
    };
    const res = await chat(s, { ...hello, tools: [WEATHER], stream: true });
    const events = sseEvents(await res.text()) as {
      choices: { delta: Record<string, unknown>; finish_reason: string | null }[];
    }[];
    const deltas = events.slice(0, -1).flatMap((e) => e.choices.map((c) => c.delta));
    const frags = deltas.flatMap((d) => (d.tool_calls as Record<string, unknown>[] | undefined) ?? []);
    expect(frags).toEqual([
      {
        index: 0,
        id: expect.stringMatching(/^call_/),
        type: "function",
        function: { name: "get_weather", arguments: "" },
      },
      { index: 0, function: { arguments: '{"city":"Paris"}' } },
      {
        index: 1,
        id: expect.stringMatching(/^call_/),
        type: "function",
        function: { name: "get_weather", arguments: "" },
      },
      { index: 1, function: { arguments: '{"city":"Rome"}' } },
    ]);
    expect(deltas.map((d) => d.content ?? "").join("")).toBe("");
    expect(events.at(-2)?.choices[0]?.finish_reason).toBe("tool_calls");
  });
});

describe("tool-call parsing", () => {
  it("keeps malformed or unfinished blocks as content", () => {
    expect(parseToolCalls("hi <tool_call>\n{bad}\n</tool_call>")).toEqual({
      content: "hi <tool_call>\n{bad}\n</tool_call>",
      calls: [],
    });
    expect(parseToolCalls('<tool_call>\n{"name": "f", "arguments": {}}')).toMatchObject({ calls: [] });
    expect(parseToolCalls("plain")).toEqual({ content: "plain", calls: [] });
  });

  it("holds back only a tail that may start <tool_call>", () => {
    const t = new ToolCallStream();
    expect(t.push("a <to")).toEqual({ content: "a ", calls: [] });
    expect(t.push("night")).toEqual({ content: "<tonight", calls: [] });
    expect(t.push(" <tool_call>\n{")).toEqual({ content: "", calls: [] });
    expect(t.flush()).toBe("<tool_call>\n{");
  });
});
