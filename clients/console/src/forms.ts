// Form fields with a place for their error, and the mapping of server field violations
// (`instance.send_policy.per_minute`, `phone`) onto them.
import { h, setText } from "./dom.js";
import { describe, fieldViolations } from "./errors.js";

export interface Field {
  name: string;
  row: HTMLElement;
  input: HTMLInputElement | HTMLSelectElement;
  error: HTMLElement;
}

export interface FieldSpec {
  name: string;
  label: string;
  hint?: string;
  type?: string;
  step?: string;
  placeholder?: string;
  options?: [string, string][];
  maxLength?: number;
}

export function field(spec: FieldSpec): Field {
  const id = `f-${spec.name}`;
  const input: HTMLInputElement | HTMLSelectElement = spec.options
    ? h("select", { attrs: { id, name: spec.name } }, ...spec.options.map(([value, text]) => h("option", { attrs: { value } }, text)))
    : h("input", {
        attrs: {
          id,
          name: spec.name,
          type: spec.type ?? "text",
          step: spec.step,
          placeholder: spec.placeholder,
          maxlength: spec.maxLength,
          autocomplete: "off",
        },
      });
  const error = h("p", { class: "field-error", attrs: { id: `${id}-error`, "data-error-for": spec.name, role: "alert" } });
  input.setAttribute("aria-describedby", error.id);
  const row = h(
    "div",
    { class: "field" },
    h("label", { attrs: { for: id } }, spec.label),
    input,
    spec.hint ? h("p", { class: "hint" }, spec.hint) : null,
    error,
  );
  return { name: spec.name, row, input, error };
}

export function clearErrors(fields: Iterable<Field>, banner?: HTMLElement): void {
  for (const f of fields) {
    setText(f.error, "");
    f.row.classList.remove("invalid");
    f.input.removeAttribute("aria-invalid");
  }
  if (banner) setText(banner, "");
}

/**
 * Shows a failed call: each field violation on its field (matched by the last dotted part of
 * its path), anything else in the banner.
 */
export function showError(error: unknown, fields: Iterable<Field>, banner: HTMLElement): void {
  const byName = new Map([...fields].map((f) => [f.name, f]));
  const leftover: string[] = [];
  for (const violation of fieldViolations(error)) {
    const target = byName.get(violation.field.split(".").pop() ?? "");
    if (!target) {
      leftover.push(`${violation.field}: ${violation.description}`);
      continue;
    }
    setText(target.error, violation.description);
    target.row.classList.add("invalid");
    target.input.setAttribute("aria-invalid", "true");
  }
  const violations = fieldViolations(error);
  if (violations.length === 0) setText(banner, describe(error));
  else setText(banner, leftover.length ? leftover.join("; ") : "Some fields need a change (see below).");
}
