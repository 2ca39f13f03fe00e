/** Reads a service's Prometheus `/metrics` text in tests. */

/** Fetches `http://127.0.0.1:${port}/metrics`. */
export async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET :${port}/metrics answered ${res.status}`);
  return res.text();
}

/**
 * Sums every sample of the gpu-service metric `name` (without prefix or `_total`), whose labels include
 * `labels`. Matches vLLM's names (`vllm:name`) and this project's extras (`minicpmv_name`).
 */
export function gpuMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  const re = new RegExp(`^(?:vllm:|minicpmv_)${name}(?:_total)?(?:\\{([^}]*)\\})? ([-+0-9.eE]+|NaN)$`);
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = re.exec(line);
    if (!m) continue;
    const have = m[1] ?? "";
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) sum += Number(m[2]);
  }
  return sum;
}
