// Connect: follows InstanceService.Connect. Each QR code is drawn as it arrives (they rotate:
// 60 s, then 20 s each); a pair code is shown when a phone number is given; the stream ends
// with one final result. Leaving the page ends the stream (a never-paired instance then stops
// pairing, as for any client that stops watching).
import type { Context } from "../context.js";
import { h, replace, setText } from "../dom.js";
import { isCanceled } from "../errors.js";
import { clearErrors, field, showError } from "../forms.js";
import { enumWords, formatTime } from "../labels.js";
import { drawQr } from "../qr.js";
import { ConnectOutcome, InstanceState, StateReason, type Instance } from "../../../typescript/src/gen/zapgate/v1/instance_pb.js";

export function connectPanel(context: Context, instance: Instance, signal: AbortSignal): HTMLElement {
  let running: AbortController | null = null;
  signal.addEventListener("abort", () => running?.abort());

  const phone = field({ name: "phone", label: "Phone for a pair code", type: "tel", placeholder: "+5511999998888", hint: "Optional: also get an 8-character code to type on the phone (Linked devices › Link with phone number)." });
  const banner = h("p", { class: "banner", attrs: { role: "alert" } });
  const status = h("p", { class: "connect-status", attrs: { "data-connect-status": "", role: "status" } });
  const canvas = h("canvas", { class: "qr", attrs: { "aria-label": "QR code to scan with WhatsApp" } });
  const qrInfo = h("p", { class: "muted" });
  const qrBox = h("div", { class: "qr-box", attrs: { hidden: true, "data-qr": "" } }, canvas, qrInfo);
  const pairBox = h("div", { class: "pair-box", attrs: { hidden: true } });
  const result = h("p", { class: "result", attrs: { "data-outcome": "" } });
  const start = h("button", { attrs: { type: "submit" } }, "Connect");
  const stop = h("button", { class: "secondary", attrs: { type: "button", hidden: true }, on: { click: () => running?.abort() } }, "Stop");

  const form = h(
    "form",
    { attrs: { novalidate: true }, on: { submit: (event) => (event.preventDefault(), void connect()) } },
    h("p", {}, "Connect shows a QR code to scan in WhatsApp (Linked devices › Link a device). A paired instance connects with its saved session."),
    phone.row,
    h("div", { class: "actions" }, start, stop),
  );

  async function connect(): Promise<void> {
    running?.abort();
    const mine = new AbortController();
    running = mine;
    clearErrors([phone], banner);
    replace(result);
    result.dataset.outcome = "";
    qrBox.hidden = true;
    pairBox.hidden = true;
    start.disabled = true;
    stop.hidden = false;
    setText(status, "Connecting…");
    try {
      const stream = context.api.instances.connect({ instanceId: instance.id, phone: phone.input.value.trim() }, { signal: mine.signal });
      for await (const update of stream) {
        const u = update.update;
        if (u.case === "qrCode") {
          drawQr(canvas, u.value.code);
          qrBox.dataset.qr = u.value.code;
          qrBox.dataset.qrIndex = String(u.value.index);
          qrBox.hidden = false;
          setText(qrInfo, `Code ${u.value.index + 1} · expires ${formatTime(u.value.expireTime)} (a new one replaces it)`);
        } else if (u.case === "pairCode") {
          replace(pairBox, h("p", {}, "Type this code on the phone:"), h("p", { class: "pair-code", attrs: { "data-pair-code": u.value.code } }, u.value.code), h("p", { class: "muted" }, `expires ${formatTime(u.value.expireTime)}`));
          pairBox.hidden = false;
        } else if (u.case === "stateChange") {
          setText(status, `${enumWords(InstanceState, u.value.state)} (${enumWords(StateReason, u.value.reason)})${u.value.detail ? `: ${u.value.detail}` : ""}`);
        } else if (u.case === "result") {
          qrBox.hidden = true;
          pairBox.hidden = true;
          const outcome = enumWords(ConnectOutcome, u.value.outcome);
          result.dataset.outcome = ConnectOutcome[u.value.outcome] ?? "";
          const final = u.value.instance;
          setText(result, `Result: ${outcome}${final ? ` — ${enumWords(InstanceState, final.state)} (${enumWords(StateReason, final.stateReason)})` : ""}`);
          setText(status, "");
        }
      }
    } catch (error) {
      if (!mine.signal.aborted && !isCanceled(error)) showError(error, [phone], banner);
      else setText(status, "Stopped.");
    } finally {
      if (running === mine) {
        running = null;
        start.disabled = false;
        stop.hidden = true;
      }
    }
  }

  return h("section", { class: "card", attrs: { "data-panel": "connect" } }, h("h2", {}, "Connect"), banner, form, status, qrBox, pairBox, result);
}
