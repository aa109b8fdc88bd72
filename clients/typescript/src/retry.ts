import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** How calls are retried when the server is unreachable or answers UNAVAILABLE. */
export interface Retry {
  /** Attempts of one unary call, the first included. */
  attempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}

export const defaultRetry: Retry = {
  attempts: 5,
  initialBackoffMs: 200,
  maxBackoffMs: 10_000,
  multiplier: 2,
};

/** Milliseconds to wait after `failures` failures in a row: full jitter, capped. */
export function backoffMs(retry: Retry, failures: number): number {
  const ceiling = retry.initialBackoffMs * retry.multiplier ** Math.min(failures, 64);
  return Math.random() * Math.min(retry.maxBackoffMs, ceiling);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const done = () => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const aborted = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

/** Retries unary calls that fail with UNAVAILABLE. Streams are not retried here: a broken
 * event subscription resumes on its own (`ZapgateClient.subscribe`). */
export function retryUnavailable(retry: Retry): Interceptor {
  return (next) => async (request) => {
    if (request.stream) {
      return next(request);
    }
    for (let failures = 0; ; failures++) {
      try {
        return await next(request);
      } catch (error) {
        const unavailable = ConnectError.from(error).code === Code.Unavailable;
        if (!unavailable || failures + 1 >= retry.attempts) {
          throw error;
        }
        await sleep(backoffMs(retry, failures), request.signal);
      }
    }
  };
}
