import { describe, expect, it } from "vitest";
import { backendError, toOpenAiFieldPath } from "./errors";

describe("backend error field paths", () => {
  it("translates the gRPC contract's field paths into the OpenAI request's", () => {
    expect(toOpenAiFieldPath("messages[2].parts[1].image: unsupported or unrecognised image format")).toEqual({
      message: "messages[2].content[1].image_url: unsupported or unrecognised image format",
      param: "messages[2].content[1].image_url",
    });
    expect(toOpenAiFieldPath("messages[0].parts[3].video.url: refusing to fetch 10.0.0.1").param).toBe(
      "messages[0].content[3].video_url.url",
    );
    expect(toOpenAiFieldPath("prompt has 9000 tokens, over the limit of 8192 by 808")).toEqual({
      message: "prompt has 9000 tokens, over the limit of 8192 by 808",
      param: undefined,
    });
  });

  it("names the OpenAI field in the 400 a backend's INVALID_ARGUMENT becomes", () => {
    const err = backendError("preprocess", "INVALID_ARGUMENT", "messages[0].parts[0].image: corrupt PNG data");
    expect(err.message).toBe("messages[0].content[0].image_url: corrupt PNG data");
    expect(err.extra.param).toBe("messages[0].content[0].image_url");
  });
});
