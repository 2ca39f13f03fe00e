import { describe, expect, it } from "vitest";
import { mergeReplicaMetrics } from "./backend-metrics";

const replica = (waiting: number) => `# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_name="gpu-service"} 1
# HELP vllm:num_requests_waiting Requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",engine="0"} ${waiting}
# HELP vllm:e2e_request_latency_seconds End-to-end request latency.
# UNIT vllm:e2e_request_latency_seconds s
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_count{model_name="m",engine="0"} 2
vllm:e2e_request_latency_seconds_bucket{model_name="m",engine="0",le="+Inf"} 2
# HELP minicpmv_request_failure_total Failed requests by error kind.
# TYPE minicpmv_request_failure_total counter
minicpmv_request_failure_total 3
`;

describe("mergeReplicaMetrics", () => {
  it("groups each family's samples from every replica under one header, labelled by replica", () => {
    const text = mergeReplicaMetrics([
      { url: "http://10.0.0.1:9462/metrics", text: replica(1) },
      { url: "http://10.0.0.2:9462/metrics", text: replica(4) },
    ]);
    expect(text).toBe(`# HELP vllm:num_requests_waiting Requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{replica="10.0.0.1:9462",model_name="m",engine="0"} 1
vllm:num_requests_waiting{replica="10.0.0.2:9462",model_name="m",engine="0"} 4
# HELP vllm:e2e_request_latency_seconds End-to-end request latency.
# UNIT vllm:e2e_request_latency_seconds s
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_count{replica="10.0.0.1:9462",model_name="m",engine="0"} 2
vllm:e2e_request_latency_seconds_bucket{replica="10.0.0.1:9462",model_name="m",engine="0",le="+Inf"} 2
vllm:e2e_request_latency_seconds_count{replica="10.0.0.2:9462",model_name="m",engine="0"} 2
vllm:e2e_request_latency_seconds_bucket{replica="10.0.0.2:9462",model_name="m",engine="0",le="+Inf"} 2
# HELP minicpmv_request_failure_total Failed requests by error kind.
# TYPE minicpmv_request_failure_total counter
minicpmv_request_failure_total{replica="10.0.0.1:9462"} 3
minicpmv_request_failure_total{replica="10.0.0.2:9462"} 3
`);
  });

  it("is empty without replicas", () => {
    expect(mergeReplicaMetrics([])).toBe("");
  });
});
