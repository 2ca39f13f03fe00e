import type { Attachment } from "./chat-request";

/** Largest file the page will read into memory (the server applies its own, usually lower, limits). */
export const MAX_FILE_BYTES = 64 * 1024 * 1024;

const IMAGE_EXTENSIONS: Record<string, string> = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  webp: "image/webp",
  gif: "image/gif",
  avif: "image/avif",
  bmp: "image/bmp",
  tif: "image/tiff",
  tiff: "image/tiff",
};

const VIDEO_EXTENSIONS: Record<string, string> = {
  mp4: "video/mp4",
  m4v: "video/mp4",
  mov: "video/quicktime",
  webm: "video/webm",
  mkv: "video/x-matroska",
  avi: "video/x-msvideo",
};

/** The kind and MIME type of a file from its declared type, else its extension; `null` if neither is media. */
export function mediaType(name: string, declaredType: string): { kind: Attachment["kind"]; mime: string } | null {
  if (declaredType.startsWith("image/")) return { kind: "image", mime: declaredType };
  if (declaredType.startsWith("video/")) return { kind: "video", mime: declaredType };
  const ext = name.toLowerCase().split(".").pop() ?? "";
  const image = IMAGE_EXTENSIONS[ext];
  if (image !== undefined) return { kind: "image", mime: image };
  const video = VIDEO_EXTENSIONS[ext];
  if (video !== undefined) return { kind: "video", mime: video };
  return null;
}

/** Reads a picked, dropped or pasted file into an {@link Attachment}; throws with a message naming the file. */
export async function readAttachment(file: File, maxBytes: number = MAX_FILE_BYTES): Promise<Attachment> {
  const type = mediaType(file.name, file.type);
  const name = file.name === "" ? (type?.kind ?? "file") : file.name;
  if (type === null) {
    throw new Error(`${name}: unsupported file type "${file.type || "unknown"}" (attach an image or a video)`);
  }
  if (file.size === 0) throw new Error(`${name}: the file is empty`);
  if (file.size > maxBytes) {
    throw new Error(`${name}: ${formatBytes(file.size)} is over the ${formatBytes(maxBytes)} limit per file`);
  }
  const base64 = bytesToBase64(new Uint8Array(await file.arrayBuffer()));
  return { kind: type.kind, name, dataUrl: `data:${type.mime};base64,${base64}` };
}

/** Base64 of `bytes`, in pieces small enough for `String.fromCharCode.apply`. */
export function bytesToBase64(bytes: Uint8Array): string {
  const pieces: string[] = [];
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    pieces.push(String.fromCharCode(...bytes.subarray(i, i + step)));
  }
  return btoa(pieces.join(""));
}

/** "1.5 MiB"-style size for messages. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}
