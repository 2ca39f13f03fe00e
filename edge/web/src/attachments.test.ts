import { describe, expect, it } from "vitest";
import { bytesToBase64, MAX_FILE_BYTES, mediaType, readAttachment } from "./attachments";

describe("attachments", () => {
  it("classifies by declared type, then by extension", () => {
    expect(mediaType("x.bin", "image/png")).toEqual({ kind: "image", mime: "image/png" });
    expect(mediaType("clip.MP4", "")).toEqual({ kind: "video", mime: "video/mp4" });
    expect(mediaType("notes.pdf", "application/pdf")).toBeNull();
  });

  it("reads a file into a data URL of the right kind", async () => {
    const file = new File([new Uint8Array([0, 1, 2, 250, 255])], "clip.mp4", { type: "" });
    expect(await readAttachment(file)).toEqual({
      kind: "video",
      name: "clip.mp4",
      dataUrl: "data:video/mp4;base64,AAEC+v8=",
    });
  });

  it("rejects unsupported, empty and oversize files naming the file and the limit", async () => {
    await expect(readAttachment(new File(["x"], "a.pdf", { type: "application/pdf" }))).rejects.toThrow(
      'a.pdf: unsupported file type "application/pdf" (attach an image or a video)',
    );
    await expect(readAttachment(new File([], "b.png", { type: "image/png" }))).rejects.toThrow(
      "b.png: the file is empty",
    );
    const big = new File([new Uint8Array(3000)], "c.mp4", { type: "video/mp4" });
    await expect(readAttachment(big, 1024)).rejects.toThrow("c.mp4: 2.9 KiB is over the 1.0 KiB limit per file");
    expect(MAX_FILE_BYTES).toBe(67_108_864);
  });

  it("base64 matches Node's for inputs longer than one piece", () => {
    const bytes = new Uint8Array(70_000).map((_, i) => (i * 31) % 256);
    expect(bytesToBase64(bytes)).toBe(Buffer.from(bytes).toString("base64"));
  });
});
