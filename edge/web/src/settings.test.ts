import { describe, expect, it } from "vitest";
import { DEFAULT_SETTINGS } from "./chat-request";
import { formatSettings, parseSettings, SettingsError } from "./settings";

describe("parseSettings", () => {
  it("round-trips the defaults", () => {
    expect(parseSettings(formatSettings(DEFAULT_SETTINGS))).toEqual(DEFAULT_SETTINGS);
  });

  it("blank optional fields mean server default; numbers are parsed", () => {
    const form = { ...formatSettings(DEFAULT_SETTINGS), maxTokens: "", maxSliceNums: " 2 ", videoFps: "0.5" };
    expect(parseSettings(form)).toEqual({ ...DEFAULT_SETTINGS, maxTokens: null, maxSliceNums: 2, videoFps: 0.5 });
  });

  it("names the field and the limit", () => {
    const base = formatSettings(DEFAULT_SETTINGS);
    const cases: [Record<string, string>, string, string][] = [
      [{ temperature: "3" }, "temperature", "Temperature must be between 0 and 2, got 3"],
      [{ topK: "2.5" }, "topK", "Top k must be a whole number, got 2.5"],
      [{ videoMaxFrames: "65" }, "videoMaxFrames", "Video max frames must be between 1 and 64, got 65"],
      [{ maxSliceNums: "x" }, "maxSliceNums", 'Max slices must be a number, got "x"'],
      [{ topP: "" }, "topP", "Top p is required"],
      [{ decoding: "greedy" }, "decoding", 'Decoding must be "sampling" or "beam", got "greedy"'],
    ];
    for (const [patch, field, message] of cases) {
      let error: unknown;
      try {
        parseSettings({ ...base, ...patch });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(SettingsError);
      expect((error as SettingsError).field).toBe(field);
      expect((error as SettingsError).message).toBe(message);
    }
  });
});

describe("the JSON Schema setting", () => {
  const form = (jsonSchema: string, decoding = "sampling") => ({
    ...formatSettings(DEFAULT_SETTINGS),
    decoding,
    jsonSchema,
  });
  it("accepts a JSON object and refuses bad JSON, non-objects and beam search, naming the field", () => {
    expect(parseSettings(form(' {"type": "object"} ')).jsonSchema).toBe('{"type": "object"}');
    expect(() => parseSettings(form("{nope"))).toThrow(/JSON Schema is not valid JSON/);
    expect(() => parseSettings(form("[1]"))).toThrow(/must be a JSON object/);
    expect(() => parseSettings(form('{"type": "object"}', "beam"))).toThrow(/sampling only/);
  });
});
