// Recent events of one instance: a subscription filtered to it, starting a window of the log
// before the newest cursor, then live.
import type { Context } from "../context.js";
import { h, setText } from "../dom.js";
import { describe, isCanceled } from "../errors.js";
import { eventKind, eventText } from "../event-text.js";
import { formatTime } from "../labels.js";

/** How far back "recent" reaches, in events of the whole log. */
const WINDOW = 2000n;
const SHOWN = 100;

export function eventsPanel(context: Context, instanceId: string, signal: AbortSignal): HTMLElement {
  const list = h("ol", { class: "events", attrs: { "data-events": "" } });
  const banner = h("p", { class: "banner", attrs: { role: "alert" } });

  async function follow(): Promise<void> {
    await context.feed.ready;
    const head = context.feed.cursor ?? 0n;
    const fromCursor = head > WINDOW ? head - WINDOW : 0n;
    try {
      for await (const { event } of context.api.events.subscribe({ fromCursor, instanceIds: [instanceId] }, { signal })) {
        if (!event) continue;
        list.prepend(
          h(
            "li",
            { attrs: { "data-event-type": event.payload.case ?? "" } },
            h("time", {}, formatTime(event.time)),
            h("span", { class: "kind" }, eventKind(event)),
            h("span", { class: "text" }, eventText(event)),
          ),
        );
        while (list.children.length > SHOWN) list.lastElementChild?.remove();
      }
    } catch (error) {
      if (!signal.aborted && !isCanceled(error)) setText(banner, `${describe(error)} (reload to follow again)`);
    }
  }

  void follow();
  return h("section", { class: "card", attrs: { "data-panel": "events" } }, h("h2", {}, "Recent events"), banner, list);
}
