// One tenant-wide event subscription (EventService.Subscribe) shared by every page: badges and
// figures change when an event says so, never by polling. It starts with `only_new`; the
// response header `zapgate-start-cursor` tells where, so a page that lists instances after
// `ready` misses nothing. A dropped stream resumes from the last cursor seen (nothing lost).
// Over the HTTP port a stream's headers come with its first message: when they are late, the
// stream counts as in place after a short wait (the call was made and has not failed).
import type { Api } from "./api.js";
import { isCanceled, isUnauthenticated } from "./errors.js";
import type { Event } from "../../typescript/src/gen/zapgate/v1/event_pb.js";

export type Listener = (event: Event) => void;
export type FeedStatus = "connecting" | "live" | "retrying";

const START_CURSOR_HEADER = "zapgate-start-cursor";
const MAX_BACKOFF_MS = 15_000;
const READY_FALLBACK_MS = 500;

export class EventFeed {
  /** The newest cursor known: the start cursor, then each event's. */
  cursor: bigint | null = null;
  private readonly listeners = new Set<Listener>();
  private readonly statusListeners = new Set<(status: FeedStatus) => void>();
  private readonly abort = new AbortController();
  private markReady!: () => void;
  /** Resolves once the stream's starting point is fixed. */
  readonly ready = new Promise<void>((resolve) => (this.markReady = resolve));

  constructor(
    private readonly api: Api,
    private readonly onUnauthenticated: () => void,
  ) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.abort.abort();
  }

  /** Calls `listener` for every event until the returned function is called. */
  listen(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onStatus(listener: (status: FeedStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  private setStatus(status: FeedStatus): void {
    for (const listener of this.statusListeners) listener(status);
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.abort.signal.aborted) {
      this.setStatus(failures ? "retrying" : "connecting");
      let inPlace = false;
      const settle = () => {
        if (inPlace) return;
        inPlace = true;
        failures = 0;
        this.setStatus("live");
        this.markReady();
      };
      const lateHeaders = setTimeout(settle, READY_FALLBACK_MS);
      try {
        const request = this.cursor === null ? { onlyNew: true } : { fromCursor: this.cursor };
        const stream = this.api.events.subscribe(request, {
          signal: this.abort.signal,
          onHeader: (headers) => {
            const start = headers.get(START_CURSOR_HEADER);
            if (start !== null && this.cursor === null) this.cursor = BigInt(start);
            settle();
          },
        });
        for await (const response of stream) {
          const event = response.event;
          if (!event) continue;
          this.cursor = event.cursor;
          for (const listener of this.listeners) {
            try {
              listener(event);
            } catch (error) {
              console.error("an event listener failed", error); // one bad page never stops the feed
            }
          }
        }
      } catch (error) {
        if (this.abort.signal.aborted || isCanceled(error)) return;
        if (isUnauthenticated(error)) {
          this.onUnauthenticated();
          return;
        }
        console.warn("event stream dropped; resuming", error);
      } finally {
        clearTimeout(lateHeaders);
      }
      failures += 1;
      this.markReady(); // pages go on with what they have; badges catch up on resume
      await sleep(Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(failures, 5)) * Math.random(), this.abort.signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
