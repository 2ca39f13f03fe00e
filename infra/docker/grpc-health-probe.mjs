// Container health check for the gRPC backends: calls grpc.health.v1.Health/Check once and
// exits 0 only when the answer is SERVING (1 otherwise). Plain Node + @grpc/grpc-js, no tsx,
// so the probe costs a few milliseconds of CPU every interval.
//
// Usage: node grpc-health-probe.mjs <host:port> [service] [timeoutMs]
//
// NOTE: the two messages are encoded by hand to keep the probe dependency-free beyond grpc-js:
// HealthCheckRequest { string service = 1; } and HealthCheckResponse { ServingStatus status = 1; }
// with SERVING = 1 (grpc/health/v1/health.proto).
import { Client, credentials } from "@grpc/grpc-js";

const SERVING = 1;
const [target, service = "", timeoutArg = "3000"] = process.argv.slice(2);
if (!target) {
  console.error("usage: grpc-health-probe.mjs <host:port> [service] [timeoutMs]");
  process.exit(2);
}
const timeoutMs = Number(timeoutArg);
if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
  console.error(`timeoutMs must be a positive integer, got "${timeoutArg}"`);
  process.exit(2);
}

/** Field 1 (length-delimited) holding the UTF-8 service name; empty message when "". */
function encodeRequest(name) {
  const bytes = Buffer.from(name, "utf8");
  if (bytes.length === 0) return Buffer.alloc(0);
  if (bytes.length > 127) throw new Error(`service name must be at most 127 bytes, got ${bytes.length}`);
  return Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
}

/** Reads field 1 (varint) of a HealthCheckResponse; absent means UNKNOWN (0). */
function decodeStatus(buf) {
  let i = 0;
  while (i < buf.length) {
    const tag = buf[i++];
    if (tag !== 0x08) return -1; // anything else is not a HealthCheckResponse we understand
    let value = 0;
    let shift = 0;
    while (i < buf.length) {
      const b = buf[i++];
      value |= (b & 0x7f) << shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
    }
    return value;
  }
  return 0;
}

const client = new Client(target, credentials.createInsecure());
client.makeUnaryRequest(
  "/grpc.health.v1.Health/Check",
  (x) => x,
  (x) => x,
  encodeRequest(service),
  { deadline: Date.now() + timeoutMs },
  (err, res) => {
    client.close();
    if (err) {
      console.error(`health check of ${target} failed: ${err.message}`);
      process.exit(1);
    }
    const status = decodeStatus(res);
    if (status !== SERVING) console.error(`${target} is not serving (status ${status})`);
    process.exit(status === SERVING ? 0 : 1);
  },
);
