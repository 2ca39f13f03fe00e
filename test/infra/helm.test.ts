/**
 * Renders infra/helm/minicpmv offline (helm-lite.ts) with its defaults and with the values the
 * Terraform serving module passes on GKE, validates every object against the Kubernetes 1.27
 * OpenAPI schemas shipped in `kubernetes-models` (types, required fields, formats, enums; like the
 * upstream schemas they do not reject unknown fields), and checks the deployment's semantics:
 * GPU requests, probes, headless discovery, PDB/HPA targets, and that only the edge reaches the
 * backends (a small NetworkPolicy evaluator).
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { type ChartFiles, type RenderedObject, renderChart } from "./helm-lite";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const CHART_DIR = join(REPO, "infra/helm/minicpmv");
const RELEASE = { name: "minicpmv", namespace: "minicpmv" };

function loadChart(): ChartFiles {
  const templates: Record<string, string> = {};
  for (const f of readdirSync(join(CHART_DIR, "templates"))) {
    templates[f] = readFileSync(join(CHART_DIR, "templates", f), "utf8");
  }
  return {
    chart: parseYaml(readFileSync(join(CHART_DIR, "Chart.yaml"), "utf8")),
    values: parseYaml(readFileSync(join(CHART_DIR, "values.yaml"), "utf8")),
    templates,
  };
}

/** Renders the serving module's values.yaml.tftpl the way templatefile() would for plain ${name}. */
function gkeValues(): Record<string, unknown> {
  const vars: Record<string, string> = {
    image_registry: "us-central1-docker.pkg.dev/p/minicpmv",
    image_tag: "1.2.3",
    weights_bucket: "org-minicpmv-weights",
    weights_prefix: "MiniCPM-V-2_6",
    gpu_node_selector: JSON.stringify({ "cloud.google.com/gke-accelerator": "nvidia-l4" }),
    gpu_replicas: "3",
    gpu_cpu_request: "6",
    gpu_memory_request: "40Gi",
    gpu_memory_limit: "56Gi",
    hostname: "api.example.com",
    static_ip_name: "minicpmv-example-edge",
    certificate_name: "minicpmv-example-edge",
  };
  const tpl = readFileSync(join(REPO, "infra/terraform/modules/serving/values.yaml.tftpl"), "utf8");
  const text = tpl.replace(/(\$?)\$\{([^}]+)\}/g, (all, escaped: string, name: string) => {
    if (escaped) return all.slice(1);
    const v = vars[name];
    if (v === undefined) throw new Error(`template variable ${name} has no test value`);
    return v;
  });
  return parseYaml(text);
}

const chart = loadChart();
const defaults = renderChart(chart, RELEASE);
const gke = renderChart(chart, RELEASE, gkeValues());

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are walked as untyped YAML; the schemas check them
type Obj = Record<string, any>;
function find(objs: RenderedObject[], kind: string, name: string): Obj {
  const o = objs.find((x) => x.object.kind === kind && x.object.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o.object;
}

// ---- schema validation ----------------------------------------------------------------------

const ajv = new Ajv({ allErrors: true, strict: true });
/** cloud.google.com/v1 BackendConfig: the CRD is not in the core schemas; the fields we use, closed. */
const validateBackendConfig = ajv.compile({
  type: "object",
  required: ["apiVersion", "kind", "metadata", "spec"],
  properties: {
    apiVersion: { const: "cloud.google.com/v1" },
    kind: { const: "BackendConfig" },
    metadata: { type: "object", required: ["name"], properties: { name: { type: "string" } } },
    spec: {
      type: "object",
      additionalProperties: false,
      properties: {
        timeoutSec: { type: "integer", minimum: 1, maximum: 86400 },
        connectionDraining: {
          type: "object",
          additionalProperties: false,
          properties: { drainingTimeoutSec: { type: "integer", minimum: 0, maximum: 3600 } },
        },
        healthCheck: {
          type: "object",
          additionalProperties: false,
          properties: {
            type: { enum: ["HTTP", "HTTPS", "HTTP2"] },
            requestPath: { type: "string", pattern: "^/" },
            port: { type: "integer", minimum: 1, maximum: 65535 },
          },
        },
      },
    },
  },
});

/** monitoring.googleapis.com/v1 PodMonitoring (GKE Managed Prometheus): the fields we use, closed. */
const validatePodMonitoring = ajv.compile({
  type: "object",
  required: ["apiVersion", "kind", "metadata", "spec"],
  properties: {
    apiVersion: { const: "monitoring.googleapis.com/v1" },
    kind: { const: "PodMonitoring" },
    metadata: { type: "object", required: ["name"], properties: { name: { type: "string" } } },
    spec: {
      type: "object",
      additionalProperties: false,
      required: ["selector", "endpoints"],
      properties: {
        selector: {
          type: "object",
          additionalProperties: false,
          properties: { matchLabels: { type: "object", additionalProperties: { type: "string" } } },
        },
        endpoints: {
          type: "array",
          minItems: 1,
          items: {
            type: "object",
            additionalProperties: false,
            required: ["port"],
            properties: {
              port: { anyOf: [{ type: "string" }, { type: "integer" }] },
              path: { type: "string", pattern: "^/" },
              interval: { type: "string", pattern: "^[0-9]+(ms|s|m)$" },
            },
          },
        },
      },
    },
  },
});

async function validate(o: Obj): Promise<string | null> {
  if (o.apiVersion === "cloud.google.com/v1") {
    return validateBackendConfig(o) ? null : ajv.errorsText(validateBackendConfig.errors);
  }
  if (o.apiVersion === "monitoring.googleapis.com/v1") {
    return validatePodMonitoring(o) ? null : ajv.errorsText(validatePodMonitoring.errors);
  }
  const path = `kubernetes-models/${o.apiVersion}/${o.kind}`;
  const mod = (await import(path)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = mod[o.kind];
  if (!Model) throw new Error(`no model for ${o.apiVersion} ${o.kind}`);
  try {
    new Model(o).validate();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

// ---- a minimal NetworkPolicy evaluator (ingress only, label selectors with matchLabels) ----

function matches(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}

interface Peer {
  labels: Record<string, string>;
  namespace: string;
  nsLabels: Record<string, string>;
}

function ingressAllowed(objs: RenderedObject[], from: Peer, toLabels: Record<string, string>, port: number): boolean {
  const policies = objs.map((o) => o.object as Obj).filter((o) => o.kind === "NetworkPolicy");
  const selecting = policies.filter(
    (p) => matches(p.spec.podSelector.matchLabels, toLabels) && p.spec.policyTypes.includes("Ingress"),
  );
  if (selecting.length === 0) return true;
  return selecting.some((p) =>
    (p.spec.ingress ?? []).some((rule: Obj) => {
      const portOk = !rule.ports || rule.ports.some((q: Obj) => q.port === port);
      const peerOk =
        !rule.from ||
        rule.from.some((f: Obj) => {
          if (f.podSelector && !f.namespaceSelector) {
            return from.namespace === RELEASE.namespace && matches(f.podSelector.matchLabels, from.labels);
          }
          if (f.namespaceSelector) {
            return (
              matches(f.namespaceSelector.matchLabels, from.nsLabels) &&
              (!f.podSelector || matches(f.podSelector.matchLabels, from.labels))
            );
          }
          return false;
        });
      return portOk && peerOk;
    }),
  );
}

function podLabels(objs: RenderedObject[], deployment: string): Record<string, string> {
  return find(objs, "Deployment", deployment).spec.template.metadata.labels;
}

// ---- tests ----------------------------------------------------------------------------------

describe("helm chart infra/helm/minicpmv", () => {
  it("renders the expected objects with default values", () => {
    expect(defaults.map((o) => `${o.object.kind}/${o.object.metadata.name}`).sort()).toEqual([
      "ConfigMap/minicpmv-edge",
      "ConfigMap/minicpmv-gpu-service",
      "ConfigMap/minicpmv-preprocess",
      "Deployment/minicpmv-edge",
      "Deployment/minicpmv-gpu-service",
      "Deployment/minicpmv-preprocess",
      "HorizontalPodAutoscaler/minicpmv-edge",
      "HorizontalPodAutoscaler/minicpmv-preprocess",
      "NetworkPolicy/minicpmv-default-deny-ingress",
      "NetworkPolicy/minicpmv-edge-ingress",
      "NetworkPolicy/minicpmv-gpu-service-ingress",
      "NetworkPolicy/minicpmv-preprocess-ingress",
      "PersistentVolumeClaim/minicpmv-gpu-service-cache",
      "PodDisruptionBudget/minicpmv-edge",
      "PodDisruptionBudget/minicpmv-gpu-service",
      "PodDisruptionBudget/minicpmv-preprocess",
      "PodMonitoring/minicpmv-edge",
      "PodMonitoring/minicpmv-gpu-service",
      "PodMonitoring/minicpmv-preprocess",
      "Secret/minicpmv-api-keys",
      "Service/minicpmv-edge",
      "Service/minicpmv-gpu-service-headless",
      "Service/minicpmv-preprocess",
      "ServiceAccount/minicpmv-edge",
      "ServiceAccount/minicpmv-gpu-service",
      "ServiceAccount/minicpmv-preprocess",
    ]);
  });

  it("validates every object against the Kubernetes OpenAPI schemas (defaults and GKE values)", async () => {
    const errors: string[] = [];
    for (const o of [...defaults, ...gke]) {
      const err = await validate(o.object);
      if (err) errors.push(`${o.source} ${o.object.kind}/${o.object.metadata.name}: ${err}`);
    }
    expect(errors).toEqual([]);
    expect(gke.some((o) => o.object.kind === "Ingress")).toBe(true);
    expect(gke.some((o) => o.object.kind === "BackendConfig")).toBe(true);
  });

  it("schema validation rejects a broken object (it really validates)", async () => {
    const d = structuredClone(find(defaults, "Deployment", "minicpmv-gpu-service"));
    d.spec.template.spec.containers[0].resources.limits.memory = "lots";
    delete d.spec.selector;
    expect(await validate(d)).toMatch(/selector/);
    const bc = structuredClone(find(gke, "BackendConfig", "minicpmv-edge"));
    bc.spec.timeoutSecs = 10;
    expect(await validate(bc)).toMatch(/additional properties/);
  });

  it("the renderer fails on an unknown value instead of rendering it empty", () => {
    const broken = { ...chart, templates: { ...chart.templates, "x.yaml": "a: {{ .Values.gpuServices.port }}\n" } };
    expect(() => renderChart(broken, RELEASE)).toThrow(/x\.yaml: missing key "gpuServices"/);
  });

  it("gives the gpu-service one GPU, a load-aware startup probe and a drain-safe liveness probe", () => {
    const d = find(defaults, "Deployment", "minicpmv-gpu-service");
    const pod = d.spec.template.spec;
    const c = pod.containers[0];
    expect(c.resources.requests["nvidia.com/gpu"]).toBe(1);
    expect(c.resources.limits["nvidia.com/gpu"]).toBe(1);
    expect(c.startupProbe).toEqual({ grpc: { port: 50062 }, periodSeconds: 10, failureThreshold: 120 });
    expect(c.readinessProbe.grpc).toEqual({ port: 50062 });
    expect(c.livenessProbe.tcpSocket).toEqual({ port: "grpc" });
    expect(pod.terminationGracePeriodSeconds).toBe(180);
    expect(pod.tolerations).toEqual([{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }]);
    // ReadWriteOnce cache volume: the old pod lets go of it first. GKE (ReadWriteMany): surge.
    expect(d.spec.strategy.rollingUpdate).toEqual({ maxSurge: 0, maxUnavailable: 1 });
    expect(find(gke, "Deployment", "minicpmv-gpu-service").spec.strategy.rollingUpdate).toEqual({
      maxSurge: 1,
      maxUnavailable: 0,
    });
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
  });

  it("runs the gpu-service on the GPU: CUDA, f16 weights, KV from a memory fraction, graph cache on a PVC", () => {
    for (const objs of [defaults, gke]) {
      const cm = find(objs, "ConfigMap", "minicpmv-gpu-service").data;
      expect(cm).toMatchObject({
        EXECUTION_PROVIDER: "cuda",
        WEIGHTS: "f16",
        KV_CACHE_MEMORY_FRACTION: "0.85",
        CACHE_DIR: "/app/.cache",
        HF_HOME: "/app/.cache/huggingface",
      });
      const pod = find(objs, "Deployment", "minicpmv-gpu-service").spec.template.spec;
      expect(pod.containers[0].resources.limits["nvidia.com/gpu"]).toBe(1);
      expect(pod.volumes.find((v: Obj) => v.name === "cache")).toEqual({
        name: "cache",
        persistentVolumeClaim: { claimName: "minicpmv-gpu-service-cache" },
      });
      expect(pod.containers[0].volumeMounts).toContainEqual({ name: "cache", mountPath: "/app/.cache" });
    }
    const pvc = find(defaults, "PersistentVolumeClaim", "minicpmv-gpu-service-cache");
    expect(pvc.spec).toEqual({ accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "60Gi" } } });
    expect(pvc.metadata.annotations).toEqual({ "helm.sh/resource-policy": "keep" });
    expect(find(gke, "PersistentVolumeClaim", "minicpmv-gpu-service-cache").spec).toEqual({
      accessModes: ["ReadWriteMany"],
      storageClassName: "standard-rwx",
      resources: { requests: { storage: "1Ti" } },
    });
    // Without the PVC: an emptyDir large enough for the 8B model's graphs.
    const ephemeral = renderChart(chart, RELEASE, {
      gpuService: { cache: { persistentVolumeClaim: { enabled: false } } },
    });
    expect(ephemeral.some((o) => o.object.kind === "PersistentVolumeClaim")).toBe(false);
    const vol = find(ephemeral, "Deployment", "minicpmv-gpu-service").spec.template.spec.volumes;
    expect(vol.find((v: Obj) => v.name === "cache")).toEqual({ name: "cache", emptyDir: { sizeLimit: "60Gi" } });
  });

  it("passes a Hugging Face model id to the gpu-service itself when no model directory is mounted", () => {
    const objs = renderChart(chart, RELEASE, { model: { id: "openbmb/MiniCPM-V-2_6", hfHubOffline: true } });
    expect(find(objs, "ConfigMap", "minicpmv-gpu-service").data).toMatchObject({
      MODEL_ID: "openbmb/MiniCPM-V-2_6",
      MODEL_REVISION: "main",
      HF_HUB_OFFLINE: "true",
    });
    expect(find(defaults, "ConfigMap", "minicpmv-gpu-service").data.MODEL_ID).toBeUndefined();
    // A mounted directory wins.
    expect(find(gke, "ConfigMap", "minicpmv-gpu-service").data.MODEL_ID).toBeUndefined();
  });

  it("probes the edge's process for liveness and its backends for readiness", () => {
    const c = find(defaults, "Deployment", "minicpmv-edge").spec.template.spec.containers[0];
    expect(c.livenessProbe.httpGet).toEqual({ path: "/livez", port: "http" });
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
  });

  it("scrapes every pod with PodMonitoring and autoscales the gpu-service on vllm:num_requests_waiting", () => {
    const pm = find(defaults, "PodMonitoring", "minicpmv-gpu-service");
    expect(matches(pm.spec.selector.matchLabels, podLabels(defaults, "minicpmv-gpu-service"))).toBe(true);
    const ports = find(defaults, "Deployment", "minicpmv-gpu-service").spec.template.spec.containers[0].ports;
    expect(ports.map((p: Obj) => p.name)).toContain(pm.spec.endpoints[0].port);
    const objs = renderChart(chart, RELEASE, { gpuService: { autoscaling: { enabled: true } } });
    const hpa = find(objs, "HorizontalPodAutoscaler", "minicpmv-gpu-service");
    expect(hpa.spec.metrics[0].pods.metric.name).toBe("prometheus.googleapis.com|vllm:num_requests_waiting|gauge");
    expect(find(objs, "Deployment", "minicpmv-gpu-service").spec.replicas).toBeUndefined();
  });

  it("lets the edge discover gpu-service replicas through a headless Service", () => {
    const svc = find(defaults, "Service", "minicpmv-gpu-service-headless");
    expect(svc.spec.clusterIP).toBe("None");
    expect(svc.spec.publishNotReadyAddresses).toBe(false);
    expect(matches(svc.spec.selector, podLabels(defaults, "minicpmv-gpu-service"))).toBe(true);
    expect(matches(svc.spec.selector, podLabels(defaults, "minicpmv-edge"))).toBe(false);
    const cm = find(defaults, "ConfigMap", "minicpmv-edge");
    expect(cm.data.GPU_SERVICE_URLS).toBe("minicpmv-gpu-service-headless.minicpmv.svc.cluster.local:50062");
    expect(cm.data.PREPROCESS_URL).toBe("minicpmv-preprocess.minicpmv.svc.cluster.local:50061");
  });

  it("points every PDB, HPA, Service and reference at objects the chart renders", () => {
    for (const objs of [defaults, gke]) {
      const names = new Set(objs.map((o) => `${o.object.kind}/${o.object.metadata.name}`));
      const deployments = objs.filter((o) => o.object.kind === "Deployment").map((o) => o.object as Obj);
      for (const o of objs.map((x) => x.object as Obj)) {
        if (o.kind === "PodDisruptionBudget" || o.kind === "Service") {
          const sel = o.kind === "Service" ? o.spec.selector : o.spec.selector.matchLabels;
          const hits = deployments.filter((d) => matches(sel, d.spec.template.metadata.labels));
          expect(hits.length, `${o.kind}/${o.metadata.name}`).toBe(1);
        }
        if (o.kind === "HorizontalPodAutoscaler") {
          expect(names.has(`Deployment/${o.spec.scaleTargetRef.name}`)).toBe(true);
          const target = find(objs, "Deployment", o.spec.scaleTargetRef.name);
          expect(target.spec.replicas, "an HPA-owned Deployment sets no replicas").toBeUndefined();
        }
      }
      for (const d of deployments) {
        const pod = d.spec.template.spec;
        expect(names.has(`ServiceAccount/${pod.serviceAccountName}`)).toBe(true);
        for (const c of pod.containers) {
          for (const e of c.envFrom ?? []) {
            if (e.configMapRef) expect(names.has(`ConfigMap/${e.configMapRef.name}`)).toBe(true);
            if (e.secretRef) expect(names.has(`Secret/${e.secretRef.name}`)).toBe(true);
          }
          const volumes = new Set(pod.volumes.map((v: Obj) => v.name));
          for (const m of c.volumeMounts) expect(volumes.has(m.name), m.name).toBe(true);
        }
      }
    }
    const gpuPdb = find(defaults, "PodDisruptionBudget", "minicpmv-gpu-service");
    expect(gpuPdb.spec).toMatchObject({ maxUnavailable: 1 });
  });

  it("lets only the edge reach the backends", () => {
    const edge = { labels: podLabels(defaults, "minicpmv-edge"), namespace: "minicpmv", nsLabels: {} };
    const pre = { labels: podLabels(defaults, "minicpmv-preprocess"), namespace: "minicpmv", nsLabels: {} };
    const stranger = { labels: { app: "other" }, namespace: "default", nsLabels: {} };
    const monitoring = {
      labels: { app: "prometheus" },
      namespace: "monitoring",
      nsLabels: { "kubernetes.io/metadata.name": "monitoring" },
    };
    const gpu = podLabels(defaults, "minicpmv-gpu-service");
    const preLabels = podLabels(defaults, "minicpmv-preprocess");
    const edgeLabels = podLabels(defaults, "minicpmv-edge");
    expect(ingressAllowed(defaults, edge, gpu, 50062)).toBe(true);
    expect(ingressAllowed(defaults, edge, preLabels, 50061)).toBe(true);
    expect(ingressAllowed(defaults, pre, gpu, 50062)).toBe(false);
    expect(ingressAllowed(defaults, stranger, gpu, 50062)).toBe(false);
    expect(ingressAllowed(defaults, stranger, preLabels, 50061)).toBe(false);
    expect(ingressAllowed(defaults, stranger, edgeLabels, 8080)).toBe(true);
    expect(ingressAllowed(defaults, stranger, edgeLabels, 9999)).toBe(false);
    expect(ingressAllowed(defaults, monitoring, gpu, 9462)).toBe(true);
    expect(ingressAllowed(defaults, monitoring, gpu, 50062)).toBe(false);
    expect(ingressAllowed(defaults, edge, gpu, 9462)).toBe(false);
  });

  it("mounts the weights read-only and sets MODEL_DIR with the GKE values, never in the image", () => {
    for (const name of ["minicpmv-preprocess", "minicpmv-gpu-service"]) {
      const pod = find(gke, "Deployment", name).spec.template;
      expect(pod.metadata.annotations).toEqual({ "gke-gcsfuse/volumes": "true" });
      const vol = pod.spec.volumes.find((v: Obj) => v.name === "weights");
      expect(vol.csi).toEqual({
        driver: "gcsfuse.csi.storage.gke.io",
        readOnly: true,
        volumeAttributes: { bucketName: "org-minicpmv-weights", mountOptions: "implicit-dirs" },
      });
      const mount = pod.spec.containers[0].volumeMounts.find((m: Obj) => m.name === "weights");
      expect(mount).toEqual({ name: "weights", mountPath: "/models", readOnly: true });
      expect(find(gke, "ConfigMap", name).data.MODEL_DIR).toBe("/models/MiniCPM-V-2_6");
      expect(find(defaults, "ConfigMap", name).data.MODEL_DIR).toBeUndefined();
    }
    const gpu = find(gke, "Deployment", "minicpmv-gpu-service");
    expect(gpu.spec.replicas).toBe(3);
    expect(gpu.spec.template.spec.nodeSelector).toEqual({ "cloud.google.com/gke-accelerator": "nvidia-l4" });
    expect(gpu.spec.template.spec.containers[0].image).toBe(
      "us-central1-docker.pkg.dev/p/minicpmv/minicpmv-gpu-service:1.2.3",
    );
  });

  it("puts the GKE load balancer, static IP, certificate and long stream timeout in front of the edge", () => {
    const ing = find(gke, "Ingress", "minicpmv-edge");
    expect(ing.metadata.annotations["kubernetes.io/ingress.global-static-ip-name"]).toBe("minicpmv-example-edge");
    expect(ing.metadata.annotations["ingress.gcp.kubernetes.io/pre-shared-cert"]).toBe("minicpmv-example-edge");
    expect(ing.spec.rules[0].host).toBe("api.example.com");
    expect(ing.spec.rules[0].http.paths[0].backend.service).toEqual({ name: "minicpmv-edge", port: { name: "http" } });
    const svc = find(gke, "Service", "minicpmv-edge");
    expect(JSON.parse(svc.metadata.annotations["cloud.google.com/backend-config"])).toEqual({
      default: "minicpmv-edge",
    });
    expect(find(gke, "BackendConfig", "minicpmv-edge").spec.timeoutSec).toBe(3600);
  });

  it("uses an existing API key Secret when one is named", () => {
    const objs = renderChart(chart, RELEASE, { apiKeys: { value: "", existingSecret: "prod-keys" } });
    expect(objs.some((o) => o.object.kind === "Secret")).toBe(false);
    const edge = find(objs, "Deployment", "minicpmv-edge");
    expect(edge.spec.template.spec.containers[0].envFrom[1]).toEqual({ secretRef: { name: "prod-keys" } });
  });

  it("sizes gpu-service host memory above the bf16 weights it stages (16.2 GB)", () => {
    const gib = (q: string) => Number(q.replace(/Gi$/, ""));
    const r = find(defaults, "Deployment", "minicpmv-gpu-service").spec.template.spec.containers[0].resources;
    expect(gib(r.requests.memory) * 2 ** 30).toBeGreaterThan(16.2e9 * 2);
    expect(gib(r.limits.memory)).toBeGreaterThan(gib(r.requests.memory));
  });
});
