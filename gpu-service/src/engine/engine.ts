/**
 * The engine core: one loop, one owner of all request and KV state (vLLM `EngineCore.step`).
 *
 *   add/abort ──> vision: at most `visionSlicesPerStep` slices of the images of requests not yet admitted
 *                   │  (EncoderCache by content hash; a request is admitted once its images are encoded)
 *                   ▼
 *                 Scheduler.schedule(ready)
 *                   │  SchedulerOutput (which sequences, how many tokens, block copies)
 *                   ▼
 *                 embeddings of the rows computed ─> copyBlock ─> model.step(SeqStep[])
 *                   │  logits per sequence that reached its end
 *                   ▼
 *                 Scheduler.update() ─> sample / beam step ─> events (token, choice_end, final)
 *
 * NOTE: images are encoded a few slices per step, interleaved with the decode steps of running requests, so a
 * multi-slice image never stalls running streams for its whole encode (a 1344x1344 image is 10 slices of
 * seconds each on a CPU); its request's prefill starts, exactly as it would have, once all are encoded.
 *
 * Per-request failures (bad media, does not fit) end only that request with an `error` event; a broken
 * invariant or a failed model step kills the engine (`EngineDeadError`): every request gets an error and
 * nothing more runs, since the KV cache can no longer be trusted.
 */

import { randomBytes } from "node:crypto";
import { applyTokenMask } from "../grammar/token-mask";
import { BeamSearch, type LiveBeam } from "./beam-search";
import { BlockPool } from "./block-pool";
import { EncoderCache } from "./encoder-cache";
import { KVCacheManager, type MediaSpan } from "./kv-cache-manager";
import { nextToken, positionLogprobs } from "./next-token";
import { OutputText } from "./output-text";
import { promptMediaSpans } from "./prompt-spans";
import { Rng } from "./sampler";
import { Scheduler, type SchedulerOutput } from "./scheduler";
import { RequestState, Seq } from "./sequence";
import {
  EngineDeadError,
  type EngineEvent,
  type EngineModel,
  type EngineRequest,
  type EngineStats,
  type FinishReason,
  type PositionLogprobs,
  RequestError,
  type SeqStep,
  type StepRecord,
  type TokenBytes,
  type TraceLink,
} from "./types";

/** Terminators of MiniCPM-V 2.6 (`<|im_end|>`, `<|endoftext|>`; MINICPMV26.md §2). */
export const TERMINATORS = [151645, 151643] as const;

/** Engine limits. */
export interface EngineConfig {
  /** Token budget per step. */
  maxBatchTokens: number;
  /** Most sequences running at once. */
  maxRunning: number;
  /** Most requests waiting; more are refused with resource_exhausted. */
  maxWaiting: number;
  /** Byte budget of the vision-embedding cache. */
  encoderCacheBytes: number;
  /** Share KV blocks between requests with a common prefix. */
  enablePrefixCaching: boolean;
  /** Terminator ids (default TERMINATORS). */
  terminators?: readonly number[];
  /** Image slices encoded per step, between the decode steps of running requests (default 1). */
  visionSlicesPerStep?: number;
}

/** Continuous-batching engine over one model replica. */
export class Engine {
  readonly pool: BlockPool;
  readonly kv: KVCacheManager;
  readonly scheduler: Scheduler<Seq>;
  readonly encoderCache: EncoderCache;
  private readonly requests = new Map<string, RequestState>();
  private readonly terminators: readonly number[];
  private arrivals = 0;
  private seqIds = 0;
  private inStep = false;
  private readonly pendingAborts = new Set<string>();
  private dead: Error | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private steps = 0;
  private promptTokensComputed = 0;
  private generationTokens = 0;
  /** Called once when the engine dies. */
  onFatal: ((err: Error) => void) | undefined;
  /** Tracing on: called after each step that ran a traced request. Unset, steps cost nothing extra. */
  onStep: ((rec: StepRecord) => void) | undefined;
  /** Adds to `now()` to get epoch milliseconds (the default clock is this thread's performance.now()). */
  private readonly epoch = performance.timeOrigin;

  constructor(
    readonly model: EngineModel,
    private readonly tok: TokenBytes,
    readonly config: EngineConfig,
    private readonly now: () => number = () => performance.now(),
  ) {
    const info = model.info;
    this.pool = new BlockPool(info.numBlocks);
    this.kv = new KVCacheManager(this.pool, info.blockSize, config.enablePrefixCaching);
    this.scheduler = new Scheduler<Seq>(this.kv, config);
    this.encoderCache = new EncoderCache(config.encoderCacheBytes);
    this.terminators = config.terminators ?? TERMINATORS;
  }

  /** Whether the engine died (a broken invariant or a failed step). */
  get isDead(): boolean {
    return this.dead !== undefined;
  }

  /**
   * Queues a request; its events go to `emit`, `final` or `error` last. Throws `RequestError` for input the
   * engine can never serve or when the waiting queue is full.
   */
  add(req: EngineRequest, emit: (ev: EngineEvent) => void): void {
    if (this.dead) throw new RequestError("unavailable", `the engine stopped: ${this.dead.message}`);
    if (this.stopped) throw new RequestError("unavailable", "the engine is shutting down");
    if (this.requests.has(req.id)) throw new RequestError("invalid_argument", `request id ${req.id} is already in use`);
    const info = this.model.info;
    const promptLen = req.prompt.tokenIds.length;
    if (promptLen === 0) throw new RequestError("invalid_argument", "prompt.token_ids: must not be empty");
    if (promptLen >= info.contextLength)
      throw new RequestError(
        "invalid_argument",
        `prompt.token_ids: ${promptLen} tokens, the context length is ${info.contextLength} (prompt + at least 1 generated token)`,
      );
    for (const [i, t] of req.prompt.tokenIds.entries())
      if (!Number.isInteger(t) || t < 0 || t >= info.vocabSize)
        throw new RequestError(
          "invalid_argument",
          `prompt.token_ids[${i}]: ${t} is outside the vocabulary (0..${info.vocabSize - 1})`,
        );
    for (const id of req.params.logitBias.keys())
      if (!Number.isInteger(id) || id < 0 || id >= info.vocabSize)
        throw new RequestError(
          "invalid_argument",
          `params.logit_bias: token id ${id} is outside the vocabulary (0..${info.vocabSize - 1})`,
        );
    if (req.params.structured) {
      if (!req.constraint)
        throw new RequestError("internal", "params.structured: the grammar was not compiled before admission");
      if (req.params.beamWidth > 1)
        throw new RequestError(
          "invalid_argument",
          "params.structured: not supported with beam search (beam_width > 1)",
        );
    }
    const spans = promptMediaSpans(req.prompt, info.queryNum);
    const params = { ...req.params, maxTokens: Math.min(req.params.maxTokens, info.contextLength - promptLen) };
    const width = Math.max(1, params.beamWidth);
    const minBlocks =
      this.kv.blocksFor(promptLen + 1) + (params.n > 1 || width > 1 ? Math.max(params.n, width) - 1 : 0);
    if (minBlocks > info.numBlocks)
      // A size limit, not capacity: the request can never fit, so it is a 400 that clients do not retry.
      throw new RequestError(
        "invalid_argument",
        `prompt.token_ids: ${promptLen} tokens need ${minBlocks} KV blocks, the cache holds ${info.numBlocks}`,
      );
    const state = new RequestState({ ...req, params }, this.arrivals++, emit, this.now());
    state.mediaEnd = spans.reduce((m, s) => Math.max(m, s.end), 0);
    if (width > 1)
      state.beam = new BeamSearch(
        width,
        params.repetitionPenalty,
        this.stopIds(params),
        params.minTokens,
        params.lengthPenalty,
        params.logitBias,
      );
    const seed = params.seed ?? randomBytes(8).readBigUInt64LE();
    state.seqs.push(this.newSeq(state, 0, [...req.prompt.tokenIds], spans, seed));
    if (!this.scheduler.add(state))
      throw new RequestError(
        "resource_exhausted",
        `the waiting queue is full (${this.config.maxWaiting} requests); retry later`,
      );
    this.requests.set(req.id, state);
    this.wake?.();
  }

  /** Cancels a request: its blocks are freed before the next step; it ends with finish reason abort. */
  abort(id: string): void {
    if (this.inStep) this.pendingAborts.add(id);
    else this.doAbort(id);
  }

  /** Whether any request is waiting or running. */
  hasWork(): boolean {
    return this.scheduler.waiting.length > 0 || this.scheduler.running.length > 0;
  }

  /** Counters and gauges. */
  stats(): EngineStats {
    return {
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length,
      kvTotalBlocks: this.pool.numBlocks,
      kvUsedBlocks: this.pool.numUsed,
      kvCachedBlocks: this.pool.numCached,
      kvUsage: this.pool.usage,
      prefixCacheQueries: this.kv.queries,
      prefixCacheHits: this.kv.hits,
      encoderCacheQueries: this.encoderCache.queries,
      encoderCacheHits: this.encoderCache.hits,
      encoderCacheBytes: this.encoderCache.bytes,
      preemptions: this.scheduler.preemptions,
      steps: this.steps,
      promptTokensComputed: this.promptTokensComputed,
      generationTokens: this.generationTokens,
    };
  }

  /** Runs steps until `stop()`; resolves when stopped, rejects when the engine dies. */
  async run(): Promise<void> {
    while (!this.stopped) {
      if (!this.hasWork()) {
        await new Promise<void>((r) => {
          this.wake = r;
        });
        this.wake = undefined;
        continue;
      }
      await this.step();
      // Let add/abort messages in between steps.
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  /** Stops the loop; with `abortAll`, ends every request with finish reason abort. */
  stop(abortAll = true): void {
    if (abortAll) for (const id of [...this.requests.keys()]) this.abort(id);
    this.stopped = true;
    this.wake?.();
  }

  /** One schedule -> execute -> update iteration. */
  async step(): Promise<void> {
    if (this.dead) throw this.dead;
    this.inStep = true;
    try {
      await this.stepInner();
    } catch (err) {
      this.die(err instanceof Error ? err : new Error(String(err)));
      throw this.dead;
    } finally {
      this.inStep = false;
    }
    for (const id of this.pendingAborts) this.doAbort(id);
    this.pendingAborts.clear();
  }

  private async stepInner(): Promise<void> {
    // NOTE: no await without vision work, so a step without images runs its model step in the same tick.
    if (this.visionPending()) await this.encodeAhead();
    const out = this.scheduler.schedule((g) => this.pendingMedia(g as RequestState) === undefined);
    const now = this.now();
    for (const { group, message } of out.failed) this.fail(group as RequestState, "resource_exhausted", message);
    for (const g of out.preempted) for (const s of (g as RequestState).seqs) s.pendingLogits = null;
    for (const g of out.admitted) {
      const r = g as RequestState;
      r.firstScheduledAt ??= now; // set already when its images were encoded ahead
      r.cachedPromptTokens = out.scheduled.find((e) => e.group === g)?.cachedTokens ?? 0;
    }
    if (out.scheduled.length === 0) return;

    // Vision embeddings for the placeholder rows this step computes.
    const steps: SeqStep[] = [];
    const live: typeof out.scheduled = [];
    for (const e of out.scheduled) {
      const r = e.group as RequestState;
      if (!this.requests.has(r.id)) continue;
      let embeds: { offset: number; rows: Float32Array }[] | undefined;
      try {
        embeds = await this.embedsFor(r, e.start, e.numNew);
      } catch (err) {
        if (err instanceof EngineDeadError) throw err;
        this.fail(r, "invalid_argument", `vision encoder: ${err instanceof Error ? err.message : String(err)}`);
        continue;
      }
      const seq = e.seq;
      const step: SeqStep = {
        tokenIds: seq.tokens.slice(e.start, e.start + e.numNew),
        pastLen: e.start,
        blockTable: seq.blockTable.slice(0, this.kv.blocksFor(e.start + e.numNew)),
        wantLogits: e.wantLogits,
      };
      if (embeds !== undefined && embeds.length > 0) step.embeds = embeds;
      steps.push(step);
      live.push(e);
    }
    if (steps.length === 0) return;
    for (const e of live) for (const c of e.copies) this.model.copyBlock(c.src, c.dst);
    const logits = await this.model.step(steps);
    if (logits.length !== steps.length)
      throw new EngineDeadError(`model.step returned ${logits.length} results for ${steps.length} sequences`);
    this.steps++;
    this.scheduler.update(out as SchedulerOutput<Seq>);
    for (const e of live)
      if (e.start < (e.group as RequestState).promptLen)
        this.promptTokensComputed += Math.min(e.numNew, (e.group as RequestState).promptLen - e.start);

    const beamGroups = new Set<RequestState>();
    if (this.onStep) this.reportStep(now, live);
    const masks = await this.grammarMasks(live);
    for (const [i, e] of live.entries()) {
      const r = e.group as RequestState;
      if (!e.wantLogits || !this.requests.has(r.id) || this.pendingAborts.has(r.id)) continue;
      const l = logits[i];
      if (!l) throw new EngineDeadError(`no logits for sequence ${e.seq.seqId}, which asked for them`);
      if (r.beam) {
        e.seq.pendingLogits = l;
        beamGroups.add(r);
      } else this.sampleStep(r, e.seq, l, masks.get(e.seq));
    }
    for (const r of beamGroups) if (this.requests.has(r.id)) this.beamStep(r);
    for (const e of live) {
      const r = e.group as RequestState;
      if (r.embeds.size > 0 && r.seqs.every((s) => s.numComputed >= r.mediaEnd)) r.embeds.clear();
    }
  }

  /**
   * Constrained decoding: the allowed-token bitmask of every sequence about to sample (making its matcher,
   * and the matchers of the sequences n > 1 will fork into, before the first sample).
   */
  private async grammarMasks(live: SchedulerOutput<Seq>["scheduled"]): Promise<Map<Seq, Int32Array>> {
    const masks = new Map<Seq, Int32Array>();
    for (const e of live) {
      const r = e.group as RequestState;
      const constraint = r.req.constraint;
      if (!constraint || !e.wantLogits || !this.requests.has(r.id) || this.pendingAborts.has(r.id)) continue;
      const stopIds = this.stopIds(r.params);
      e.seq.matcher ??= await constraint.matcher(stopIds);
      if (!r.forked && r.params.n > 1)
        while (r.spareMatchers.length < r.params.n - 1) r.spareMatchers.push(await constraint.matcher(stopIds));
      masks.set(e.seq, await e.seq.matcher.nextMask());
    }
    return masks;
  }

  /** Frees the grammar state of sequences that ended (idempotent). */
  private releaseGrammar(seqs: readonly Seq[], r?: RequestState): void {
    for (const s of seqs) {
      s.matcher?.dispose();
      s.matcher = null;
    }
    if (r) {
      for (const m of r.spareMatchers) m.dispose();
      r.spareMatchers = [];
    }
  }

  /** Reports a step that ran traced requests (its time covers vision encode, the model step and the scheduler). */
  private reportStep(start: number, live: SchedulerOutput<Seq>["scheduled"]): void {
    const links: TraceLink[] = [];
    let tokens = 0;
    let prefillSeqs = 0;
    for (const e of live) {
      const r = e.group as RequestState;
      tokens += e.numNew;
      if (e.start < r.promptLen) prefillSeqs++;
      // A request with n > 1 has several sequences in the batch: one link per request.
      if (r.req.trace && !links.includes(r.req.trace)) links.push(r.req.trace);
    }
    if (links.length === 0) return;
    const end = this.now();
    this.onStep?.({
      start: this.epoch + start,
      end: this.epoch + end,
      seqs: live.length,
      tokens,
      prefillSeqs,
      links,
    });
  }

  /** Whether a running or waiting request still needs an image encoded. */
  private visionPending(): boolean {
    for (const g of this.scheduler.running) if (this.pendingMedia(g as RequestState) !== undefined) return true;
    for (const g of this.scheduler.waiting) if (this.pendingMedia(g as RequestState) !== undefined) return true;
    return false;
  }

  /**
   * This step's vision work: up to `visionSlicesPerStep` slices of the first images that requests still need,
   * in scheduling order (running, then waiting). A bad image fails only its request.
   */
  private async encodeAhead(): Promise<void> {
    let budget = Math.max(1, this.config.visionSlicesPerStep ?? 1);
    const groups = [...this.scheduler.running, ...this.scheduler.waiting] as RequestState[];
    for (const r of groups) {
      while (budget > 0 && this.requests.has(r.id) && !this.pendingAborts.has(r.id)) {
        const m = this.pendingMedia(r);
        if (m === undefined) break;
        try {
          const done = await this.encodeChunk(r, m, budget);
          if (done === 0) throw new EngineDeadError(`image ${m.contentHash}: nothing left to encode, yet not ready`);
          budget -= done;
        } catch (err) {
          if (err instanceof EngineDeadError) throw err;
          this.fail(r, "invalid_argument", `vision encoder: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      if (budget <= 0) break;
    }
  }

  /**
   * The first image `r` still needs encoded before it can compute (none: undefined). An image is needed when
   * a placeholder lies at or after the position the request computes from (its cached prefix when it has not
   * started); one the encoder cache holds is taken from there.
   */
  private pendingMedia(r: RequestState): RequestState["media"][number] | undefined {
    if (r.mediaEnd === 0) return undefined;
    let from = Number.POSITIVE_INFINITY;
    for (const s of r.seqs) {
      const fresh = s.blockTable.length === 0 && s.numComputed === 0;
      from = Math.min(from, fresh ? this.kv.findCachedPrefix(s).numTokens : s.numComputed);
    }
    if (from >= r.mediaEnd) return undefined;
    const q = this.model.info.queryNum;
    for (const m of r.media) {
      const end = m.slices.reduce((e, sl) => Math.max(e, sl.tokenOffset + q), 0);
      if (end <= from || r.embeds.has(m.contentHash)) continue;
      if (this.encoderCache.has(m.contentHash)) {
        this.mediaFromCache(r, m.contentHash, m.slices.length);
        continue;
      }
      return m;
    }
    return undefined;
  }

  /** Encodes up to `max` more slices of `m` for `r`; returns how many. A complete image goes to the caches. */
  private async encodeChunk(r: RequestState, m: RequestState["media"][number], max: number): Promise<number> {
    let part = r.partialEmbeds.get(m.contentHash);
    if (!part) {
      // Vision work is the engine working on the request: its queue wait ends here (vLLM counts encoder
      // scheduling as scheduling), so queue time stays queue time and prefill time includes the encode.
      r.firstScheduledAt ??= this.now();
      this.encoderCache.queries++; // the lookup that missed (pendingMedia only peeked with has())
      part = { arrays: [], start: this.now() };
      r.partialEmbeds.set(m.contentHash, part);
    }
    const k0 = part.arrays.length;
    const chunk = m.slices.slice(k0, k0 + max);
    const t0 = this.now();
    const arrays = await this.model.encodeSlices(chunk.map((s) => ({ width: s.width, height: s.height, rgb: s.rgb })));
    r.visionMs += this.now() - t0;
    const want = this.model.info.queryNum * this.model.info.hiddenSize;
    if (arrays.length !== chunk.length || arrays.some((a) => a.length !== want))
      throw new EngineDeadError(`encodeSlices returned ${arrays.length} arrays for ${chunk.length} slices`);
    part.arrays.push(...arrays);
    if (part.arrays.length === m.slices.length) {
      r.partialEmbeds.delete(m.contentHash);
      r.vision?.push({
        start: this.epoch + part.start,
        end: this.epoch + this.now(),
        slices: m.slices.length,
        cacheHit: false,
      });
      this.encoderCache.put(m.contentHash, part.arrays);
      r.embeds.set(m.contentHash, part.arrays);
    }
    return chunk.length;
  }

  /** Takes an image's embeddings from the encoder cache for `r` (a hit; traced requests record it). */
  private mediaFromCache(r: RequestState, hash: string, slices: number): Float32Array[] | undefined {
    const arrays = this.encoderCache.get(hash);
    if (arrays === undefined) return undefined;
    if (r.vision) {
      const t = this.epoch + this.now();
      r.vision.push({ start: t, end: t, slices, cacheHit: true });
    }
    r.embeds.set(hash, arrays);
    return arrays;
  }

  /** Embedding rows for positions [start, start+n) of a request's prompt, chunk-relative. */
  private async embedsFor(r: RequestState, start: number, n: number) {
    const end = Math.min(start + n, r.promptLen);
    const out: { offset: number; rows: Float32Array }[] = [];
    if (start >= r.mediaEnd) return out;
    const q = this.model.info.queryNum;
    const hidden = this.model.info.hiddenSize;
    for (const m of r.media) {
      let arrays: Float32Array[] | undefined;
      for (const [k, sl] of m.slices.entries()) {
        const s0 = Math.max(sl.tokenOffset, start);
        const s1 = Math.min(sl.tokenOffset + q, end);
        if (s0 >= s1) continue;
        arrays ??= await this.mediaEmbeds(r, m.contentHash, m.slices);
        const rows = arrays[k] as Float32Array;
        // rows: [queryNum, hidden] -> the [s1-s0, hidden] part this chunk covers
        out.push({
          offset: s0 - start,
          rows: rows.subarray((s0 - sl.tokenOffset) * hidden, (s1 - sl.tokenOffset) * hidden),
        });
      }
    }
    return out;
  }

  private async mediaEmbeds(r: RequestState, hash: string, slices: RequestState["media"][number]["slices"]) {
    const held = r.embeds.get(hash);
    if (held) return held;
    // NOTE: normally encodeAhead has these ready before admission; this path covers a cached prefix that
    // was evicted between the readiness check and the step (the whole image is encoded here, inline).
    let arrays = this.mediaFromCache(r, hash, slices.length);
    if (!arrays) {
      const t0 = this.now();
      arrays = await this.model.encodeSlices(slices.map((s) => ({ width: s.width, height: s.height, rgb: s.rgb })));
      const t1 = this.now();
      r.visionMs += t1 - t0;
      r.vision?.push({ start: this.epoch + t0, end: this.epoch + t1, slices: slices.length, cacheHit: false });
      const want = this.model.info.queryNum * this.model.info.hiddenSize;
      if (arrays.length !== slices.length || arrays.some((a) => a.length !== want))
        throw new EngineDeadError(`encodeSlices returned ${arrays.length} arrays for ${slices.length} slices`);
      this.encoderCache.put(hash, arrays);
    }
    r.embeds.set(hash, arrays);
    return arrays;
  }

  private stopIds(p: EngineRequest["params"]): number[] {
    return [...(p.ignoreEos ? [] : this.terminators), ...p.stopTokenIds];
  }

  private newSeq(r: RequestState, index: number, tokens: number[], spans: readonly MediaSpan[], seed: bigint): Seq {
    const text = r.beam ? null : new OutputText(this.tok, r.params.stop, r.params.skipSpecialTokens);
    return new Seq(this.seqIds++, index, tokens, r.promptLen, spans, new Rng(seed, index), text);
  }

  /**
   * Sampling mode: forks n > 1 at the prompt's logits, then samples one token per sequence. With a grammar,
   * `mask` is the allowed tokens (the forked sequences start in the same grammar state).
   */
  private sampleStep(r: RequestState, seq: Seq, logits: Float32Array, mask: Int32Array | undefined): void {
    const targets = [seq];
    if (!r.forked && r.params.n > 1) {
      r.forked = true;
      const seed = r.params.seed ?? randomBytes(8).readBigUInt64LE();
      for (let i = 1; i < r.params.n; i++) {
        const child = this.newSeq(r, i, [...seq.tokens], seq.mediaSpans, seed);
        child.matcher = r.spareMatchers.pop() ?? null;
        this.scheduler.fork(r, seq, child);
        targets.push(child);
      }
    }
    let l = logits;
    if (mask) {
      l = Float32Array.from(logits);
      applyTokenMask(l, mask);
    }
    for (const s of targets) if (this.requests.has(r.id)) this.sampleOne(r, s, l);
  }

  private sampleOne(r: RequestState, s: Seq, logits: Float32Array): void {
    const next = nextToken(s, r.params, logits, this.stopIds(r.params), this.tok);
    const id = next.event.tokenIds[0] as number;
    if (s.matcher && !s.matcher.accept(id)) {
      this.fail(r, "internal", `the grammar rejected token ${id}, which its mask allowed`);
      return;
    }
    this.generationTokens++;
    r.completionTokens++;
    const now = this.now();
    r.firstTokenAt ??= now;
    r.lastTokenAt = now;
    r.emit(next.event);
    if (next.finish) this.endChoice(r, s, next.finish, next.stopReason);
  }

  /** Beam mode: once every live beam has logits, chooses the next beams (forking parents copy-on-write). */
  private beamStep(r: RequestState): void {
    const beam = r.beam as BeamSearch<PositionLogprobs[]>;
    if (!r.seqs.every((s) => s.pendingLogits !== null)) return;
    const seqs = [...r.seqs];
    const live = seqs.map((s) => ({ tokens: s.generated(), score: s.beamScore, payload: s.beamLogprobs }));
    const logits = seqs.map((s) => s.pendingLogits as Float32Array);
    // With logprobs, each beam's list grows by the chosen token's entry (raw distribution, like sampling).
    const extend = (parent: number, token: number): PositionLogprobs[] =>
      r.params.logprobs
        ? [
            ...(seqs[parent] as Seq).beamLogprobs,
            positionLogprobs(logits[parent] as Float32Array, token, r.params.topLogprobs, this.tok),
          ]
        : [];
    const choices = beam.step(live, logits, extend);
    for (const s of seqs) s.pendingLogits = null;
    if (choices.length === 0) {
      this.beamFinish(r, live);
      return;
    }
    // Forks first (children copy the parent before it grows), then append.
    const used = new Set<Seq>();
    const targets: [Seq, number, number, PositionLogprobs[]][] = [];
    for (const c of choices) {
      const parent = seqs[c.parent] as Seq;
      const lps = extend(c.parent, c.token);
      if (!used.has(parent)) {
        used.add(parent);
        targets.push([parent, c.token, c.score, lps]);
      } else {
        const child = new Seq(
          this.seqIds++,
          0,
          [...parent.tokens],
          parent.promptLen,
          parent.mediaSpans,
          parent.rng,
          null,
        );
        this.scheduler.fork(r, parent, child);
        targets.push([child, c.token, c.score, lps]);
      }
    }
    for (const s of seqs) if (!used.has(s)) this.scheduler.finishSeq(r, s);
    for (const [s, tok, score, lps] of targets) {
      s.tokens.push(tok);
      s.beamScore = score;
      s.beamLogprobs = lps;
    }
    this.generationTokens += targets.length;
    const now = this.now();
    r.firstTokenAt ??= now;
    r.lastTokenAt = now;
    const len = targets[0]?.[0].numGenerated ?? 0;
    if (len >= r.params.maxTokens)
      this.beamFinish(
        r,
        r.seqs.map((s) => ({ tokens: s.generated(), score: s.beamScore, payload: s.beamLogprobs })),
      );
  }

  private beamFinish(r: RequestState, live: LiveBeam<PositionLogprobs[]>[]): void {
    const beam = r.beam as BeamSearch<PositionLogprobs[]>;
    const hyps = beam.finalize(live, r.params.n);
    for (const [i, h] of hyps.entries()) {
      const text = new OutputText(this.tok, [], r.params.skipSpecialTokens);
      let s = "";
      for (const t of h.tokens) s += text.push(t).text;
      s += text.flush();
      const fromEos = h.eosToken !== undefined;
      const ids = h.eosToken !== undefined ? [...h.tokens, h.eosToken] : h.tokens;
      r.completionTokens += ids.length;
      const ev: Extract<EngineEvent, { type: "token" }> = { type: "token", index: i, tokenIds: ids, text: s };
      if (r.params.logprobs) ev.logprobs = h.payload ?? [];
      r.emit(ev);
      r.emit({
        type: "choice_end",
        index: i,
        finishReason: fromEos ? "stop" : "length",
        stopReason: "",
      });
    }
    this.finishRequest(r);
  }

  private endChoice(r: RequestState, s: Seq, reason: FinishReason, stopReason: string): void {
    r.emit({ type: "choice_end", index: s.index, finishReason: reason, stopReason });
    r.choicesEnded++;
    this.releaseGrammar([s]);
    this.scheduler.finishSeq(r, s);
    if (r.seqs.length === 0) this.finishRequest(r);
  }

  private finishRequest(r: RequestState): void {
    this.releaseGrammar(r.seqs, r);
    this.scheduler.finish(r);
    this.requests.delete(r.id);
    const now = this.now();
    const start = r.firstScheduledAt ?? now;
    const e = this.epoch;
    const at = (t: number | undefined) => (t === undefined ? undefined : e + t);
    r.emit({
      type: "final",
      usage: {
        promptTokens: r.promptLen,
        promptCounts: r.req.prompt.counts,
        cachedPromptTokens: r.cachedPromptTokens,
        completionTokens: r.completionTokens,
      },
      timings: {
        queueMs: start - r.arrivedAt,
        visionEncodeMs: r.visionMs,
        prefillMs: (r.firstTokenAt ?? start) - start,
        decodeMs: (r.lastTokenAt ?? 0) - (r.firstTokenAt ?? 0),
      },
      ...(r.vision
        ? {
            timeline: {
              arrivedAt: e + r.arrivedAt,
              scheduledAt: at(r.firstScheduledAt),
              firstTokenAt: at(r.firstTokenAt),
              lastTokenAt: at(r.lastTokenAt),
              endedAt: e + now,
              vision: r.vision,
            },
          }
        : {}),
    });
  }

  private doAbort(id: string): void {
    const r = this.requests.get(id);
    if (!r) return;
    const n = r.beam ? r.params.n : Math.max(1, r.params.n);
    const open = r.beam ? [...Array(n).keys()] : r.seqs.map((s) => s.index);
    if (!r.beam && !r.forked) for (let i = 1; i < n; i++) open.push(i);
    for (const i of open) {
      const s = r.seqs.find((x) => x.index === i);
      const tail = s?.text?.flush() ?? "";
      if (tail) r.emit({ type: "token", index: i, tokenIds: [], text: tail });
      r.emit({ type: "choice_end", index: i, finishReason: "abort", stopReason: "" });
    }
    this.finishRequest(r);
  }

  private fail(r: RequestState, kind: "invalid_argument" | "resource_exhausted" | "internal", message: string): void {
    this.releaseGrammar(r.seqs, r);
    this.scheduler.finish(r);
    this.requests.delete(r.id);
    r.emit({ type: "error", kind, message });
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = err instanceof EngineDeadError ? err : new EngineDeadError(`model step failed: ${err.message}`);
    for (const r of this.requests.values()) {
      this.releaseGrammar(r.seqs, r);
      r.emit({ type: "error", kind: "internal", message: `engine stopped: ${this.dead.message}` });
    }
    this.requests.clear();
    this.stopped = true;
    this.onFatal?.(this.dead);
  }
}
