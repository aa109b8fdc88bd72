// Turns a failed call into words for a person and, for INVALID_ARGUMENT, into one message per
// request field (the server's google.rpc.BadRequest detail), so forms show them on the fields.
import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

export interface FieldViolation {
  field: string;
  description: string;
}

const BAD_REQUEST = "google.rpc.BadRequest";

/** The field violations a failed call carries (empty when it carries none). */
export function fieldViolations(error: unknown): FieldViolation[] {
  if (!(error instanceof ConnectError)) return [];
  const found: FieldViolation[] = [];
  for (const detail of error.details) {
    if ("type" in detail && detail.type === BAD_REQUEST) found.push(...decodeBadRequest(detail.value));
  }
  return found;
}

// google.rpc.BadRequest { repeated FieldViolation field_violations = 1; }
// FieldViolation { string field = 1; string description = 2; ... }
function decodeBadRequest(bytes: Uint8Array): FieldViolation[] {
  const violations: FieldViolation[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) {
      violations.push(decodeViolation(reader.bytes()));
    } else {
      reader.skip(wireType);
    }
  }
  return violations;
}

function decodeViolation(bytes: Uint8Array): FieldViolation {
  const violation = { field: "", description: "" };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) violation.field = reader.string();
    else if (fieldNo === 2 && wireType === WireType.LengthDelimited) violation.description = reader.string();
    else reader.skip(wireType);
  }
  return violation;
}

/** A one-line description of a failed call. */
export function describe(error: unknown): string {
  if (error instanceof ConnectError) {
    if (error.code === Code.Unauthenticated) return "The API key was refused: sign in again.";
    if (error.code === Code.Unavailable) return `The gateway is unavailable: ${error.rawMessage}`;
    if (error.code === Code.PermissionDenied) return `This API key may not do that: ${error.rawMessage}`;
    return `${Code[error.code]}: ${error.rawMessage}`;
  }
  return error instanceof Error ? error.message : String(error);
}

export function isUnauthenticated(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unauthenticated;
}

export function isCanceled(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Canceled;
}
