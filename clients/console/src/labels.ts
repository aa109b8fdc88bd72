// Words for enum values and times.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";

/** `LOGGED_OUT` -> `logged out` (the TS enums carry the names without their prefix). */
export function enumWords(names: Record<number, string>, value: number): string {
  const name = names[value];
  return name === undefined ? `unknown (${value})` : name.toLowerCase().replaceAll("_", " ");
}

export function enumName(names: Record<number, string>, value: number): string {
  return names[value] ?? String(value);
}

export function formatTime(ts: Timestamp | undefined): string {
  if (!ts) return "—";
  return timestampDate(ts).toLocaleString(undefined, { hour12: false });
}

export function formatPercent(share: number): string {
  return `${(share * 100).toFixed(1)} %`;
}
