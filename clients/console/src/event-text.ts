// One line of words for an event. Everything here ends up in text nodes (dom.ts), so names and
// texts from WhatsApp are shown as typed, markup included.
import { enumWords } from "./labels.js";
import type { Event } from "../../typescript/src/gen/zapgate/v1/event_pb.js";
import { InstanceState, StateReason } from "../../typescript/src/gen/zapgate/v1/instance_pb.js";
import { MessageState } from "../../typescript/src/gen/zapgate/v1/message_pb.js";

export function eventKind(event: Event): string {
  return (event.payload.case ?? "unknown").replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);
}

export function eventText(event: Event): string {
  const p = event.payload;
  switch (p.case) {
    case "stateChanged":
      return `${enumWords(InstanceState, p.value.state)} (${enumWords(StateReason, p.value.reason)})${p.value.detail ? `: ${p.value.detail}` : ""}`;
    case "qrUpdated":
      return `QR code ${p.value.index + 1} on show`;
    case "messageStateChanged":
      return `message ${p.value.messageId} ${enumWords(MessageState, p.value.state)}${p.value.failureReason ? ` (${p.value.failureReason})` : ""}`;
    case "sendingPaused":
      return `sending paused: ${p.value.reason}`;
    case "sendingResumed":
      return "sending resumed";
    case "messageReceived": {
      const m = p.value;
      const who = `${m.pushName || "?"} <${m.senderJid || m.senderLid || m.chatJid}>`;
      const content = m.content.case === "text" ? m.content.value : `[${m.content.case ?? "message"}]`;
      return `${m.fromMe ? "sent from the phone" : `from ${who}`}: ${content}`;
    }
    case "contactsSynced":
      return "contacts synced";
    case "webhookStatusChanged":
      return "webhook status changed";
    case "groupChanged":
      return "group changed";
    default:
      return "";
  }
}
