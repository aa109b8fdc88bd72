// The tenant's webhooks, read only: where each one posts and how its deliveries go.
import type { Page } from "../context.js";
import { h, replace, setText } from "../dom.js";
import { describe } from "../errors.js";
import { enumWords, formatTime } from "../labels.js";
import { EventType, WebhookStatus } from "../../../typescript/src/gen/zapgate/v1/event_pb.js";
import { WebhookFormat, type Webhook } from "../../../typescript/src/gen/zapgate/v1/webhook_pb.js";

export const webhooksPage: Page = (root, context) => {
  const abort = new AbortController();
  const banner = h("p", { class: "banner", attrs: { role: "alert" } });
  const body = h("tbody");
  root.append(
    h(
      "section",
      { attrs: { "data-page": "webhooks" } },
      h("h1", {}, "Webhooks"),
      h("p", { class: "muted" }, "Managed with WebhookService (see docs/webhooks.md); shown here read-only."),
      banner,
      h(
        "table",
        { class: "list" },
        h("thead", {}, h("tr", {}, h("th", {}, "Webhook"), h("th", {}, "Sends"), h("th", {}, "Delivery"), h("th", {}, "Last error"))),
        body,
      ),
    ),
  );

  async function load(): Promise<void> {
    const all: Webhook[] = [];
    try {
      let pageToken = "";
      do {
        const page = await context.api.webhooks.listWebhooks({ pageSize: 100, pageToken }, { signal: abort.signal });
        all.push(...page.webhooks);
        pageToken = page.nextPageToken;
      } while (pageToken);
    } catch (error) {
      if (!abort.signal.aborted) setText(banner, describe(error));
      return;
    }
    replace(body, ...all.map(row));
    if (all.length === 0) replace(body, h("tr", {}, h("td", { attrs: { colspan: 4 }, class: "empty" }, "No webhooks.")));
  }

  function row(w: Webhook): HTMLElement {
    const d = w.delivery;
    return h(
      "tr",
      { attrs: { "data-webhook": w.id } },
      h("td", {}, h("div", {}, w.url), h("div", { class: "muted" }, `${w.id}${w.description ? ` · ${w.description}` : ""}`)),
      h(
        "td",
        {},
        h("div", {}, w.types.length ? w.types.map((t) => enumWords(EventType, t)).join(", ") : "every event"),
        h("div", { class: "muted" }, `${w.instanceIds.length ? w.instanceIds.join(", ") : "every instance"} · ${enumWords(WebhookFormat, w.format)}`),
      ),
      h(
        "td",
        {},
        h("span", { class: "badge", attrs: { "data-webhook-status": WebhookStatus[d?.status ?? 0] ?? "" } }, w.enabled ? enumWords(WebhookStatus, d?.status ?? 0) : "paused"),
        h("div", { class: "muted" }, `${d?.lagEvents ?? 0n} behind · last success ${formatTime(d?.lastSuccessTime)}`),
      ),
      h("td", {}, d?.lastError ? `${d.lastError} (${formatTime(d.lastErrorTime)})` : "—"),
    );
  }

  void load();
  return () => abort.abort();
};
