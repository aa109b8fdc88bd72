// The console's shell: the sign-in gate, then the top bar, the shared event feed and the router.
import { createApi } from "./api.js";
import type { Context } from "./context.js";
import { h, replace, setText } from "./dom.js";
import { EventFeed } from "./live.js";
import { signInPage } from "./pages/signin.js";
import { Router } from "./router.js";
import { forgetKey, saveKey, savedKey } from "./session.js";

const app = document.getElementById("app") as HTMLElement;
let signedInSession: { feed: EventFeed; router: Router } | null = null;

function showSignIn(notice = ""): void {
  signedInSession?.router.stop();
  signedInSession?.feed.stop();
  signedInSession = null;
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
  const feed = new EventFeed(api, keyRefused);
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
  const router = new Router(main, context);
  signedInSession = { feed, router };
  router.start();
}

const key = savedKey();
if (key) signedIn(key);
else showSignIn();
