import { randomUUID } from "node:crypto";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ContactService } from "./gen/zapgate/v1/contact_pb.js";
import { EventService, type Event, type EventType } from "./gen/zapgate/v1/event_pb.js";
import { GroupService } from "./gen/zapgate/v1/group_pb.js";
import { ChatService } from "./gen/zapgate/v1/chat_pb.js";
import {
  InstanceService,
  InstanceState,
  type ConnectResponse,
  type ConnectResult,
  type Instance,
} from "./gen/zapgate/v1/instance_pb.js";
import { KeyService } from "./gen/zapgate/v1/key_pb.js";
import { MessageService, type Message } from "./gen/zapgate/v1/message_pb.js";
import { SimulatorService } from "./gen/zapgate/v1/simulator_pb.js";
import { WebhookService } from "./gen/zapgate/v1/webhook_pb.js";
import { backoffMs, defaultRetry, retryUnavailable, sleep, type Retry } from "./retry.js";

export interface SendTextOptions {
  variables?: Record<string, string>;
  idempotencyKey?: string;
  /** Quote this message (a received message's id, or one of the instance's own). */
  replyTo?: string;
  /** E.164 numbers mentioned; each written in the body as @<digits>. */
  mentions?: string[];
}

function required<T>(value: T | undefined, call: string): T {
  if (value === undefined) {
    throw new Error(`${call} answered without a message`);
  }
  return value;
}

/** PEM roots to trust (default: the system's), and a client certificate for mutual TLS. */
export interface Tls {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface ClientOptions {
  /** Sent as `authorization: Bearer <key>` on every call. */
  apiKey?: string;
  /** `true` for TLS with the system's roots, or the roots and client certificate to use. */
  tls?: boolean | Tls;
  /** Retries of unary calls on UNAVAILABLE (`null`: none) and the subscription's backoff. */
  retry?: Retry | null;
  /** More interceptors (logging, tracing); they run on every attempt of a call. */
  interceptors?: Interceptor[];
}

export interface SubscribeOptions {
  /** Events after this cursor; 0 (the default) is the oldest the server keeps. */
  fromCursor?: bigint;
  /** None of the past events, only new ones. */
  onlyNew?: boolean;
  instanceIds?: string[];
  types?: EventType[];
  /** Ends the subscription (the iterator throws a Canceled ConnectError). */
  signal?: AbortSignal;
}

/**
 * A client of one zapgate server over gRPC (HTTP/2). The typed clients `instances`,
 * `messages`, `events`, `contacts`, `webhooks`, `groups`, `keys` and `simulator` reach every
 * RPC; the methods below cover the common flows. Call `close()` when done.
 */
export class ZapgateClient {
  readonly instances: Client<typeof InstanceService>;
  readonly messages: Client<typeof MessageService>;
  readonly events: Client<typeof EventService>;
  readonly contacts: Client<typeof ContactService>;
  readonly webhooks: Client<typeof WebhookService>;
  readonly simulator: Client<typeof SimulatorService>;
  readonly groups: Client<typeof GroupService>;
  readonly keys: Client<typeof KeyService>;
  readonly chats: Client<typeof ChatService>;
  private readonly session: Http2SessionManager;
  private readonly retry: Retry;

  /** `address` is `host:port`, e.g. `127.0.0.1:50051`. */
  constructor(address: string, options: ClientOptions = {}) {
    const tls = options.tls === true ? {} : options.tls || undefined;
    const baseUrl = `${tls ? "https" : "http"}://${address}`;
    this.session = new Http2SessionManager(baseUrl, {}, tls ?? {});
    this.retry = options.retry ?? defaultRetry;
    const interceptors: Interceptor[] = [];
    if (options.apiKey) {
      interceptors.push(bearer(options.apiKey));
    }
    if (options.retry !== null) {
      interceptors.push(retryUnavailable(this.retry));
    }
    interceptors.push(...(options.interceptors ?? []));
    const transport = createGrpcTransport({ baseUrl, interceptors, sessionManager: this.session });
    this.instances = createClient(InstanceService, transport);
    this.messages = createClient(MessageService, transport);
    this.events = createClient(EventService, transport);
    this.contacts = createClient(ContactService, transport);
    this.webhooks = createClient(WebhookService, transport);
    this.simulator = createClient(SimulatorService, transport);
    this.groups = createClient(GroupService, transport);
    this.keys = createClient(KeyService, transport);
    this.chats = createClient(ChatService, transport);
  }

  /** Closes the connection; calls still running fail. */
  close(): void {
    this.session.abort();
  }

  /** Every instance of the caller's tenant (optionally in one state), page by page. */
  async *listInstances(state = InstanceState.UNSPECIFIED): AsyncGenerator<Instance> {
    let pageToken = "";
    do {
      const page = await this.instances.listInstances({ state, pageToken });
      yield* page.instances;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Connects an instance and yields its QR codes, pair code (with `phone`) and state
   * changes, then the final `result`. Leaving the loop early stops watching. */
  connect(instanceId: string, phone = "", signal?: AbortSignal): AsyncIterable<ConnectResponse> {
    return this.instances.connect({ instanceId, phone }, { signal });
  }

  /** With `zapgate serve --engine sim`: connects, scans the first QR code as the simulated
   * phone `phone` (E.164) and returns the final result. */
  async pairSimulated(instanceId: string, phone: string): Promise<ConnectResult> {
    for await (const { update } of this.connect(instanceId)) {
      if (update.case === "qrCode") {
        await this.simulator.scanQr({ instanceId, code: update.value.code, phone });
      } else if (update.case === "result") {
        return update.value;
      }
    }
    throw new Error(`Connect of ${instanceId} ended without a result`);
  }

  /** Queues a text to `to` (E.164 phone, or a JID with "@"). `body` may use `{name}`
   * variables and `{Hi|Hello}` spins. A random idempotency key is used when none is given,
   * so a retried call never sends twice. `replyTo` quotes a message of the chat (a received
   * message's id, or one of the instance's own messages); each E.164 number in `mentions`
   * must appear in `body` as @<digits>. */
  async sendText(
    instanceId: string,
    to: string,
    body: string,
    options: SendTextOptions = {},
  ): Promise<Message> {
    const reply = await this.messages.sendMessage({
      instanceId,
      recipient: to.includes("@") ? { case: "jid", value: to } : { case: "phone", value: to },
      content: { case: "text", value: { body } },
      variables: options.variables ?? {},
      idempotencyKey: options.idempotencyKey ?? randomUUID(),
      replyTo: options.replyTo ?? "",
      mentions: options.mentions ?? [],
    });
    return required(reply.message, "SendMessage");
  }

  /** Queues a text that quotes `messageId` (sendText with `replyTo`). */
  async reply(
    instanceId: string,
    messageId: string,
    to: string,
    body: string,
    options: Omit<SendTextOptions, "replyTo"> = {},
  ): Promise<Message> {
    return this.sendText(instanceId, to, body, { ...options, replyTo: messageId });
  }

  /** Queues a reaction to a message of one of the instance's chats; an empty emoji removes
   * the instance's reaction. */
  async react(
    instanceId: string,
    messageId: string,
    emoji: string,
    idempotencyKey: string = randomUUID(),
  ): Promise<Message> {
    const reply = await this.messages.react({ instanceId, messageId, emoji, idempotencyKey });
    return required(reply.message, "React");
  }

  /** Sends read receipts for received messages of one chat: the ids given, or (with
   * `upTo`) every message of that message's chat up to it. Returns how many were marked. */
  async markRead(instanceId: string, messageIds: string[] | { upTo: string }): Promise<number> {
    const request = Array.isArray(messageIds)
      ? { instanceId, messageIds }
      : { instanceId, upToMessageId: messageIds.upTo };
    return (await this.messages.markRead(request)).marked;
  }

  /**
   * The tenant's events after `fromCursor`, then live, for as long as it is iterated.
   *
   * When the stream breaks (UNAVAILABLE, or the server stopping) it subscribes again after
   * the last event it yielded, with backoff: nothing is lost or repeated. Other errors are
   * thrown, e.g. OUT_OF_RANGE when the cursor is older than the server's event log. Persist
   * `event.cursor` to resume from there after your own restart.
   */
  async *subscribe(options: SubscribeOptions = {}): AsyncGenerator<Event> {
    const { signal, ...request } = options;
    let fromCursor = request.fromCursor ?? 0n;
    let onlyNew = request.onlyNew ?? false;
    let failures = 0;
    for (;;) {
      try {
        const replies = this.events.subscribe({ ...request, fromCursor, onlyNew }, { signal });
        for await (const { event } of replies) {
          if (event) {
            failures = 0;
            fromCursor = event.cursor;
            onlyNew = false;
            yield event;
          }
        }
      } catch (error) {
        if (ConnectError.from(error).code !== Code.Unavailable) {
          throw error;
        }
      }
      await sleep(backoffMs(this.retry, failures++), signal);
    }
  }
}

function bearer(apiKey: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${apiKey}`);
    return next(request);
  };
}
