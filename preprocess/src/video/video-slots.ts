/**
 * A bounded number of videos decoded at once, with a bounded wait list: a few heavy videos cannot take every
 * ffmpeg and CPU slot (images never wait here), and a burst past the wait list is refused as capacity (429),
 * not queued without end.
 */
import { abortError, exhausted } from "../errors";

/** Frees a slot taken by {@link VideoSlots.acquire}. */
export type Release = () => void;

/** A counting semaphore with a bounded queue, for video decodes. */
export class VideoSlots {
  private busy = 0;
  private readonly waiting: { grant: () => void; fail: (e: unknown) => void }[] = [];

  constructor(
    /** Videos decoded at once (MAX_CONCURRENT_VIDEOS). */
    readonly slots: number,
    /** Videos that may wait for a slot (MAX_QUEUED_VIDEOS); more are refused. */
    readonly maxWaiting: number,
  ) {}

  /** Videos waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Takes a slot, waiting in line for one; rejects when the line is full or `signal` aborts. */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const release = (): void => {
      const next = this.waiting.shift();
      if (next) next.grant();
      else this.busy--;
    };
    if (this.busy < this.slots) {
      this.busy++;
      return Promise.resolve(once(release));
    }
    if (this.waiting.length >= this.maxWaiting) {
      return Promise.reject(
        exhausted(`${this.slots + this.maxWaiting} videos are being decoded or waiting; retry later`),
      );
    }
    return new Promise<Release>((resolve, reject) => {
      const entry = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(once(release));
        },
        fail: reject,
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(abortError(signal as AbortSignal));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(entry);
    });
  }
}

function once(fn: () => void): Release {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
