// End-to-end test against a running `zapgate serve --engine sim`; run it through
// `bash clients/with-sim-server.sh npm --prefix clients/typescript test`, which starts the
// server and sets ZAPGATE_SERVER and ZAPGATE_API_KEY.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { after, test } from "node:test";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  ConnectOutcome,
  EventType,
  KeyRole,
  MessageState,
  PageDirection,
  ParticipantRole,
  WebhookFormat,
  WebhookStatus,
  ZapgateClient,
} from "../src/index.js";

const server = process.env.ZAPGATE_SERVER ?? "";
const apiKey = process.env.ZAPGATE_API_KEY ?? "";
if (!server || !apiKey) {
  throw new Error("run through clients/with-sim-server.sh: ZAPGATE_SERVER, ZAPGATE_API_KEY unset");
}
const client = new ZapgateClient(server, { apiKey });
after(() => client.close());

const RECEIPTS = [MessageState.DELIVERED, MessageState.READ];

test("pairs through the simulator, sends, sees the receipt, resumes the stream", { timeout: 60_000 }, async () => {
  const instanceId = await paired("+5511999990002");
  const message = await client.sendText(instanceId, "+5511988887777", "{Hi|Hello} {name}!", {
    variables: { name: "Ana" },
  });
  const delivered = await receipt(instanceId, message.id, 0n);
  const read = await receipt(instanceId, message.id, delivered); // resumed from a cursor
  assert.ok(read > delivered);
});

test("calls without the API key are refused", async () => {
  const anonymous = new ZapgateClient(server);
  try {
    await assert.rejects(anonymous.instances.listInstances({}), (error) => {
      return ConnectError.from(error).code === Code.Unauthenticated;
    });
  } finally {
    anonymous.close();
  }
});

test("UNAVAILABLE is retried with backoff, then reported", async () => {
  let attempts = 0;
  const counting: Interceptor = (next) => (request) => {
    attempts++;
    return next(request);
  };
  const retry = { attempts: 3, initialBackoffMs: 10, maxBackoffMs: 50, multiplier: 2 };
  const down = new ZapgateClient(`127.0.0.1:${await closedPort()}`, {
    apiKey,
    retry,
    interceptors: [counting],
  });
  try {
    await assert.rejects(down.instances.listInstances({}), (error) => {
      return ConnectError.from(error).code === Code.Unavailable;
    });
    assert.equal(attempts, 3);
  } finally {
    down.close();
  }
});

test("creates a group, reads it, sends to it and renames it", { timeout: 60_000 }, async () => {
  const instanceId = await paired("+5511999990003");
  const ana = "+5511988880001";
  const created = await client.groups.createGroup({ instanceId, name: "Suporte", participants: [ana] });
  assert.deepEqual(
    created.results.map((r) => [r.phone, r.status]),
    [[ana, "ok"]],
  );
  const groupJid = created.group?.jid ?? "";
  assert.match(groupJid, /@g\.us$/);

  const { group } = await client.groups.getGroup({ instanceId, groupJid });
  const roles = new Map(group?.participants.map((p) => [p.phone, p.role]));
  assert.equal(roles.get(ana), ParticipantRole.MEMBER);
  assert.equal(roles.get("+5511999990003"), ParticipantRole.SUPER_ADMIN);

  const message = await client.sendText(instanceId, groupJid, "Bem-vindos!");
  assert.equal(message.recipientJid, groupJid);
  await client.groups.setGroupName({ instanceId, groupJid, name: "Suporte VIP" });
  const listed = await client.groups.listGroups({ instanceId });
  assert.deepEqual(
    listed.groups.map((g) => [g.jid, g.name, g.participantCount]),
    [[groupJid, "Suporte VIP", 2]],
  );
});

test("replies to, reacts to and marks read a received message", { timeout: 60_000 }, async () => {
  const instanceId = await paired("+5511999990004");
  const ana = "+5511988880002";
  const { messageId } = await client.simulator.injectIncomingMessage({
    instanceId,
    fromPhone: ana,
    content: { case: "text", value: "price?" },
  });
  const reply = await client.reply(instanceId, messageId, ana, `@${ana.slice(1)} R$ 10`, {
    mentions: [ana],
  });
  assert.equal(reply.replyTo, messageId);
  assert.deepEqual(reply.mentions, [ana]);
  const reaction = await client.react(instanceId, messageId, "👍");
  assert.equal(reaction.kind, "reaction");
  assert.equal(reaction.targetMessageId, messageId);
  assert.equal(await client.markRead(instanceId, { upTo: messageId }), 1);
  assert.equal(await client.markRead(instanceId, [messageId]), 1);

  const sent = [await sentState(instanceId, reply.id), await sentState(instanceId, reaction.id)];
  const phone = await client.simulator.listReceived({ instanceId });
  const byId = new Map(phone.messages.map((m) => [m.whatsappMessageId, m]));
  assert.equal(byId.get(sent[0])?.quotedMessageId, messageId);
  assert.equal(byId.get(sent[1])?.targetMessageId, messageId);
  assert.equal(byId.get(sent[1])?.text, "👍");
  assert.ok(phone.messages.some((m) => m.kind === "read" && m.targetMessageId === messageId));
});

/** The WhatsApp id of a message once it was sent (polls GetMessage). */
async function sentState(instanceId: string, messageId: string): Promise<string> {
  for (let attempt = 0; attempt < 300; attempt++) {
    const { message } = await client.messages.getMessage({ instanceId, messageId });
    if (message?.whatsappMessageId) {
      return message.whatsappMessageId;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${messageId} was not sent`);
}

test("keeps both sides of a chat, newest last, and marks it read", { timeout: 60_000 }, async () => {
  const instanceId = await paired("+5511999990005");
  const bruno = "+5511988880002";
  const chatJid = "5511988880002@s.whatsapp.net";
  const sent = await client.sendText(instanceId, bruno, "Olá, Bruno");
  await receipt(instanceId, sent.id, 0n); // in the chat once WhatsApp took it
  await client.simulator.injectIncomingMessage({
    instanceId,
    fromPhone: bruno,
    pushName: "Bruno",
    content: { case: "text", value: "Oi! Tudo bem?" },
  });

  const { chats } = await client.chats.listChats({ instanceId });
  assert.deepEqual(
    chats.map((c) => [c.jid, c.name, c.lastMessagePreview, c.unreadCount]),
    [[chatJid, "Bruno", "Oi! Tudo bem?", 1]],
  );
  const { messages } = await client.chats.listChatMessages({
    instanceId,
    chatJid,
    direction: PageDirection.NEWER,
  });
  assert.deepEqual(
    messages.map((m) => [m.fromMe, m.text]),
    [
      [true, "Olá, Bruno"],
      [false, "Oi! Tudo bem?"],
    ],
  );
  await client.chats.markChatRead({ instanceId, chatJid });
  const { chat } = await client.chats.getChat({ instanceId, chatJid });
  assert.equal(chat?.unreadCount, 0);
});

/** A new instance, paired through the simulator as `phone`, with fast sends. */
async function paired(phone: string): Promise<string> {
  const instanceId = `ts-e2e-${randomBytes(4).toString("hex")}`;
  await client.instances.createInstance({ instanceId });
  await fastSends(instanceId);
  let qrCodes = 0;
  for await (const { update } of client.connect(instanceId)) {
    if (update.case === "qrCode") {
      qrCodes++;
      assert.deepEqual([...update.value.png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]); // PNG
      await client.simulator.scanQr({ instanceId, code: update.value.code, phone });
    } else if (update.case === "result") {
      assert.equal(update.value.outcome, ConnectOutcome.CONNECTED);
    }
  }
  assert.ok(qrCodes >= 1);
  return instanceId;
}

/** No gaps, quiet hours or typing: the default policy would hold a message 30 s or more. */
async function fastSends(instanceId: string): Promise<void> {
  const { instance } = await client.instances.getInstance({ instanceId });
  assert.ok(instance?.sendPolicy);
  const sendPolicy = {
    ...instance.sendPolicy,
    minGapSeconds: 0,
    jitterMinSeconds: 0,
    jitterMaxSeconds: 0.1,
    typing: false,
    quietStartHour: undefined,
    quietEndHour: undefined,
  };
  await client.instances.updateInstance({
    instance: { id: instanceId, sendPolicy },
    updateMask: { paths: ["send_policy"] },
  });
}

/** The cursor of the first receipt of `messageId` after cursor `after`. */
async function receipt(instanceId: string, messageId: string, after: bigint): Promise<bigint> {
  for await (const event of client.subscribe({ fromCursor: after, instanceIds: [instanceId] })) {
    assert.ok(event.cursor > after, "a resumed stream replays only what follows its cursor");
    const { payload } = event;
    if (
      payload.case === "messageStateChanged" &&
      payload.value.messageId === messageId &&
      RECEIPTS.includes(payload.value.state)
    ) {
      return event.cursor;
    }
  }
  throw new Error("the event stream ended");
}

async function closedPort(): Promise<number> {
  const listener = createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const address = listener.address();
  await new Promise((resolve) => listener.close(resolve));
  assert.ok(address && typeof address === "object");
  return address.port;
}

test("creates, lists and deletes a webhook", async () => {
  const description = `ts-e2e-${randomBytes(4).toString("hex")}`;
  const created = await client.webhooks.createWebhook({
    webhook: {
      url: "https://receiver.example.invalid/hook",
      types: [EventType.MESSAGE_RECEIVED],
      format: WebhookFormat.EVOLUTION,
      description,
    },
  });
  const id = created.webhook?.id ?? "";
  assert.match(id, /^wh_[0-9a-f]{16}$/);
  assert.match(created.secret, /^whsec_/);
  assert.equal(created.webhook?.enabled, true);
  assert.equal(created.webhook?.delivery?.status, WebhookStatus.ACTIVE);

  const listed = await client.webhooks.listWebhooks({ pageSize: 1000 });
  const mine = listed.webhooks.find((w) => w.id === id);
  assert.equal(mine?.description, description);
  assert.deepEqual(mine?.types, [EventType.MESSAGE_RECEIVED]);
  assert.equal(mine?.format, WebhookFormat.EVOLUTION);

  assert.equal((await client.webhooks.deleteWebhook({ webhookId: id })).deleted, true);
  await assert.rejects(client.webhooks.getWebhook({ webhookId: id }), (error: unknown) => {
    return ConnectError.from(error).code === Code.NotFound;
  });
});

test("a key scoped to one instance sees only that one, until it is revoked", async () => {
  const suffix = randomBytes(4).toString("hex");
  const [mine, theirs] = [`ts-mine-${suffix}`, `ts-theirs-${suffix}`];
  for (const instanceId of [mine, theirs]) {
    await client.instances.createInstance({ instanceId });
  }
  const made = await client.keys.createKey({ role: KeyRole.SENDER, instanceIds: [mine] });
  assert.deepEqual(made.key?.instanceIds, [mine]);
  const scoped = new ZapgateClient(server, { apiKey: made.secret });
  try {
    const listed = await scoped.instances.listInstances({});
    assert.deepEqual(listed.instances.map((i) => i.id), [mine]);
    await assert.rejects(scoped.instances.getInstance({ instanceId: theirs }), (error: unknown) => {
      return ConnectError.from(error).code === Code.NotFound;
    });
    await assert.rejects(scoped.instances.deleteInstance({ instanceId: mine }), (error: unknown) => {
      return ConnectError.from(error).code === Code.PermissionDenied;
    });
    await client.keys.revokeKey({ keyId: made.key?.id ?? "" });
    await assert.rejects(scoped.instances.getInstance({ instanceId: mine }), (error: unknown) => {
      return ConnectError.from(error).code === Code.Unauthenticated;
    });
  } finally {
    scoped.close();
  }
});
