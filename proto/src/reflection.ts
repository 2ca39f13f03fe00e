/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) for every server built with this package's adapter,
 * so grpcurl, Postman or Kreya can list and call the services without the .proto files:
 *
 *   addService(server, S, impl) ── remembers S's file ──┐
 *   listen(server, ...) ── serveReflection(server) ─────┴─> @grpc/reflection over those files and their imports
 */
import { type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";

const filesByServer = new WeakMap<grpc.Server, Set<DescFile>>();

/** Remembers that `server` serves a service declared in `file`. */
export function noteServiceFile(server: grpc.Server, file: DescFile): void {
  const files = filesByServer.get(server) ?? new Set<DescFile>();
  files.add(file);
  filesByServer.set(server, files);
}

/** `files` and everything they import, each once. */
function withImports(files: Iterable<DescFile>): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    for (const d of f.dependencies) visit(d);
  };
  for (const f of files) visit(f);
  return [...seen.values()];
}

/** Adds the reflection services to `server`, describing every service added so far (once per server). */
export function serveReflection(server: grpc.Server): void {
  const files = filesByServer.get(server);
  if (!files || files.size === 0) return;
  filesByServer.delete(server);
  const fileDescriptorProtos = withImports(files).map((f) => toBinary(FileDescriptorProtoSchema, f.proto));
  // @grpc/reflection reads a proto-loader package definition; it only needs the files' serialized descriptors.
  const definition = { files: { fileDescriptorProtos } } as unknown as ConstructorParameters<
    typeof ReflectionService
  >[0];
  new ReflectionService(definition).addToServer(server);
}
