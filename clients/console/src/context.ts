import type { Api } from "./api.js";
import type { EventFeed } from "./live.js";

/** What every page gets. */
export interface Context {
  api: Api;
  feed: EventFeed;
  /** Goes to a route (`#/instances/abc/security`). */
  navigate: (hash: string) => void;
}

/** Builds a page into `root`; returns what to run when the page is left. */
export type Page = (root: HTMLElement, context: Context, params: URLSearchParams, path: string[]) => () => void;
