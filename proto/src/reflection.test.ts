import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GenerationService } from "../gen/minicpmv/v1/generation_pb";
import { addService, createServer, GrpcError, grpc, listen, shutdown } from "./grpc";
import { HealthService } from "./health";

/** A reflection client built from the .proto files @grpc/reflection ships (what grpcurl speaks). */
function reflectionClient(address: string, version: "v1" | "v1alpha") {
  const pkgDir = dirname(createRequire(import.meta.url).resolve("@grpc/reflection/package.json"));
  const def = protoLoader.loadSync(join(pkgDir, `build/proto/grpc/reflection/${version}/reflection.proto`), {
    keepCase: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: { reflection: Record<string, { ServerReflection: grpc.ServiceClientConstructor }> };
  };
  const Ctor = pkg.grpc.reflection[version]?.ServerReflection as grpc.ServiceClientConstructor;
  return new Ctor(address, grpc.credentials.createInsecure());
}

/** One request/response exchange on the bidi ServerReflectionInfo stream. */
function ask(client: grpc.Client, request: Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const call = (
      client as unknown as Record<string, () => grpc.ClientDuplexStream<unknown, unknown>>
    ).ServerReflectionInfo?.call(client) as grpc.ClientDuplexStream<unknown, Record<string, unknown>>;
    call.on("data", (res) => {
      resolve(res);
      call.end();
    });
    call.on("error", reject);
    call.write(request);
  });
}

describe("gRPC server reflection", () => {
  const server = createServer();
  let address = "";

  beforeAll(async () => {
    new HealthService([GenerationService.typeName]).register(server);
    addService(server, GenerationService, {
      generate: async function* () {
        yield* [];
        throw new GrpcError(grpc.status.UNIMPLEMENTED, "test");
      },
      info: async () => ({}),
    });
    address = `127.0.0.1:${await listen(server, "127.0.0.1", 0)}`;
  });
  afterAll(() => shutdown(server, 100));

  for (const version of ["v1", "v1alpha"] as const) {
    it(`lists the services and returns their descriptors (${version})`, async () => {
      const client = reflectionClient(address, version);
      try {
        const list = await ask(client, { list_services: "" });
        const names = (list.list_services_response as { service: { name: string }[] }).service.map((s) => s.name);
        expect(names).toEqual(expect.arrayContaining(["minicpmv.v1.GenerationService", "grpc.health.v1.Health"]));
        const file = await ask(client, { file_containing_symbol: "minicpmv.v1.GenerationService" });
        const protos = (file.file_descriptor_response as { file_descriptor_proto: Uint8Array[] }).file_descriptor_proto;
        const decoded = protos.map((b) => fromBinary(FileDescriptorProtoSchema, b));
        const gen = decoded.find((f) => f.name === "minicpmv/v1/generation.proto");
        expect(gen?.service[0]?.method.map((m) => m.name)).toEqual(["Generate", "Info"]);
        // Its imports come along, so a client can build every message type.
        expect(decoded.map((f) => f.name)).toContain("minicpmv/v1/common.proto");
      } finally {
        client.close();
      }
    });
  }
});
