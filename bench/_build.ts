import { join } from "node:path";
import { DEFAULT_CACHE_DIR, loadCheckpoint } from "../gpu-service/src/checkpoint";
import { ensureLlmGraph } from "../gpu-service/src/model/graph-cache";
const ckpt = await loadCheckpoint(".cache/checkpoints/qwen2-0.5b", { hashMemo: join(DEFAULT_CACHE_DIR, "checkpoint-digests.json") });
const e = await ensureLlmGraph(ckpt, { weights: "int4", blockSize: 16 }, DEFAULT_CACHE_DIR);
console.log(e);
await ckpt.close();
