// The whole send policy of one instance, saved with UpdateInstance (`send_policy` in the mask:
// the policy is replaced as a whole). Defaults are those of docs/messages.md; the server checks
// the values and its field errors land on the fields.
import { create } from "@bufbuild/protobuf";
import type { Context } from "../context.js";
import { h, setText } from "../dom.js";
import { clearErrors, field, showError, type Field } from "../forms.js";
import { SendPolicySchema, type Instance, type SendPolicy } from "../../../typescript/src/gen/zapgate/v1/instance_pb.js";

type Kind = "seconds" | "count" | "optional-count" | "hour" | "zone" | "switch";

interface PolicyField {
  key: keyof SendPolicy & string;
  name: string;
  label: string;
  kind: Kind;
  hint: string;
}

const GROUPS: [string, PolicyField[]][] = [
  [
    "Gap between sends",
    [
      { key: "minGapSeconds", name: "min_gap_seconds", label: "Minimum gap (s)", kind: "seconds", hint: "Default 30." },
      { key: "jitterMinSeconds", name: "jitter_min_seconds", label: "Jitter from (s)", kind: "seconds", hint: "Default 0; a random extra is drawn for every send." },
      { key: "jitterMaxSeconds", name: "jitter_max_seconds", label: "Jitter to (s)", kind: "seconds", hint: "Default 30 (30–60 s in all)." },
    ],
  ],
  [
    "Caps",
    [
      { key: "perMinute", name: "per_minute", label: "Per minute", kind: "count", hint: "Default 5 (sliding minute)." },
      { key: "perHour", name: "per_hour", label: "Per hour", kind: "count", hint: "Default 100 (sliding hour)." },
      { key: "perDay", name: "per_day", label: "Per day", kind: "count", hint: "Default 680 (local day)." },
      { key: "newContactsPerDay", name: "new_contacts_per_day", label: "New contacts per day", kind: "count", hint: "Default 50; 0 writes only to known contacts." },
    ],
  ],
  [
    "Warm-up",
    [
      { key: "warmupDays", name: "warmup_days", label: "Warm-up days", kind: "count", hint: "Default 7; 1 means no warm-up." },
      { key: "warmupFirstDayCap", name: "warmup_first_day_cap", label: "First day's cap", kind: "count", hint: "Default 20, ramping to the daily cap." },
    ],
  ],
  [
    "Quiet hours",
    [
      { key: "quietStartHour", name: "quiet_start_hour", label: "From hour (0–23)", kind: "hour", hint: "Default 22; empty for no quiet hours." },
      { key: "quietEndHour", name: "quiet_end_hour", label: "To hour (0–23)", kind: "hour", hint: "Default 8 (may wrap midnight)." },
      { key: "timezone", name: "timezone", label: "Time zone", kind: "zone", hint: "IANA name, default UTC; the day and quiet hours follow it." },
    ],
  ],
  [
    "Typing",
    [
      { key: "typing", name: "typing", label: "Show “typing…” before texts", kind: "switch", hint: "Default on; counted inside the gap." },
      { key: "typingCharsPerSecond", name: "typing_chars_per_second", label: "Typing speed (chars/s)", kind: "seconds", hint: "Default 5." },
      { key: "typingMaxSeconds", name: "typing_max_seconds", label: "Longest typing (s)", kind: "seconds", hint: "Default 15." },
    ],
  ],
  [
    "Number checks and groups",
    [
      { key: "numberChecksPerMinute", name: "number_checks_per_minute", label: "Number checks per minute", kind: "count", hint: "Default 20." },
      { key: "numberChecksPerDay", name: "number_checks_per_day", label: "Number checks per day", kind: "count", hint: "Default 500." },
      { key: "groupsCreatedPerDay", name: "groups_created_per_day", label: "Groups created per day", kind: "optional-count", hint: "Default 3." },
      { key: "participantsAddedPerHour", name: "participants_added_per_hour", label: "Participants added per hour", kind: "optional-count", hint: "Default 20." },
      { key: "participantsAddedPerDay", name: "participants_added_per_day", label: "Participants added per day", kind: "optional-count", hint: "Default 50." },
    ],
  ],
];

const INPUT_TYPES: Record<Kind, string> = {
  seconds: "number",
  count: "number",
  "optional-count": "number",
  hour: "number",
  zone: "text",
  switch: "checkbox",
};

export function policyForm(context: Context, instance: Instance, onSaved: (instance: Instance) => void): HTMLElement {
  const fields = new Map<PolicyField, Field>();
  const banner = h("p", { class: "banner", attrs: { role: "alert" } });
  const saved = h("p", { class: "saved", attrs: { role: "status" } });
  const sections = GROUPS.map(([title, specs]) =>
    h(
      "fieldset",
      {},
      h("legend", {}, title),
      ...specs.map((spec) => {
        const f = field({ name: spec.name, label: spec.label, hint: spec.hint, type: INPUT_TYPES[spec.kind], step: spec.kind === "seconds" ? "any" : "1" });
        fields.set(spec, f);
        return f.row;
      }),
    ),
  );
  fill(instance.sendPolicy);

  const form = h(
    "form",
    { class: "policy", attrs: { "data-form": "send-policy", novalidate: true }, on: { submit: (event) => (event.preventDefault(), void save(false)) } },
    banner,
    h("div", { class: "policy-grid" }, ...sections),
    h(
      "div",
      { class: "actions" },
      h("button", { attrs: { type: "submit" } }, "Save policy"),
      h("button", { class: "secondary", attrs: { type: "button" }, on: { click: () => void save(true) } }, "Restore defaults"),
      saved,
    ),
  );

  function fill(policy: SendPolicy | undefined): void {
    for (const [spec, f] of fields) {
      const value = policy?.[spec.key];
      if (spec.kind === "switch") (f.input as HTMLInputElement).checked = Boolean(value);
      else f.input.value = value === undefined ? "" : String(value);
    }
  }

  /** The form as a policy, or null after marking the fields whose text is not a number. */
  function read(): SendPolicy | null {
    const policy = create(SendPolicySchema) as unknown as Record<string, unknown>;
    let ok = true;
    for (const [spec, f] of fields) {
      const text = f.input.value.trim();
      if (spec.kind === "switch") policy[spec.key] = (f.input as HTMLInputElement).checked;
      else if (spec.kind === "zone") policy[spec.key] = text;
      else if (text === "" && (spec.kind === "hour" || spec.kind === "optional-count")) policy[spec.key] = undefined;
      else {
        const number = Number(text);
        const whole = spec.kind !== "seconds";
        if (text === "" || !Number.isFinite(number) || (whole && !Number.isInteger(number))) {
          setText(f.error, whole ? "enter a whole number" : "enter a number");
          f.row.classList.add("invalid");
          ok = false;
        } else policy[spec.key] = number;
      }
    }
    return ok ? (policy as unknown as SendPolicy) : null;
  }

  async function save(restoreDefaults: boolean): Promise<void> {
    clearErrors(fields.values(), banner);
    setText(saved, "");
    const policy = restoreDefaults ? undefined : read();
    if (policy === null) return;
    try {
      const response = await context.api.instances.updateInstance({
        instance: { id: instance.id, sendPolicy: policy },
        updateMask: { paths: ["send_policy"] },
      });
      if (response.instance) {
        fill(response.instance.sendPolicy);
        onSaved(response.instance);
      }
      setText(saved, restoreDefaults ? "Defaults restored." : "Saved.");
    } catch (error) {
      showError(error, fields.values(), banner);
    }
  }
  return form;
}
