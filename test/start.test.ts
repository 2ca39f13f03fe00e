import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { alive, freePorts } from "./helpers/ports";

const root = join(import.meta.dirname, "..");

/** `npm start` (scripts/start.ts): the three services come up healthy and Ctrl-C leaves no process behind. */
describe("npm start", () => {
  it("starts the whole stack on tiny-a, serves the API, and stops cleanly on SIGINT", async () => {
    const [pre, gpu, edge, metrics] = await freePorts(4);
    const proc = spawn(process.execPath, ["--import", "tsx", join(root, "scripts/start.ts")], {
      cwd: root,
      env: {
        ...process.env,
        PREPROCESS_PORT: String(pre),
        GPU_SERVICE_PORT: String(gpu),
        GPU_METRICS_PORT: String(metrics),
        PREPROCESS_METRICS_PORT: "0",
        PORT: String(edge),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    proc.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    proc.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stack not ready in time:\n${out.slice(-4000)}`)), 280_000);
      const onData = () => {
        for (const line of out.split("\n")) {
          if (!line.includes('"service":"start"')) continue;
          const rec = JSON.parse(line) as Record<string, unknown>;
          if (rec.msg === "ready") {
            clearTimeout(timer);
            resolve(rec);
          }
          if (rec.msg === "start failed") {
            clearTimeout(timer);
            reject(new Error(out.slice(-4000)));
          }
        }
      };
      proc.stdout.on("data", onData);
      proc.on("exit", () => reject(new Error(`start exited early:\n${out.slice(-4000)}`)));
    });
    expect(ready.url).toBe(`http://localhost:${edge}`);
    const pids = Object.values(ready.pids as Record<string, number>);
    expect(pids).toHaveLength(3);
    const models = (await (await fetch(`http://127.0.0.1:${edge}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data.length).toBeGreaterThan(0);
    expect((await fetch(`http://127.0.0.1:${edge}/health`)).status).toBe(200);

    const code = await new Promise<number | null>((resolve) => {
      proc.once("exit", (c) => resolve(c));
      proc.kill("SIGINT");
    });
    expect(code).toBe(0);
    for (const pid of pids) expect(alive(pid)).toBe(false);
  }, 300_000);
});
