/**
 * Continuous batching over the KV cache manager (vLLM v1 `Scheduler`): each step picks which sequences
 * run and how many tokens each computes, under a token budget, then `update` commits what the model did.
 *
 *   schedule() ──> SchedulerOutput ──> (engine: encode, copy blocks, model.step, sample) ──> update()
 *
 * Policy, in order, every step:
 *  1. running sequences that decode (one token left to compute), highest priority first;
 *  2. running sequences still prefilling, in chunks that fit the rest of the budget (chunked prefill,
 *     so a long multimodal prompt never holds back the decodes of 1.);
 *  3. waiting requests by (priority, arrival), prefix-cache hits skipped, those not `ready` passed over
 *     (the engine: images still encoding, so they never hold up the queue), while budget, blocks and the
 *     running limit allow (only in steps that preempted nothing in 1. and 2.). When the best waiting
 *     request does not fit (running limit or blocks) but would fit with every running request of
 *     strictly lower priority (larger `priority` value) gone, those are preempted one at a time, the
 *     lowest-priority latest first, until it fits (vLLM's priority policy). Equal priorities never
 *     preempt each other, and nothing is preempted for a request that would not fit anyway.
 * When a running sequence cannot get a block, the lowest-priority, latest-arrived running request is
 * preempted: all its blocks are freed and it returns to the waiting queue to be recomputed later (its
 * generated tokens are kept, so it resumes where it stopped). A request that cannot fit even alone fails.
 *
 * Units: a request (group) has one or more sequences (n > 1 and beam search fork them); sequences are
 * what the model runs, requests are what is admitted, prioritised and preempted.
 */

import type { BlockCopy, CachedPrefix, KVCacheManager, KvSeq } from "./kv-cache-manager";
import { EngineDeadError } from "./types";

/** A sequence as the scheduler sees it. */
export interface SchedSeq extends KvSeq {
  readonly seqId: number;
}

/** A request as the scheduler sees it. */
export interface SchedGroup<S extends SchedSeq = SchedSeq> {
  readonly id: string;
  /** Lower is served first and preempted last. */
  readonly priority: number;
  /** Arrival order (monotonic). */
  readonly arrival: number;
  /** Live sequences. */
  seqs: S[];
  /** Times this request was preempted. */
  preemptions: number;
}

/** One sequence's share of a step. */
export interface ScheduledSeq<S extends SchedSeq = SchedSeq> {
  group: SchedGroup<S>;
  seq: S;
  /** First position computed in this step (= tokens already in the KV cache). */
  start: number;
  /** Tokens computed in this step. */
  numNew: number;
  /** Whether this step reaches the end of the sequence's tokens, so it yields logits. */
  wantLogits: boolean;
  /** Block copies to run before the step (copy-on-write). */
  copies: BlockCopy[];
  /** Prompt tokens adopted from the prefix cache when this sequence (re)started, else 0. */
  cachedTokens: number;
}

/** The plan of one step. */
export interface SchedulerOutput<S extends SchedSeq = SchedSeq> {
  scheduled: ScheduledSeq<S>[];
  /** Requests preempted in this step (now waiting). */
  preempted: SchedGroup<S>[];
  /** Requests admitted from the waiting queue for the first time in this step. */
  admitted: SchedGroup<S>[];
  /** Requests that can never fit the KV cache; already removed, the engine ends them with an error. */
  failed: { group: SchedGroup<S>; message: string }[];
  /** Tokens computed in this step. */
  numTokens: number;
}

/** Scheduler limits. */
export interface SchedulerConfig {
  /** Token budget of one step (prefill chunks + decodes). */
  maxBatchTokens: number;
  /** Most sequences running at once. */
  maxRunning: number;
  /** Most requests waiting; `add` refuses more. */
  maxWaiting: number;
}

function before(a: SchedGroup, b: SchedGroup): boolean {
  return a.priority !== b.priority ? a.priority < b.priority : a.arrival < b.arrival;
}

/** Continuous-batching scheduler with chunked prefill, priorities and preemption by recompute. */
export class Scheduler<S extends SchedSeq = SchedSeq> {
  /** Waiting requests, best first. */
  readonly waiting: SchedGroup<S>[] = [];
  /** Running requests, best first. */
  readonly running: SchedGroup<S>[] = [];
  /** Preemptions since start. */
  preemptions = 0;
  private readonly admittedOnce = new Set<string>();

  constructor(
    readonly kv: KVCacheManager,
    readonly config: SchedulerConfig,
  ) {
    if (config.maxBatchTokens < 1) throw new Error(`maxBatchTokens must be >= 1 (got ${config.maxBatchTokens})`);
    if (config.maxRunning < 1) throw new Error(`maxRunning must be >= 1 (got ${config.maxRunning})`);
  }

  /** Sequences running now. */
  get numRunningSeqs(): number {
    let n = 0;
    for (const g of this.running) n += g.seqs.length;
    return n;
  }

  /** Queues a new request; false when the waiting queue is full. */
  add(group: SchedGroup<S>): boolean {
    if (this.waiting.length >= this.config.maxWaiting) return false;
    this.insertWaiting(group);
    return true;
  }

  /** Whether a request is waiting or running. */
  has(group: SchedGroup<S>): boolean {
    return this.waiting.includes(group) || this.running.includes(group);
  }

  /** Removes a request wherever it is and frees all its blocks. */
  finish(group: SchedGroup<S>): void {
    for (const s of group.seqs) if (s.blockTable.length > 0) this.kv.free(s);
    remove(this.waiting, group);
    remove(this.running, group);
    this.admittedOnce.delete(group.id);
  }

  /** Ends one sequence of a request and frees its blocks. */
  finishSeq(group: SchedGroup<S>, seq: S): void {
    if (seq.blockTable.length > 0) this.kv.free(seq);
    remove(group.seqs, seq);
  }

  /** Adds `child` to `parent`'s request, sharing all of `parent`'s blocks (copy-on-write). */
  fork(group: SchedGroup<S>, parent: S, child: S): void {
    this.kv.fork(parent, child);
    group.seqs.push(child);
  }

  /**
   * Plans one step.
   * @param ready whether a waiting request may be admitted now (the engine: its images are encoded); those
   *   that may not are passed over, keeping their place in the queue. Absent: all may.
   */
  schedule(ready?: (group: SchedGroup<S>) => boolean): SchedulerOutput<S> {
    const out: SchedulerOutput<S> = { scheduled: [], preempted: [], admitted: [], failed: [], numTokens: 0 };
    let budget = this.config.maxBatchTokens;

    const preempt = (victim: SchedGroup<S>) => {
      for (let i = out.scheduled.length - 1; i >= 0; i--) {
        const e = out.scheduled[i] as ScheduledSeq<S>;
        if (e.group === victim) {
          budget += e.numNew;
          out.scheduled.splice(i, 1);
        }
      }
      for (const s of victim.seqs) if (s.blockTable.length > 0 || s.numComputed > 0) this.kv.free(s);
      remove(this.running, victim);
      victim.preemptions++;
      this.preemptions++;
      this.insertWaiting(victim);
      out.preempted.push(victim);
    };

    /** Tries to fit `seq`; false when the group itself was preempted or failed (stop scheduling it). */
    const place = (group: SchedGroup<S>, seq: S, mayPreempt: boolean): "ok" | "skip" | "stop" | "full" => {
      const remaining = seq.tokens.length - seq.numComputed;
      if (remaining <= 0) return "skip";
      if (budget <= 0) return "full";
      const fresh = seq.blockTable.length === 0 && seq.numComputed === 0;
      const prefix: CachedPrefix | undefined = fresh ? this.kv.findCachedPrefix(seq) : undefined;
      const numNew = Math.min(remaining - (prefix?.numTokens ?? 0), budget);
      for (;;) {
        const copies = this.kv.allocateSlots(seq, numNew, prefix);
        if (copies !== null) {
          if (prefix !== undefined) {
            this.kv.queries += seq.tokens.length;
            this.kv.hits += prefix.numTokens;
          }
          out.scheduled.push({
            group,
            seq,
            start: seq.numComputed,
            numNew,
            wantLogits: seq.numComputed + numNew === seq.tokens.length,
            copies,
            cachedTokens: prefix?.numTokens ?? 0,
          });
          budget -= numNew;
          return "ok";
        }
        if (!mayPreempt) return "full";
        const victim = this.pickVictim();
        if (victim === undefined || (victim === group && this.running.length === 1)) {
          // NOTE: alone and still too big: waiting cannot help, so the request fails instead of looping.
          this.finish(group);
          for (let i = out.scheduled.length - 1; i >= 0; i--)
            if (out.scheduled[i]?.group === group) {
              budget += out.scheduled[i]?.numNew ?? 0;
              out.scheduled.splice(i, 1);
            }
          out.failed.push({
            group,
            message: `the request needs more KV blocks than the cache holds (${this.kv.pool.numBlocks} blocks of ${this.kv.blockSize} tokens)`,
          });
          return "stop";
        }
        preempt(victim);
        if (victim === group) return "stop";
      }
    };

    // 1 + 2: running requests, decodes first, then prefill chunks.
    for (const phase of ["decode", "prefill"] as const) {
      for (const group of [...this.running]) {
        if (!this.running.includes(group)) continue;
        for (const seq of [...group.seqs]) {
          const remaining = seq.tokens.length - seq.numComputed;
          const isDecode = remaining === 1 && seq.blockTable.length > 0;
          if ((phase === "decode") !== isDecode) continue;
          const r = place(group, seq, true);
          if (r === "stop") break;
        }
        if (budget <= 0) break;
      }
    }

    /**
     * Whether `group`'s first chunk would be admitted if the running requests `victims` were preempted
     * first: the running limit, and the blocks of its first sequence's first chunk (budget-capped, after
     * its cached prefix) against the free blocks plus those only the victims hold.
     */
    const fitsWithout = (group: SchedGroup<S>, victims: readonly SchedGroup<S>[]): boolean => {
      let seqs = this.numRunningSeqs + group.seqs.length;
      let avail = budget;
      const refs = new Map<number, number>();
      for (const v of victims) {
        seqs -= v.seqs.length;
        for (const e of out.scheduled) if (e.group === v) avail += e.numNew;
        for (const s of v.seqs) for (const b of s.blockTable) refs.set(b, (refs.get(b) ?? 0) + 1);
      }
      if (seqs > this.config.maxRunning) return false;
      const seq = group.seqs.find((s) => s.tokens.length > s.numComputed);
      if (seq === undefined || avail <= 0) return false;
      const freed = (b: number) => this.kv.pool.refCount(b) === (refs.get(b) ?? 0);
      let free = this.kv.pool.numFree;
      for (const b of refs.keys()) if (freed(b)) free++;
      const fresh = seq.blockTable.length === 0 && seq.numComputed === 0;
      const pre = fresh ? this.kv.findCachedPrefix(seq) : { blocks: [], numTokens: 0 };
      const computed = seq.numComputed + pre.numTokens;
      const numNew = Math.min(seq.tokens.length - computed, avail);
      let need = Math.max(0, this.kv.blocksFor(computed + numNew) - seq.blockTable.length - pre.blocks.length);
      for (const b of pre.blocks) if (freed(b)) need++; // revived from the free queue
      return need <= free;
    };

    // 3: waiting requests, only when nothing had to be preempted in 1 + 2.
    if (out.preempted.length === 0) {
      let w = 0;
      while (budget > 0 && w < this.waiting.length) {
        const group = this.waiting[w] as SchedGroup<S>;
        // Never re-admit a request preempted for another one in this same step.
        if (out.preempted.includes(group)) break;
        if (ready !== undefined && !ready(group)) {
          w++;
          continue;
        }
        if (!fitsWithout(group, [])) {
          const lower = this.running.filter((g) => g.priority > group.priority);
          // NOTE: check first, so nothing is preempted for a request that cannot fit anyway.
          if (lower.length === 0 || !fitsWithout(group, lower)) break;
          for (;;) {
            const victim = this.pickVictim();
            if (victim === undefined || victim.priority <= group.priority) break;
            preempt(victim);
            if (fitsWithout(group, [])) break;
          }
        }
        if (this.numRunningSeqs + group.seqs.length > this.config.maxRunning) break;
        let placed = 0;
        let blocked = false;
        for (const seq of group.seqs) {
          const r = place(group, seq, false);
          if (r === "ok") placed++;
          else if (r === "full") {
            blocked = true;
            break;
          }
        }
        if (placed === 0) break;
        this.waiting.splice(w, 1);
        this.insertRunning(group);
        if (!this.admittedOnce.has(group.id)) {
          this.admittedOnce.add(group.id);
          out.admitted.push(group);
        }
        if (blocked) break;
      }
    }

    for (const e of out.scheduled) out.numTokens += e.numNew;
    return out;
  }

  /** Commits a step the model has run: the scheduled tokens are now in the KV cache. */
  update(out: SchedulerOutput<S>): void {
    for (const e of out.scheduled) {
      if (e.seq.numComputed !== e.start)
        throw new EngineDeadError(`sequence ${e.seq.seqId} moved from ${e.start} to ${e.seq.numComputed} mid-step`);
      if (e.seq.blockTable.length === 0) continue; // finished or preempted meanwhile
      e.seq.numComputed += e.numNew;
      this.kv.cacheFullBlocks(e.seq);
    }
  }

  private pickVictim(): SchedGroup<S> | undefined {
    let v: SchedGroup<S> | undefined;
    for (const g of this.running) if (v === undefined || before(v, g)) v = g;
    return v;
  }

  private insertWaiting(g: SchedGroup<S>): void {
    let i = this.waiting.length;
    while (i > 0 && before(g, this.waiting[i - 1] as SchedGroup<S>)) i--;
    this.waiting.splice(i, 0, g);
  }

  private insertRunning(g: SchedGroup<S>): void {
    let i = this.running.length;
    while (i > 0 && before(g, this.running[i - 1] as SchedGroup<S>)) i--;
    this.running.splice(i, 0, g);
  }
}

function remove<T>(arr: T[], x: T): void {
  const i = arr.indexOf(x);
  if (i >= 0) arr.splice(i, 1);
}
