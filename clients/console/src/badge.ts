import { h, setText } from "./dom.js";
import { enumName, enumWords } from "./labels.js";
import { InstanceState } from "../../typescript/src/gen/zapgate/v1/instance_pb.js";

/** A state badge; `data-state` carries the enum name (CONNECTED) for styles and tests. */
export function stateBadge(state: InstanceState): HTMLElement {
  const badge = h("span", { class: "badge" });
  setBadge(badge, state);
  return badge;
}

export function setBadge(badge: HTMLElement, state: InstanceState): void {
  badge.dataset.state = enumName(InstanceState, state);
  setText(badge, enumWords(InstanceState, state));
}
