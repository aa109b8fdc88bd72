// "New instance": display name and phone. The server validates (one set of rules); its field
// errors are shown on the fields.
import type { Page } from "../context.js";
import { h } from "../dom.js";
import { clearErrors, field, showError } from "../forms.js";

export const newInstancePage: Page = (root, context) => {
  const name = field({ name: "display_name", label: "Display name", maxLength: 128, hint: "At most 128 characters; defaults to the id." });
  const phone = field({ name: "phone", label: "Phone", type: "tel", placeholder: "+5511999998888", hint: "The account's number in E.164 form (+ and 7 to 15 digits); optional." });
  const id = field({ name: "instance_id", label: "Id (optional)", placeholder: "sales-1", hint: "Lower-case letters, digits, - and _; generated when empty." });
  const fields = [name, phone, id];
  const banner = h("p", { class: "banner", attrs: { role: "alert" } });
  const submit = h("button", { attrs: { type: "submit" } }, "Create");

  const form = h(
    "form",
    {
      class: "card narrow",
      attrs: { "data-page": "new-instance", novalidate: true },
      on: {
        submit: (event) => {
          event.preventDefault();
          void create();
        },
      },
    },
    h("h1", {}, "New instance"),
    banner,
    ...fields.map((f) => f.row),
    h("div", { class: "actions" }, submit, h("a", { class: "button secondary", attrs: { href: "#/instances" } }, "Cancel")),
  );
  root.append(form);
  name.input.focus();

  async function create(): Promise<void> {
    clearErrors(fields, banner);
    submit.disabled = true;
    try {
      const response = await context.api.instances.createInstance({
        displayName: name.input.value.trim(),
        phone: phone.input.value.trim(),
        instanceId: id.input.value.trim(),
      });
      context.navigate(`#/instances/${encodeURIComponent(response.instance?.id ?? "")}`);
    } catch (error) {
      showError(error, fields, banner);
    } finally {
      submit.disabled = false;
    }
  }
  return () => {};
};
