import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addService, createClient, createServer, GrpcError, grpc, listen, type ServiceClient, shutdown } from "./grpc";
import { Health, HealthService, ServingStatus } from "./health";
import { GenerationService, PreprocessService, TokenEventSchema } from "./index";

/** A test implementation of both services over real grpc-js on loopback. */
describe("grpc adapter", () => {
  const server = createServer({ maxMessageBytes: 64 * 1024 * 1024 });
  const health = new HealthService(["minicpmv.v1.GenerationService"]);
  const seen: { cancelled: boolean; deadline?: Date | undefined; requestId?: string } = { cancelled: false };
  let cancelSeen: () => void = () => {};
  const cancelled = new Promise<void>((r) => (cancelSeen = r));
  let address = "";
  let gen: ServiceClient<typeof GenerationService.method>;

  beforeAll(async () => {
    addService(server, GenerationService, {
      async *generate(req, ctx) {
        seen.deadline = ctx.deadline;
        seen.requestId = String(ctx.metadata.get("x-request-id")[0] ?? "");
        const n = req.params?.maxTokens ?? 3;
        if (req.requestId === "slow") {
          // Waits for cancellation or deadline; yields one token first.
          yield { event: { case: "token", value: { index: 0, tokenIds: [1], text: "a" } } };
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
          seen.cancelled = true;
          cancelSeen();
          return;
        }
        if (req.requestId === "bad")
          throw new GrpcError(grpc.status.INVALID_ARGUMENT, "params.top_p: must be in (0, 1]");
        for (let i = 0; i < n; i++)
          yield { event: { case: "token", value: { index: 0, tokenIds: [i], text: `t${i}` } } };
        yield { event: { case: "final", value: { usage: { completionTokens: n } } } };
      },
      async info() {
        return { modelName: "test", blockSize: 16 };
      },
    });
    addService(server, PreprocessService, {
      async prepare(req) {
        // Echoes a large payload back: the size of the first image's bytes in slices.
        const img = req.messages[0]?.parts[0]?.part;
        const data =
          img?.case === "image" && img.value.source.case === "data" ? img.value.source.value : new Uint8Array();
        return { prompt: { tokenIds: [data.length], media: [{ slices: [{ width: 1, height: 1, rgb: data }] }] } };
      },
    });
    health.register(server);
    const port = await listen(server, "127.0.0.1", 0);
    address = `127.0.0.1:${port}`;
    gen = createClient(GenerationService, address);
  });

  afterAll(async () => {
    gen.close();
    await shutdown(server, 1000);
  });

  it("calls unary methods", async () => {
    const info = await gen.info({});
    expect(info.modelName).toBe("test");
    expect(info.blockSize).toBe(16);
  });

  it("streams server-streaming methods and passes metadata", async () => {
    const events = [];
    for await (const ev of gen.generate(
      { requestId: "r1", params: { maxTokens: 4 } },
      { metadata: { "x-request-id": "abc" } },
    ))
      events.push(ev.event);
    expect(events.map((e) => e.case)).toEqual(["token", "token", "token", "token", "final"]);
    expect(events[3]?.case === "token" && events[3].value.text).toBe("t3");
    expect(seen.requestId).toBe("abc");
    expect(create(TokenEventSchema, { index: 1 }).index).toBe(1);
  });

  it("maps handler errors to status codes", async () => {
    const it = gen.generate({ requestId: "bad" });
    await expect(async () => {
      for await (const _ of it) {
      }
    }).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: "params.top_p: must be in (0, 1]" });
  });

  it("reports DEADLINE_EXCEEDED and the server sees the deadline", async () => {
    const err = await (async () => {
      try {
        for await (const _ of gen.generate({ requestId: "slow" }, { deadline: 300 })) {
        }
      } catch (e) {
        return e as GrpcError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(GrpcError);
    expect(err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(seen.deadline).toBeInstanceOf(Date);
  });

  it("propagates client cancellation to the server", async () => {
    seen.cancelled = false;
    const ac = new AbortController();
    const stream = gen.generate({ requestId: "slow" }, { signal: ac.signal });
    const got: string[] = [];
    await expect(async () => {
      for await (const ev of stream) {
        if (ev.event.case === "token") got.push(ev.event.value.text);
        ac.abort();
      }
    }).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    await cancelled;
    expect(got).toEqual(["a"]);
    expect(seen.cancelled).toBe(true);
  });

  it("carries messages larger than grpc-js's 4 MiB default", async () => {
    const pre = createClient(PreprocessService, address, { maxMessageBytes: 64 * 1024 * 1024 });
    const data = new Uint8Array(448 * 448 * 3 * 10 + 7).fill(7);
    const res = await pre.prepare({
      messages: [{ role: 2, parts: [{ part: { case: "image", value: { source: { case: "data", value: data } } } }] }],
    });
    expect(res.prompt?.tokenIds).toEqual([data.length]);
    expect(res.prompt?.media[0]?.slices[0]?.rgb.length).toBe(data.length);
    pre.close();
  });

  it("serves grpc.health.v1 with status changes", async () => {
    const hc = createClient(Health, address);
    expect((await hc.check({ service: "" })).status).toBe(ServingStatus.NOT_SERVING);
    health.setAll(ServingStatus.SERVING);
    expect((await hc.check({ service: "minicpmv.v1.GenerationService" })).status).toBe(ServingStatus.SERVING);
    await expect(hc.check({ service: "nope" })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    const ac = new AbortController();
    const statuses: ServingStatus[] = [];
    try {
      for await (const r of hc.watch({ service: "" }, { signal: ac.signal })) {
        statuses.push(r.status);
        if (statuses.length === 1) health.set("", ServingStatus.NOT_SERVING);
        else ac.abort();
      }
    } catch (e) {
      expect((e as GrpcError).code).toBe(grpc.status.CANCELLED);
    }
    expect(statuses).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    hc.close();
  });
});
