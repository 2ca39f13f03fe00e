/**
 * Progress of long start-up work people can see: downloads (bytes, rate, ETA) and the load phases
 * (checkpoint validation, graph build and quantization) with percentages.
 *
 *   on a TTY   one cli-progress bar per task on stderr:
 *              download model-00001-of-00004.safetensors |████████░░░░| 67% | 3.2/4.8 GiB | 112.4 MiB/s | ETA 15s
 *   otherwise  structured lines through the logger (pino), at most one per task every `logEveryMs`, plus the
 *              start and the end of each task: {"msg":"progress","task":"graph build","percent":42,...}
 *
 * The latest state of every task is kept for `/health` and the start banner (`snapshot()`).
 */
import cliProgress from "cli-progress";

/** One unit of work reported as it advances. */
export interface ProgressUpdate {
  /** Stable id of the task (e.g. `download:model.safetensors`, `phase:graph build`). */
  id: string;
  /** What people read: `download model.safetensors`, `graph build`. */
  label: string;
  /** How much is done, in `unit`s. */
  done: number;
  /** The whole task in `unit`s, or null when unknown. */
  total: number | null;
  unit: "bytes" | "tensors" | "steps";
  /** The task is over. */
  finished?: boolean;
  /** A word on how it ended or what it does now (e.g. `from cache`). */
  note?: string;
}

/** What /health shows of a task. */
export interface TaskState {
  label: string;
  done: number;
  total: number | null;
  unit: ProgressUpdate["unit"];
  percent: number | null;
  finished: boolean;
  note?: string;
}

/** The structured-log side (a pino logger fits). */
export interface ProgressLogger {
  info(obj: Record<string, unknown>, msg: string): void;
}

/** `1536` -> `1.5 KiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`;
}

function amount(unit: ProgressUpdate["unit"], n: number): string {
  return unit === "bytes" ? formatBytes(n) : `${n}`;
}

/** Rate and ETA of one task, from its first and latest updates. */
class Rate {
  private readonly t0 = Date.now();
  private readonly done0: number;
  constructor(done: number) {
    this.done0 = done;
  }
  perSecond(done: number): number {
    const s = (Date.now() - this.t0) / 1000;
    return s > 0 ? (done - this.done0) / s : 0;
  }
  etaSeconds(done: number, total: number | null): number | null {
    const r = this.perSecond(done);
    return total !== null && r > 0 ? Math.max(0, Math.round((total - done) / r)) : null;
  }
}

/** Shows and remembers progress; see the file comment. */
export class ProgressReporter {
  private readonly tasks = new Map<string, TaskState & { rate: Rate; lastLog: number }>();
  private readonly bars = new Map<string, cliProgress.SingleBar>();
  private multibar: cliProgress.MultiBar | undefined;

  constructor(
    private readonly opts: {
      /** Draw bars (default: stderr is a TTY). */
      tty?: boolean;
      logger?: ProgressLogger;
      /** Least time between two log lines of one task (default 5000 ms). */
      logEveryMs?: number;
      stream?: NodeJS.WritableStream;
    } = {},
  ) {}

  private get tty(): boolean {
    return this.opts.tty ?? Boolean(process.stderr.isTTY);
  }

  /** Records an update and shows it. */
  update(u: ProgressUpdate): void {
    let t = this.tasks.get(u.id);
    const fresh = t === undefined;
    if (!t) {
      t = { ...this.state(u), rate: new Rate(u.done), lastLog: 0 };
      this.tasks.set(u.id, t);
    } else Object.assign(t, this.state(u));
    if (this.tty) this.draw(u, t);
    else this.log(u, t, fresh);
  }

  private state(u: ProgressUpdate): TaskState {
    const percent = u.total ? Math.min(100, Math.floor((u.done / u.total) * 100)) : u.finished ? 100 : null;
    return {
      label: u.label,
      done: u.done,
      total: u.total,
      unit: u.unit,
      percent,
      finished: u.finished ?? false,
      ...(u.note ? { note: u.note } : {}),
    };
  }

  private draw(u: ProgressUpdate, t: TaskState & { rate: Rate }): void {
    this.multibar ??= new cliProgress.MultiBar(
      {
        stream: this.opts.stream ?? process.stderr,
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        barsize: 24,
        format: (options, params, payload: { label: string; amounts: string; rate: string; eta: string }) =>
          `${payload.label.padEnd(44).slice(0, 44)} |${cliProgress.Format.BarFormat(params.progress, options)}| ` +
          `${String(Math.floor(params.progress * 100)).padStart(3)}% | ${payload.amounts}${payload.rate}${payload.eta}`,
      },
      cliProgress.Presets.shades_classic,
    );
    const total = u.total ?? Math.max(u.done, 1);
    const rate = t.rate.perSecond(u.done);
    const eta = u.finished ? null : t.rate.etaSeconds(u.done, u.total);
    const payload = {
      label: u.label,
      amounts: `${amount(u.unit, u.done)}/${u.total === null ? "?" : amount(u.unit, u.total)}`,
      rate: u.unit === "bytes" && rate > 0 ? ` | ${formatBytes(rate)}/s` : "",
      eta: u.finished ? ` | ${u.note ?? "done"}` : eta !== null ? ` | ETA ${eta}s` : "",
    };
    let bar = this.bars.get(u.id);
    if (!bar) {
      bar = this.multibar.create(total, u.done, payload);
      this.bars.set(u.id, bar);
    } else {
      bar.setTotal(total);
      bar.update(u.done, payload);
    }
    if (u.finished) {
      bar.update(total, payload);
      bar.stop();
    }
  }

  private log(u: ProgressUpdate, t: TaskState & { rate: Rate; lastLog: number }, fresh: boolean): void {
    const now = Date.now();
    if (!fresh && !u.finished && now - t.lastLog < (this.opts.logEveryMs ?? 5000)) return;
    t.lastLog = now;
    const rate = t.rate.perSecond(u.done);
    const eta = u.finished ? null : t.rate.etaSeconds(u.done, u.total);
    this.opts.logger?.info(
      {
        task: u.label,
        unit: u.unit,
        done: u.done,
        total: u.total,
        percent: t.percent,
        ...(u.unit === "bytes" ? { bytes_per_s: Math.round(rate) } : {}),
        ...(eta !== null ? { eta_s: eta } : {}),
        ...(u.finished ? { finished: true } : {}),
        ...(u.note ? { note: u.note } : {}),
      },
      "progress",
    );
  }

  /** The tasks not yet finished, for `/health` (what is loading now). */
  active(): TaskState[] {
    return [...this.tasks.values()].filter((t) => !t.finished).map(({ rate: _r, lastLog: _l, ...s }) => s);
  }

  /** Stops drawing (the bars stay on screen). */
  stop(): void {
    this.multibar?.stop();
    this.multibar = undefined;
  }
}

/** A Hub download event as a progress update (null for events that are not about one file's bytes). */
export function fromHubProgress(p: import("./checkpoint").HubProgress): ProgressUpdate | null {
  if (!("file" in p)) return null;
  const base = { id: `download:${p.file}`, label: `download ${p.file}`, unit: "bytes" as const };
  switch (p.event) {
    case "start":
    case "progress":
    case "retry":
      return { ...base, done: p.bytes, total: p.total, ...(p.event === "retry" ? { note: `retry ${p.attempt}` } : {}) };
    case "done":
      return { ...base, done: p.bytes, total: p.bytes, finished: true, note: "done" };
    case "skipped":
      return { ...base, done: p.bytes, total: p.bytes, finished: true, note: "in cache" };
  }
}
