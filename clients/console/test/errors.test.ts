import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { fieldViolations } from "../src/errors.js";

function badRequest(...violations: [string, string][]): Uint8Array {
  const writer = new BinaryWriter();
  for (const [field, description] of violations) {
    writer.tag(1, 2).fork().tag(1, 2).string(field).tag(2, 2).string(description).join();
  }
  return writer.finish();
}

test("field violations are read from the google.rpc.BadRequest detail", () => {
  const error = new ConnectError("invalid", Code.InvalidArgument);
  // As parsed from the wire: google.protobuf.Any's type name and bytes.
  error.details = [
    { type: "google.rpc.ErrorInfo", value: new Uint8Array([10, 1, 65]) },
    { type: "google.rpc.BadRequest", value: badRequest(["phone", "must be an E.164 number"], ["instance.send_policy.per_minute", "must be >= 1"]) },
  ];
  assert.deepEqual(fieldViolations(error), [
    { field: "phone", description: "must be an E.164 number" },
    { field: "instance.send_policy.per_minute", description: "must be >= 1" },
  ]);
});

test("an error without a BadRequest detail has no field violations", () => {
  assert.deepEqual(fieldViolations(new ConnectError("gone", Code.NotFound)), []);
  assert.deepEqual(fieldViolations(new Error("plain")), []);
});
