export { ZapgateClient, type ClientOptions, type SubscribeOptions, type Tls } from "./client.js";
export { defaultRetry, type Retry } from "./retry.js";
export * from "./gen/zapgate/v1/contact_pb.js";
export * from "./gen/zapgate/v1/errors_pb.js";
export * from "./gen/zapgate/v1/event_pb.js";
export * from "./gen/zapgate/v1/instance_pb.js";
export * from "./gen/zapgate/v1/message_pb.js";
export * from "./gen/zapgate/v1/simulator_pb.js";
export * from "./gen/zapgate/v1/webhook_pb.js";
