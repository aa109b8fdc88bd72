// Sign in with an API key: checked with one cheap call before it is kept.
import { createApi } from "../api.js";
import { h, setText } from "../dom.js";
import { describe, isUnauthenticated } from "../errors.js";
import { clearErrors, field } from "../forms.js";

export function signInPage(root: HTMLElement, onSignedIn: (key: string) => void, notice = ""): void {
  const key = field({ name: "api_key", label: "API key", type: "password", hint: "From `zapgate keys create --tenant NAME`. Kept in this tab only (sessionStorage)." });
  const banner = h("p", { class: "banner", attrs: { role: "alert" } }, notice);
  const submit = h("button", { attrs: { type: "submit" } }, "Sign in");
  const form = h(
    "form",
    {
      class: "card narrow",
      attrs: { "data-page": "sign-in", novalidate: true },
      on: {
        submit: (event) => {
          event.preventDefault();
          void check();
        },
      },
    },
    h("h1", {}, "zapgate console"),
    h("p", {}, "Sign in with an API key of your tenant."),
    banner,
    key.row,
    submit,
  );
  root.append(form);
  key.input.focus();

  async function check(): Promise<void> {
    clearErrors([key], banner);
    const value = key.input.value.trim();
    if (!value) {
      setText(key.error, "enter an API key");
      return;
    }
    submit.disabled = true;
    try {
      await createApi(value).instances.listInstances({ pageSize: 1 });
      onSignedIn(value);
    } catch (error) {
      if (isUnauthenticated(error)) setText(key.error, "this key was refused (unknown or revoked)");
      else setText(banner, describe(error));
    } finally {
      submit.disabled = false;
    }
  }
}
