// Typed clients of the zapgate services over the Connect protocol, from the generated code of
// clients/typescript. The key travels as `authorization: Bearer`, as on gRPC.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { EventService } from "../../typescript/src/gen/zapgate/v1/event_pb.js";
import { InstanceService } from "../../typescript/src/gen/zapgate/v1/instance_pb.js";
import { WebhookService } from "../../typescript/src/gen/zapgate/v1/webhook_pb.js";

export interface Api {
  instances: Client<typeof InstanceService>;
  events: Client<typeof EventService>;
  webhooks: Client<typeof WebhookService>;
}

export function createApi(apiKey: string, baseUrl: string = location.origin): Api {
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${apiKey}`);
    return next(request);
  };
  const transport = createConnectTransport({ baseUrl, interceptors: [bearer] });
  return {
    instances: createClient(InstanceService, transport),
    events: createClient(EventService, transport),
    webhooks: createClient(WebhookService, transport),
  };
}
