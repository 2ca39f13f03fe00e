/**
 * The gpu-service replicas' own metrics (vLLM's `vllm:*` names and this project's `minicpmv_*` extras),
 * fetched at scrape time and appended to the edge's `/metrics`, so that one scrape of the edge answers like
 * `vllm serve`'s `/metrics` on a single machine. Every sample gets a `replica` label (the replica's metrics
 * address); the series of one metric from all replicas are written together under one HELP/TYPE header, as
 * the text format requires.
 *
 * In Kubernetes each gpu-service pod is scraped directly (PodMonitoring) and the chart turns this off
 * (`GPU_METRICS_URLS=off`), so no series is counted twice.
 */

/** One metric family: its header lines and its samples. */
interface Family {
  /** The part whose header lines describe the family (the first that has it). */
  owner: number;
  header: string[];
  samples: string[];
}

/** Families kept from a replica: vLLM's and this project's; not target_info or process series. */
const KEPT = /^(vllm:|minicpmv_)/;

/** `host:port` of a metrics URL, used as the `replica` label. */
function replicaLabel(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function escapeLabel(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** Adds `replica="..."` to a sample line `name{labels} value` or `name value`. */
function withReplica(line: string, replica: string): string {
  const label = `replica="${escapeLabel(replica)}"`;
  const brace = line.indexOf("{");
  const space = line.indexOf(" ");
  if (brace !== -1 && (space === -1 || brace < space)) {
    const inner = line[brace + 1] === "}" ? label : `${label},`;
    return `${line.slice(0, brace + 1)}${inner}${line.slice(brace + 1)}`;
  }
  return `${line.slice(0, space)}{${label}}${line.slice(space)}`;
}

/** The base name of a sample line (without `_bucket`/`_sum`/`_count` when its family is a histogram). */
function sampleName(line: string): string {
  const m = /^[^\s{]+/.exec(line);
  return m ? m[0] : "";
}

/**
 * * Merges the Prometheus text of several replicas (each with the URL it came from) into one exposition of the
 * kept families, each sample labelled with its replica.
 */
export function mergeReplicaMetrics(parts: { url: string; text: string }[]): string {
  const families = new Map<string, Family>();
  for (const [i, { url, text }] of parts.entries()) {
    const replica = replicaLabel(url);
    let current: { name: string; family: Family } | undefined;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const head = /^# (HELP|TYPE|UNIT) (\S+)/.exec(line);
      if (head) {
        const name = head[2] as string;
        if (!KEPT.test(name)) {
          current = undefined;
          continue;
        }
        let family = families.get(name);
        if (!family) {
          family = { owner: i, header: [], samples: [] };
          families.set(name, family);
        }
        // The first replica's header lines describe the family; later replicas' are the same.
        if (family.owner === i) family.header.push(line);
        current = { name, family };
        continue;
      }
      if (line.startsWith("#")) continue;
      const name = sampleName(line);
      if (!current || !name.startsWith(current.name)) continue;
      current.family.samples.push(withReplica(line, replica));
    }
  }
  const out: string[] = [];
  for (const f of families.values()) {
    if (f.samples.length === 0) continue;
    out.push(...f.header, ...f.samples);
  }
  return out.length ? `${out.join("\n")}\n` : "";
}

/** Fetches each replica's `/metrics` (a replica that does not answer in time is left out of this scrape). */
export async function scrapeReplicas(urls: readonly string[], timeoutMs = 2000): Promise<string> {
  const parts = await Promise.all(
    urls.map(async (url) => {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
        if (!res.ok) {
          await res.body?.cancel();
          return null;
        }
        return { url, text: await res.text() };
      } catch {
        return null;
      }
    }),
  );
  return mergeReplicaMetrics(parts.filter((p): p is { url: string; text: string } => p !== null));
}
