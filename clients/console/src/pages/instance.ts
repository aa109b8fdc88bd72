// One instance: its state (live), the actions on it, and tabs for connecting, the send policy,
// usage and recent events.
import { setBadge, stateBadge } from "../badge.js";
import { confirmAction } from "../confirm.js";
import type { Context, Page } from "../context.js";
import { h, replace, setText } from "../dom.js";
import { describe } from "../errors.js";
import { enumWords, formatTime } from "../labels.js";
import { connectPanel } from "../instance/connect-panel.js";
import { eventsPanel } from "../instance/events-panel.js";
import { policyForm } from "../instance/policy-form.js";
import { usagePanel } from "../instance/usage-panel.js";
import { StateReason, type Instance } from "../../../typescript/src/gen/zapgate/v1/instance_pb.js";

const TABS = [
  ["connect", "Connection"],
  ["security", "Security settings"],
  ["usage", "Usage"],
  ["events", "Events"],
] as const;
type Tab = (typeof TABS)[number][0];

export const instancePage: Page = (root, context, _params, path) => {
  const abort = new AbortController();
  const instanceId = decodeURIComponent(path[1] ?? "");
  const tab: Tab = TABS.some(([t]) => t === path[2]) ? (path[2] as Tab) : "connect";
  const banner = h("p", { class: "banner", attrs: { role: "alert" } });
  const header = h("div", { class: "instance-header" });
  const actions = h("div", { class: "actions" });
  const body = h("div");
  const page = h("section", { attrs: { "data-page": "instance", "data-tab": tab } }, header, banner, actions, tabNav(instanceId, tab), body);
  root.append(page);

  let instance: Instance | null = null;
  const badge = stateBadge(0);
  const reason = h("span", { class: "muted", attrs: { "data-reason": "" } });
  const paused = h("span", { attrs: { "data-sending": "" } });

  const stop = context.feed.listen((event) => {
    if (event.instanceId !== instanceId) return;
    const p = event.payload;
    if (p.case === "stateChanged") {
      setBadge(badge, p.value.state);
      setText(reason, enumWords(StateReason, p.value.reason));
    }
    if (p.case === "stateChanged" || p.case === "sendingPaused" || p.case === "sendingResumed") void load();
  });

  // Answers can overtake each other; only the newest request's answer is shown.
  let loads = 0;
  async function load(): Promise<void> {
    const mine = ++loads;
    try {
      const response = await context.api.instances.getInstance({ instanceId }, { signal: abort.signal });
      if (response.instance && mine === loads) show(response.instance);
    } catch (error) {
      if (!abort.signal.aborted) setText(banner, describe(error));
    }
  }

  function show(next: Instance): void {
    const first = instance === null;
    instance = next;
    setBadge(badge, next.state);
    setText(reason, `${enumWords(StateReason, next.stateReason)}${next.stateDetail ? `: ${next.stateDetail}` : ""}`);
    setText(paused, next.sendingPausedReason ? `Sending paused: ${next.sendingPausedReason}` : "Sending on");
    replace(
      header,
      h("a", { class: "back", attrs: { href: "#/instances" } }, "‹ Instances"),
      h("h1", { attrs: { "data-instance-name": "" } }, next.displayName),
      h(
        "p",
        { class: "facts" },
        h("span", {}, next.id),
        h("span", {}, next.phone || "no phone"),
        next.jid ? h("span", {}, next.jid) : null,
        badge,
        reason,
        paused,
        h("span", { class: "muted" }, `since ${formatTime(next.stateChangeTime)}`),
      ),
    );
    replace(actions, ...actionButtons(context, next, banner, load));
    if (first) replace(body, panel(context, tab, next, abort.signal, show));
  }

  void context.feed.ready.then(load);
  return () => {
    abort.abort();
    stop();
  };
};

function tabNav(instanceId: string, current: Tab): HTMLElement {
  const base = `#/instances/${encodeURIComponent(instanceId)}`;
  return h(
    "nav",
    { class: "tabs" },
    ...TABS.map(([tab, label]) =>
      h("a", { class: tab === current ? "active" : "", attrs: { href: `${base}/${tab}`, "aria-current": tab === current ? "page" : undefined } }, label),
    ),
  );
}

function panel(context: Context, tab: Tab, instance: Instance, signal: AbortSignal, onSaved: (i: Instance) => void): HTMLElement {
  switch (tab) {
    case "security":
      return h("section", { class: "card", attrs: { "data-panel": "security" } }, h("h2", {}, "Security settings: send policy"), policyForm(context, instance, onSaved));
    case "usage":
      return usagePanel(context, instance.id, signal);
    case "events":
      return eventsPanel(context, instance.id, signal);
    default:
      return connectPanel(context, instance, signal);
  }
}

function actionButtons(context: Context, instance: Instance, banner: HTMLElement, reload: () => Promise<void>): HTMLElement[] {
  const run = (action: () => Promise<unknown>) => async () => {
    setText(banner, "");
    try {
      await action();
      await reload();
    } catch (error) {
      setText(banner, describe(error));
    }
  };
  const id = { instanceId: instance.id };
  const api = context.api.instances;
  return [
    h("button", { class: "secondary", attrs: { "data-action": "reconnect" }, on: { click: run(() => api.reconnect(id)) } }, "Reconnect"),
    instance.sendingPausedReason
      ? h("button", { class: "secondary", attrs: { "data-action": "resume" }, on: { click: run(() => api.resumeSending(id)) } }, "Resume sending")
      : h("button", { class: "secondary", attrs: { "data-action": "pause" }, on: { click: run(() => api.pauseSending({ ...id, reason: "paused from the console" })) } }, "Pause sending"),
    h(
      "button",
      { class: "secondary", attrs: { "data-action": "logout" }, on: { click: async () => { if (await confirmAction(`Log out ${instance.displayName}? The device is unlinked and the session wiped; pairing again needs a QR code.`, "Log out")) await run(() => api.logout(id))(); } } },
      "Log out",
    ),
    h(
      "button",
      {
        class: "danger",
        attrs: { "data-action": "delete" },
        on: {
          click: async () => {
            if (!(await confirmAction(`Delete ${instance.displayName}? Its connection stops and its session is wiped.`, "Delete"))) return;
            try {
              await api.deleteInstance(id);
              context.navigate("#/instances");
            } catch (error) {
              setText(banner, describe(error));
            }
          },
        },
      },
      "Delete",
    ),
  ];
}
