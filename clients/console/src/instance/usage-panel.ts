// Usage: GetInstanceStats, fetched again when an event of the instance says a figure moved
// (a message changed state, sending paused or resumed, the connection changed).
import type { Context } from "../context.js";
import { h, replace, setText } from "../dom.js";
import { describe } from "../errors.js";
import { enumWords, formatPercent, formatTime } from "../labels.js";
import type { InstanceStats } from "../../../typescript/src/gen/zapgate/v1/instance_pb.js";
import { WaitingReason } from "../../../typescript/src/gen/zapgate/v1/message_pb.js";

const REFRESH_DEBOUNCE_MS = 250;

export function usagePanel(context: Context, instanceId: string, signal: AbortSignal): HTMLElement {
  const grid = h("dl", { class: "stats" });
  const banner = h("p", { class: "banner", attrs: { role: "alert" } });
  const updated = h("p", { class: "muted" });
  let timer: ReturnType<typeof setTimeout> | undefined;

  let requests = 0; // answers can overtake each other: only the newest request's is shown
  const refresh = async (): Promise<void> => {
    const mine = ++requests;
    try {
      const { stats } = await context.api.instances.getInstanceStats({ instanceId }, { signal });
      if (mine !== requests) return;
      if (stats) render(stats);
      setText(banner, "");
      setText(updated, `Updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`);
    } catch (error) {
      if (!signal.aborted) setText(banner, describe(error));
    }
  };
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(() => void refresh(), REFRESH_DEBOUNCE_MS);
  };
  const stop = context.feed.listen((event) => {
    if (event.instanceId !== instanceId) return;
    const kind = event.payload.case;
    if (kind === "messageStateChanged" || kind === "sendingPaused" || kind === "sendingResumed" || kind === "stateChanged") soon();
  });
  signal.addEventListener("abort", () => {
    stop();
    clearTimeout(timer);
  });

  function render(s: InstanceStats): void {
    const waiting = s.nextMessageId
      ? `${s.nextMessageId}: ${enumWords(WaitingReason, s.waitingReason)} until ${formatTime(s.nextAttemptTime)}`
      : "nothing queued";
    const items: [string, string, string][] = [
      ["sent_today", "Sent today", String(s.sentToday)],
      ["queue_depth", "Queue depth", String(s.queueDepth)],
      ["remaining_minute", "Left this minute", String(s.remainingMinute)],
      ["remaining_hour", "Left this hour", String(s.remainingHour)],
      ["remaining_day", "Left today", String(s.remainingDay)],
      ["remaining_new_contacts", "New contacts left today", String(s.remainingNewContacts)],
      ["next_send_time", "Next send", formatTime(s.nextSendTime)],
      ["waiting", "Next message waits for", waiting],
      ["paused_reason", "Sending paused", s.pausedReason || "no"],
      ["delivery_rate", "Delivered (recent sends)", formatPercent(s.deliveryRate)],
      ["read_rate", "Read (recent sends)", formatPercent(s.readRate)],
      ["remaining_group_creations_day", "Groups to create today", String(s.remainingGroupCreationsDay)],
      ["remaining_participant_adds_hour", "Participant adds this hour", String(s.remainingParticipantAddsHour)],
      ["remaining_participant_adds_day", "Participant adds today", String(s.remainingParticipantAddsDay)],
    ];
    replace(grid, ...items.map(([key, label, value]) => h("div", { attrs: { "data-stat": key } }, h("dt", {}, label), h("dd", {}, value))));
  }

  void refresh();
  return h(
    "section",
    { class: "card", attrs: { "data-panel": "usage" } },
    h("div", { class: "title-row" }, h("h2", {}, "Usage"), h("button", { class: "secondary", on: { click: () => void refresh() } }, "Refresh")),
    banner,
    grid,
    updated,
  );
}
