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

test("a timer change and a chat read on the phone read as words", () => {
  const timer = create(EventSchema, {
    payload: {
      case: "messageReceived",
      value: { pushName: "Ana", senderJid: "551199@s.whatsapp.net", content: { case: "ephemeralSetting", value: { expirationSeconds: 604_800n } } },
    },
  });
  assert.equal(eventText(timer), "from Ana <551199@s.whatsapp.net>: [disappearing messages: 7 day(s)]");
  const off = create(EventSchema, {
    payload: { case: "messageReceived", value: { senderJid: "551199@s.whatsapp.net", content: { case: "ephemeralSetting", value: {} } } },
  });
  assert.equal(eventText(off), "from ? <551199@s.whatsapp.net>: [disappearing messages off]");
  const read = create(EventSchema, {
    payload: { case: "readElsewhere", value: { chatJid: "551199@s.whatsapp.net", messageIds: ["A", "B"], marked: 1 } },
  });
  assert.equal(eventText(read), "2 message(s) in 551199@s.whatsapp.net read on another device (1 were unread)");
});
