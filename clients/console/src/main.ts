// The console's shell: sign-in gate, top bar, and a hash router (#/instances, #/new,
// #/instances/<id>/<tab>, #/webhooks) that mounts one page at a time.
import { createApi } from "./api.js";
import type { Context, Page } from "./context.js";
import { h, replace, setText } from "./dom.js";
import { EventFeed } from "./live.js";
import { instancePage } from "./pages/instance.js";
import { instancesPage } from "./pages/instances.js";
import { newInstancePage } from "./pages/new-instance.js";
import { signInPage } from "./pages/signin.js";
import { webhooksPage } from "./pages/webhooks.js";
import { forgetKey, saveKey, savedKey } from "./session.js";

const app = document.getElementById("app") as HTMLElement;
let leave: (() => void) | null = null;
let feed: EventFeed | null = null;

function start(): void {
  const key = savedKey();
  if (key) signedIn(key);
  else showSignIn();
}

function showSignIn(notice = ""): void {
  window.removeEventListener("hashchange", route);
  leave?.();
  leave = null;
  feed?.stop();
  feed = null;
  replace(app);
  signInPage(
    app,
    (key) => {
      saveKey(key);
      signedIn(key);
    },
    notice,
  );
}

function signOut(): void {
  forgetKey();
  showSignIn();
}

/** The server refused the key mid-session (revoked): forget it and say why. */
function keyRefused(): void {
  forgetKey();
  showSignIn("The gateway refused this API key (revoked?). Sign in with another one.");
}

function signedIn(key: string): void {
  const api = createApi(key);
  feed = new EventFeed(api, keyRefused);
  const liveDot = h("span", { class: "live", attrs: { "data-feed": "connecting", title: "event stream" } }, "connecting");
  feed.onStatus((status) => {
    liveDot.dataset.feed = status;
    setText(liveDot, status);
  });
  feed.start();
  const main = h("main");
  replace(
    app,
    h(
      "header",
      { class: "top" },
      h("a", { class: "brand", attrs: { href: "#/instances" } }, "zapgate"),
      h("nav", {}, h("a", { attrs: { href: "#/instances" } }, "Instances"), h("a", { attrs: { href: "#/webhooks" } }, "Webhooks")),
      liveDot,
      h("button", { class: "secondary", attrs: { "data-action": "sign-out" }, on: { click: signOut } }, "Sign out"),
    ),
    main,
  );
  const context: Context = { api, feed, navigate: (hash) => (location.hash = hash) };
  route.target = main;
  route.context = context;
  window.addEventListener("hashchange", route);
  route();
}

const route = Object.assign(
  () => {
    const { target, context } = route;
    if (!target || !context) return;
    const [pathPart = "", query = ""] = location.hash.replace(/^#\/?/, "").split("?");
    const path = pathPart.split("/").filter(Boolean);
    const page: Page =
      path[0] === "new" ? newInstancePage : path[0] === "webhooks" ? webhooksPage : path[0] === "instances" && path[1] ? instancePage : instancesPage;
    leave?.();
    replace(target);
    leave = page(target, context, new URLSearchParams(query), path);
    window.scrollTo(0, 0);
  },
  { target: null as HTMLElement | null, context: null as Context | null },
);

start();
