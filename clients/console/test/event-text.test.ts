import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { eventText } from "../src/event-text.js";
import { EventSchema } from "../../typescript/src/gen/zapgate/v1/event_pb.js";
import { InstanceState, StateReason } from "../../typescript/src/gen/zapgate/v1/instance_pb.js";

test("a received message keeps its push name and text verbatim (shown as text, never markup)", () => {
  const event = create(EventSchema, {
    instanceId: "a",
    payload: {
      case: "messageReceived",
      value: { pushName: "<img src=x onerror=alert(1)>", senderJid: "551199@s.whatsapp.net", content: { case: "text", value: "<b>hi</b>" } },
    },
  });
  assert.equal(eventText(event), "from <img src=x onerror=alert(1)> <551199@s.whatsapp.net>: <b>hi</b>");
});

test("a state change reads as words", () => {
  const event = create(EventSchema, {
    payload: { case: "stateChanged", value: { state: InstanceState.LOGGED_OUT, reason: StateReason.LOGOUT_REQUESTED } },
  });
  assert.equal(eventText(event), "logged out (logout requested)");
});
