/**
 * Which container a video upload is, decided from its first bytes (magic numbers), never from ffmpeg's
 * probing. ffmpeg's probe happily opens playlists and scripts (HLS, DASH, ffconcat, SDP, image2 patterns)
 * that reference other URLs and files, so a video upload could make the server fetch URLs or read its own
 * disk. Only self-contained containers on this short allow-list are ever handed to ffmpeg, each with its
 * demuxer named explicitly (`-f`), and with `-protocol_whitelist` limited to the input itself.
 */

/** A demuxer ffmpeg may use for an upload (ffmpeg's `-f` names). */
export type VideoDemuxer = "mov" | "matroska" | "avi" | "mpegts" | "gif";

/** The accepted containers, for error messages. */
export const ACCEPTED_CONTAINERS = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS or GIF";

const ascii = (b: Uint8Array, at: number, len: number) => String.fromCharCode(...b.subarray(at, at + len));

// ISO base media (MP4, MOV, 3GP): the first box is usually ftyp; old QuickTime files may start with another
// top-level atom.
const MOV_FIRST_BOXES = new Set(["ftyp", "moov", "mdat", "free", "skip", "wide", "pnot"]);

/** The demuxer for `bytes`, or null when they are not one of the accepted containers. */
export function sniffContainer(bytes: Uint8Array): VideoDemuxer | null {
  if (bytes.length >= 12 && MOV_FIRST_BOXES.has(ascii(bytes, 4, 4))) return "mov";
  if (bytes.length >= 4 && bytes[0] === 0x1a && bytes[1] === 0x45 && bytes[2] === 0xdf && bytes[3] === 0xa3) {
    return "matroska";
  }
  if (bytes.length >= 12 && ascii(bytes, 0, 4) === "RIFF" && ascii(bytes, 8, 4) === "AVI ") return "avi";
  if (bytes.length >= 6 && /^GIF8[79]a$/.test(ascii(bytes, 0, 6))) return "gif";
  // MPEG-TS: a sync byte every 188 bytes (three in a row, or every packet of a shorter upload).
  if (bytes.length >= 188 && bytes[0] === 0x47) {
    let packets = 0;
    for (let at = 0; at < bytes.length && packets < 3; at += 188, packets++) if (bytes[at] !== 0x47) return null;
    return "mpegts";
  }
  return null;
}

/**
 * ffmpeg input options for an upload in container `demuxer`, read from `input` (`pipe:0` or a private
 * temporary file): the demuxer is fixed and no protocol but the input's own may be opened.
 */
export function demuxerArgs(demuxer: VideoDemuxer, input: { kind: "pipe" } | { kind: "file"; path: string }): string[] {
  const protocol = input.kind === "pipe" ? "pipe" : "file";
  return [
    ...["-protocol_whitelist", protocol, "-f", demuxer],
    // NOTE: a MOV may reference media in other files (dref atoms); ffmpeg follows them only when asked.
    ...(demuxer === "mov" ? ["-enable_drefs", "0"] : []),
    ...["-i", input.kind === "pipe" ? "pipe:0" : input.path],
  ];
}
