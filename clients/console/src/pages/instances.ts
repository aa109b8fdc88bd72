// The tenant's instances, a page at a time, with state badges that follow the event stream.
import { setBadge, stateBadge } from "../badge.js";
import type { Page } from "../context.js";
import { h, replace, setText } from "../dom.js";
import { describe } from "../errors.js";
import { enumName, enumWords, formatTime } from "../labels.js";
import { InstanceState, type Instance } from "../../../typescript/src/gen/zapgate/v1/instance_pb.js";

const PAGE_SIZE = 20;
const STATES = Object.values(InstanceState).filter((v): v is InstanceState => typeof v === "number");

export const instancesPage: Page = (root, context, params) => {
  const abort = new AbortController();
  const state = Number(params.get("state") ?? 0) as InstanceState;
  const search = params.get("q") ?? "";
  // Page tokens of the pages before this one, so "Previous" needs no server support.
  const tokens = (params.get("tokens") ?? "").split(",").filter(Boolean);
  const token = params.get("token") ?? "";

  const stateFilter = h(
    "select",
    { attrs: { name: "state", "aria-label": "State" } },
    ...STATES.map((value) =>
      h("option", { attrs: { value, selected: value === state } }, value === 0 ? "all states" : enumWords(InstanceState, value)),
    ),
  );
  const searchBox = h("input", { attrs: { name: "q", type: "search", placeholder: "Filter this page by id or name", value: search } });
  const go = (next: Record<string, string>) => {
    const query = new URLSearchParams({ state: stateFilter.value, q: searchBox.value, ...next });
    context.navigate(`#/instances?${query}`);
  };
  stateFilter.addEventListener("change", () => go({}));
  searchBox.addEventListener("input", () => applySearch());

  const banner = h("p", { class: "banner", attrs: { role: "alert" } });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const badges = new Map<string, HTMLElement>();
  const rows: [HTMLElement, Instance][] = [];

  root.append(
    h(
      "section",
      { attrs: { "data-page": "instances" } },
      h("div", { class: "title-row" }, h("h1", {}, "Instances"), h("a", { class: "button", attrs: { href: "#/new" } }, "New instance")),
      h("div", { class: "filters" }, stateFilter, searchBox),
      banner,
      h(
        "table",
        { class: "list" },
        h("thead", {}, h("tr", {}, h("th", {}, "Instance"), h("th", {}, "Phone"), h("th", {}, "State"), h("th", {}, "Sending"), h("th", {}, "Since"))),
        body,
      ),
      pager,
    ),
  );

  function applySearch(): void {
    const needle = searchBox.value.trim().toLowerCase();
    for (const [row, instance] of rows) {
      row.hidden = !!needle && !`${instance.id} ${instance.displayName}`.toLowerCase().includes(needle);
    }
  }

  const stopListening = context.feed.listen((event) => {
    if (event.payload.case !== "stateChanged") return;
    const badge = badges.get(event.instanceId);
    if (badge) setBadge(badge, event.payload.value.state);
  });

  async function load(): Promise<void> {
    await context.feed.ready; // the stream's start is fixed: no change after the list is missed
    try {
      const page = await context.api.instances.listInstances({ pageSize: PAGE_SIZE, pageToken: token, state }, { signal: abort.signal });
      replace(body, ...page.instances.map(row));
      if (page.instances.length === 0) replace(body, h("tr", {}, h("td", { attrs: { colspan: 5 }, class: "empty" }, "No instances.")));
      applySearch();
      replace(
        pager,
        tokens.length || token
          ? h("button", { on: { click: () => go({ token: tokens.at(-1) ?? "", tokens: tokens.slice(0, -1).join(",") }) } }, "Previous")
          : null,
        page.nextPageToken
          ? h("button", { on: { click: () => go({ token: page.nextPageToken, tokens: token ? [...tokens, token].join(",") : tokens.join(",") } ) } }, "Next")
          : null,
      );
    } catch (error) {
      if (!abort.signal.aborted) setText(banner, describe(error));
    }
  }

  function row(instance: Instance): HTMLElement {
    const badge = stateBadge(instance.state);
    badges.set(instance.id, badge);
    const tr = h(
      "tr",
      { attrs: { "data-instance": instance.id } },
      h("td", {}, h("a", { attrs: { href: `#/instances/${encodeURIComponent(instance.id)}` } }, instance.displayName), h("div", { class: "muted" }, instance.id)),
      h("td", {}, instance.phone || "—"),
      h("td", {}, badge),
      h("td", {}, instance.sendingPausedReason ? `paused: ${instance.sendingPausedReason}` : "on"),
      h("td", {}, formatTime(instance.stateChangeTime)),
    );
    tr.dataset.state = enumName(InstanceState, instance.state);
    rows.push([tr, instance]);
    return tr;
  }

  void load();
  return () => {
    abort.abort();
    stopListening();
  };
};
