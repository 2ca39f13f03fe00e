import { describe, expect, it } from "vitest";
import { buildChatRequest, DEFAULT_SETTINGS, type Settings, type Turn } from "./chat-request";

const png = "data:image/png;base64,iVBORw0KGgo=";
const mp4 = "data:video/mp4;base64,AAAAIGZ0eXA=";

describe("buildChatRequest", () => {
  it("sends the sampling preset, usage and media before text, with assistant turns as strings", () => {
    const turns: Turn[] = [
      { role: "user", text: "What is this?", attachments: [{ kind: "image", name: "a.png", dataUrl: png }] },
      { role: "assistant", text: "A cat.", attachments: [] },
      { role: "user", text: "And this?", attachments: [{ kind: "video", name: "b.mp4", dataUrl: mp4 }] },
    ];
    const body = buildChatRequest(turns, { ...DEFAULT_SETTINGS, systemPrompt: "  Be brief.  " }, "tiny-a");
    expect(body).toEqual({
      model: "tiny-a",
      messages: [
        { role: "system", content: "Be brief." },
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: png } },
            { type: "text", text: "What is this?" },
          ],
        },
        { role: "assistant", content: "A cat." },
        {
          role: "user",
          content: [
            { type: "video_url", video_url: { url: mp4 } },
            { type: "text", text: "And this?" },
          ],
        },
      ],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 1024,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 100,
      repetition_penalty: 1.05,
    });
  });

  it("beam search: use_beam_search with 3 beams, no sampling fields; mm_processor_kwargs when set", () => {
    const settings: Settings = {
      ...DEFAULT_SETTINGS,
      decoding: "beam",
      repetitionPenalty: 1.2,
      maxTokens: null,
      maxSliceNums: 4,
      videoFps: 2,
      videoMaxFrames: 16,
    };
    const body = buildChatRequest([{ role: "user", text: "hi", attachments: [] }], settings, null);
    expect(body).toEqual({
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true },
      repetition_penalty: 1.2,
      use_beam_search: true,
      n: 1,
      best_of: 3,
      mm_processor_kwargs: { max_slice_nums: 4, fps: 2, max_frames: 16 },
    });
  });

  it("a media-only turn has no text part", () => {
    const body = buildChatRequest(
      [{ role: "user", text: "", attachments: [{ kind: "image", name: "a.png", dataUrl: png }] }],
      DEFAULT_SETTINGS,
      null,
    );
    expect(body.messages).toEqual([{ role: "user", content: [{ type: "image_url", image_url: { url: png } }] }]);
  });
});

describe("structured output", () => {
  it("sends a JSON Schema as response_format json_schema", () => {
    const schema = '{"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}';
    const turns: Turn[] = [{ role: "user", text: "Total?", attachments: [] }];
    const body = buildChatRequest(turns, { ...DEFAULT_SETTINGS, jsonSchema: schema }, null);
    expect(body.response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "answer", schema: JSON.parse(schema), strict: true },
    });
    expect(buildChatRequest(turns, DEFAULT_SETTINGS, null).response_format).toBeUndefined();
  });
});
