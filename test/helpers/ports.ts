/**
 * Free TCP ports for tests that start real processes.
 *
 * A port the OS hands out for `listen(0)` comes from the ephemeral range, which outgoing connections also
 * draw from: between choosing it and the service binding it, another test's gRPC client may take it as its
 * local port (EADDRINUSE, seen in CI). So ports come from below the ephemeral range, from a slice of it per
 * vitest worker (VITEST_POOL_ID) so that parallel test files never pick the same one, and each is checked
 * free on 0.0.0.0 and 127.0.0.1. Where the ephemeral range leaves no room, listen(0) is the fallback.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

const LOW = 15_000;
const SLICE = 2_000;

function ephemeralLow(): number {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    return Number(low) || 32_768;
  } catch {
    return 32_768; // Linux's default; macOS starts at 49152
  }
}

function canBind(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

async function osPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

const worker = Math.max(0, Number(process.env.VITEST_POOL_ID ?? 1) - 1);
const sliceStart = LOW + worker * SLICE;
const usable = sliceStart + SLICE <= ephemeralLow();
let next = sliceStart + Math.floor(Math.random() * SLICE);

/** Resolves `n` distinct ports that are free now and outside the OS's ephemeral range. */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let tries = 0; ports.length < n && tries < 4 * SLICE; tries++) {
    if (!usable) {
      const p = await osPort();
      if (!ports.includes(p)) ports.push(p);
      continue;
    }
    const port = next;
    next = next + 1 >= sliceStart + SLICE ? sliceStart : next + 1;
    if ((await canBind(port, "0.0.0.0")) && (await canBind(port, "127.0.0.1"))) ports.push(port);
  }
  if (ports.length < n) throw new Error(`could not find ${n} free ports`);
  return ports;
}

/** Whether a process id is still alive. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
