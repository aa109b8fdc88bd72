// One line of words for an event. Everything here ends up in text nodes (dom.ts), so names and
// texts from WhatsApp are shown as typed, markup included.
import { enumWords } from "./labels.js";
import type { Event } from "../../typescript/src/gen/zapgate/v1/event_pb.js";
import { InstanceState, StateReason } from "../../typescript/src/gen/zapgate/v1/instance_pb.js";
import { ChatPresence, MessageState } from "../../typescript/src/gen/zapgate/v1/message_pb.js";

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
      const content =
        m.content.case === "text"
          ? m.content.value
          : m.content.case === "ephemeralSetting"
            ? timerText(m.content.value.expirationSeconds)
            : `[${m.content.case ?? "message"}]`;
      return `${m.fromMe ? "sent from the phone" : `from ${who}`}: ${content}`;
    }
    case "contactsSynced":
      return "contacts synced";
    case "webhookStatusChanged":
      return "webhook status changed";
    case "groupChanged":
      return "group changed";
    case "presenceChanged":
      return `${p.value.jid || p.value.lid} ${p.value.available ? "online" : "offline"}`;
    case "chatPresenceChanged":
      return `${p.value.senderJid || p.value.senderLid} ${enumWords(ChatPresence, p.value.presence)} in ${p.value.chatJid}`;
    case "callReceived":
      return `call from ${p.value.callerJid || p.value.callerLid}${p.value.rejected ? " (rejected)" : ""}`;
    case "historySyncProgress":
      return `history sync ${p.value.progressPercent}%: ${p.value.messagesImported} messages imported`;
    case "historySyncCompleted":
      return `history sync done: ${p.value.messagesImported} messages in ${p.value.chats} chats`;
    case "readElsewhere":
      return `${p.value.messageIds.length} message(s) in ${p.value.chatJid} read on another device (${p.value.marked} were unread)`;
    default:
      return "";
  }
}

/** A chat's disappearing-messages timer, in seconds (0: off). */
function timerText(seconds: bigint): string {
  if (seconds === 0n) return "[disappearing messages off]";
  const days = Number(seconds) / 86_400;
  const shown = Number.isInteger(days) ? `${days} day(s)` : `${seconds} s`;
  return `[disappearing messages: ${shown}]`;
}
