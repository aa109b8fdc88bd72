// A modal "are you sure" built on <dialog> (no window.confirm: it blocks the page and cannot be
// styled); resolves true only on the confirming button.
import { h } from "./dom.js";

export function confirmAction(question: string, confirmLabel: string): Promise<boolean> {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", attrs: { "data-dialog": "confirm" } },
      h("p", {}, question),
      h(
        "div",
        { class: "actions" },
        h("button", { class: "danger", attrs: { value: "yes", "data-confirm": "yes" }, on: { click: () => dialog.close("yes") } }, confirmLabel),
        h("button", { class: "secondary", attrs: { value: "no" }, on: { click: () => dialog.close("no") } }, "Cancel"),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
