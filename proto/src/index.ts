/** The minicpmv.v1 contract: generated messages and services. */

export { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
export * from "../gen/minicpmv/v1/common_pb";
export * from "../gen/minicpmv/v1/generation_pb";
export * from "../gen/minicpmv/v1/preprocess_pb";
