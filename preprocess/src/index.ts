/**
 * @minicpmv/preprocess: chat messages + media -> prompt token ids + image slices, bit-exact with the
 * reference MiniCPM-V 2.6 processor. The gRPC service lives in service.ts; this is the library.
 */

export { type PreprocessConfig, parseConfig } from "./config";
export { PreprocessError, type PreprocessErrorKind } from "./errors";
export { createMediaFetcher, type MediaFetcher } from "./fetch-media";
export { decodeImage, type ImageLimits } from "./image/decode";
export { imagePlaceholder, QUERY_NUM } from "./image/placeholder";
export { resizeBicubic } from "./image/resize";
export type { RgbImage } from "./image/rgb-image";
export { type Grid, type SliceGeometry, sliceGeometry, sliceImage } from "./image/slice";
export { contentHash, processMedia, type SlicedMedia } from "./media";
export { loadModelDefaults, type ModelDefaults, REFERENCE_DEFAULTS } from "./model-defaults";
export { createMediaRunner, InlineRunner, type MediaRunner, WorkerPool } from "./pool";
export { type PrepareDeps, type PrepareLimits, prepare, VIDEO_DEFAULTS } from "./prepare";
export { buildPrompt, IMAGE_MARKER } from "./prompt";
export type * from "./types";
export { decodeVideo, type VideoInfo } from "./video/decode-video";
export { resolveFfmpegPath } from "./video/ffmpeg";
export { sampleFrameIndices } from "./video/sample";
