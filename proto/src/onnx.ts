/** The ONNX IR messages (generated from onnx/onnx.proto), for the gpu-service's graph builders. */
export * from "../gen/onnx/onnx_pb";
