/** Worker-thread entry of the media pool: runs `processMedia` for each posted task. */

import { parentPort } from "node:worker_threads";
import { PreprocessError } from "./errors";
import { type MediaTask, processMedia } from "./media";

if (!parentPort) throw new Error("media-worker.ts must run in a worker thread");
const port = parentPort;

port.on("message", (msg: { id: number; task: MediaTask }) => {
  processMedia(msg.task).then(
    (result) => {
      port.postMessage(
        { id: msg.id, ok: true, result },
        result.slices.map((s) => s.data.buffer as ArrayBuffer),
      );
    },
    (err: unknown) => {
      const kind = err instanceof PreprocessError ? err.kind : "internal";
      const message = err instanceof Error ? err.message : String(err);
      port.postMessage({ id: msg.id, ok: false, error: { kind, message } });
    },
  );
});
