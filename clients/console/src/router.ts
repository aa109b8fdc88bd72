// A hash router: #/instances, #/new, #/instances/<id>/<tab>, #/webhooks. One page is mounted
// at a time; the one left is told so (it ends its streams).
import type { Context, Page } from "./context.js";
import { replace } from "./dom.js";
import { instancePage } from "./pages/instance.js";
import { instancesPage } from "./pages/instances.js";
import { newInstancePage } from "./pages/new-instance.js";
import { webhooksPage } from "./pages/webhooks.js";

function pageFor(path: string[]): Page {
  if (path[0] === "new") return newInstancePage;
  if (path[0] === "webhooks") return webhooksPage;
  if (path[0] === "instances" && path[1]) return instancePage;
  return instancesPage;
}

export class Router {
  private leave: (() => void) | null = null;
  private readonly onHashChange = () => this.show();

  constructor(
    private readonly target: HTMLElement,
    private readonly context: Context,
  ) {}

  start(): void {
    window.addEventListener("hashchange", this.onHashChange);
    this.show();
  }

  stop(): void {
    window.removeEventListener("hashchange", this.onHashChange);
    this.leave?.();
    this.leave = null;
  }

  private show(): void {
    const [pathPart = "", query = ""] = location.hash.replace(/^#\/?/, "").split("?");
    const path = pathPart.split("/").filter(Boolean);
    this.leave?.();
    replace(this.target);
    this.leave = pageFor(path)(this.target, this.context, new URLSearchParams(query), path);
    window.scrollTo(0, 0);
  }
}
