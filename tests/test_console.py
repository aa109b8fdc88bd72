"""The operator console in a real browser (Debian's chromium, driven by Playwright) against a
real `zapgate serve --engine sim`: sign in, create an instance (a bad phone first), connect by
reading the QR code off the page and scanning it with the simulated phone, follow live state
without reloading, change the send policy (a bad value first), watch the usage figures move,
pause and resume, log out; then names from WhatsApp shown as text, never as markup.

Screenshots of every page land in tests/artifacts/console/ (see tests/browser.py)."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Browser, Page, expect
from setuptools.config.pyprojecttoml import read_configuration

from tests.browser import PageWatch, chromium, require_chromium, screenshot
from tests.server_process import ServerProcess, zapgate
from zapgate.gateway.http.static import console_files
from zapgate_client import Client
from zapgate_client.v1 import instance_pb2, simulator_pb2, webhook_pb2

FLAGS = ("--engine", "sim", "--engine-workers", "1", "--grace", "1")
RECEIPT_FLAGS = ("--sim-delivered-seconds", "0.2", "--sim-read-seconds", "0.4")
PHONE = "+5511999990001"
RECIPIENT = "+5511988887777"
XSS_NAME = "<img src=x onerror=\"window.__xss='name'\">"
XSS_TEXT = "<script>window.__xss='text'</script><b>bold?</b>"
# The QR code on show: its text, index and the canvas's pixels, taken in one script turn.
SHOWN_QR = """() => {
  const box = document.querySelector("[data-qr]");
  if (!box || box.hidden) return null;
  const png = box.querySelector("canvas").toDataURL("image/png");
  return { code: box.dataset.qr, index: box.dataset.qrIndex, png };
}"""


@dataclass
class Console:
    url: str
    client: Client
    key: str
    browser: Browser
    data: Path


@asynccontextmanager
async def serve_console(data: Path, *flags: str) -> AsyncIterator[Console]:
    """A real `zapgate serve --engine sim` and a browser to open its console with."""
    require_chromium()
    server = await asyncio.to_thread(ServerProcess, data, *FLAGS, *flags)
    try:
        key = (data / "initial-api-key").read_text().strip()
        async with Client(server.address, key) as client, chromium() as browser:
            yield Console(f"http://127.0.0.1:{server.http_port}/", client, key, browser, data)
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait)
        server.close()


@pytest.fixture(scope="module")
async def console(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    async with serve_console(tmp_path_factory.mktemp("console") / "data", *RECEIPT_FLAGS) as c:
        yield c


async def sign_in(page: Page, console: Console) -> None:
    await page.goto(console.url)
    await page.fill("#f-api_key", console.key)
    await page.click("form[data-page=sign-in] button[type=submit]")
    await expect(page.locator("[data-page=instances]")).to_be_visible()
    await expect(page.locator("[data-feed=live]")).to_be_visible()


def decode_qr(png: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1, "the page shows one readable QR code"
    return str(found[0].text)


async def test_the_console_walks_an_instance_from_creation_to_logout(console: Console) -> None:
    api = console.client
    # Listed before the page loads, paired later behind its back: its badge must follow.
    await api.instances.CreateInstance(instance_pb2.CreateInstanceRequest(instance_id="support"))
    await api.webhooks.CreateWebhook(
        webhook_pb2.CreateWebhookRequest(
            webhook=webhook_pb2.Webhook(
                url="http://127.0.0.1:9/hook", description="CRM <ingest>", enabled=False
            )
        )
    )
    page = await console.browser.new_page(viewport={"width": 1280, "height": 900})
    watch = PageWatch(page)

    # Sign in: a refused key first, shown on the field.
    await page.goto(console.url)
    await screenshot(page, "01-sign-in")
    await page.fill("#f-api_key", "zk_not_a_key")
    await page.click("form[data-page=sign-in] button[type=submit]")
    await expect(page.locator("[data-error-for=api_key]")).to_contain_text("refused")
    await sign_in(page, console)
    assert await page.evaluate("sessionStorage.length") == 1
    assert await page.context.cookies() == [], "the key is never a cookie"

    # New instance: the server's field error on the phone, then a good one.
    await page.click("text=New instance")
    await page.fill("#f-display_name", "Sales team")
    await page.fill("#f-phone", "12345")
    await page.fill("#f-instance_id", "sales")
    await page.click("form[data-page=new-instance] button[type=submit]")
    await expect(page.locator("[data-error-for=phone]")).to_contain_text("E.164")
    await expect(page.locator(".field.invalid #f-phone")).to_be_visible()
    await screenshot(page, "02-new-instance-field-error")
    await page.fill("#f-phone", PHONE)
    await page.click("form[data-page=new-instance] button[type=submit]")
    await expect(page.locator("[data-page=instance] h1")).to_have_text("Sales team")
    badge = page.locator(".instance-header .badge")
    await expect(badge).to_have_attribute("data-state", "DISCONNECTED")

    # Connect: the QR drawn on the page is what the phone scans.
    await page.evaluate("window.__sameDocument = true")
    await page.click("[data-panel=connect] button[type=submit]")
    qr_box = page.locator("[data-qr]:not([hidden])")
    await expect(qr_box).to_be_visible()
    await expect(badge).to_have_attribute("data-state", "PAIRING")
    code = await qr_box.get_attribute("data-qr")
    assert code, "the code is on the page"
    assert decode_qr(await page.locator("canvas.qr").screenshot()) == code
    await screenshot(page, "03-connect-qr")
    await api.simulator.ScanQr(
        simulator_pb2.ScanQrRequest(instance_id="sales", code=code, phone=PHONE)
    )
    await expect(page.locator("[data-outcome=CONNECTED]")).to_be_visible()
    await expect(badge).to_have_attribute("data-state", "CONNECTED")
    assert await page.evaluate("window.__sameDocument") is True, "no reload"
    await screenshot(page, "04-connected")

    # The list's badges follow the event stream: pair "support" behind the page's back.
    await page.click("a.back")
    support = page.locator("tr[data-instance=support] .badge")
    await expect(support).to_have_attribute("data-state", "DISCONNECTED")
    await expect(page.locator("tr[data-instance=sales] .badge")).to_have_attribute(
        "data-state", "CONNECTED"
    )
    result = await api.pair_simulated("support", "+5511999990002")
    assert result.outcome == instance_pb2.CONNECT_OUTCOME_CONNECTED
    await expect(support).to_have_attribute("data-state", "CONNECTED")
    assert await page.evaluate("window.__sameDocument") is True, "no reload"
    await page.select_option("select[name=state]", str(instance_pb2.INSTANCE_STATE_CONNECTED))
    await expect(page.locator("tr[data-instance]")).to_have_count(2)
    await page.fill("input[name=q]", "sales")
    await expect(page.locator("tr[data-instance]:visible")).to_have_count(1)
    await screenshot(page, "05-instances")

    # Security settings: a bad value shows the server's error on its field; then a fast policy.
    await page.goto(f"{console.url}#/instances/sales/security")
    await expect(page.locator("#f-per_minute")).to_have_value("5")  # the documented default
    await page.fill("#f-per_minute", "0")
    await page.click("form[data-form=send-policy] button[type=submit]")
    await expect(page.locator("[data-error-for=per_minute]")).to_contain_text(">= 1")
    await screenshot(page, "06-security-field-error")
    for name, value in {
        "min_gap_seconds": "0.05",
        "jitter_min_seconds": "0",
        "jitter_max_seconds": "0.1",
        "per_minute": "600",
        "quiet_start_hour": "",
        "quiet_end_hour": "",
        "timezone": "America/Sao_Paulo",
    }.items():
        await page.fill(f"#f-{name}", value)
    await page.uncheck("#f-typing")
    await page.click("form[data-form=send-policy] button[type=submit]")
    await expect(page.locator("form[data-form=send-policy] .saved")).to_have_text("Saved.")
    await expect(page.locator("[data-error-for=per_minute]")).to_be_empty()
    stored = (
        await api.instances.GetInstance(instance_pb2.GetInstanceRequest(instance_id="sales"))
    ).instance.send_policy
    assert (stored.per_minute, stored.timezone, stored.typing) == (600, "America/Sao_Paulo", False)
    assert not stored.HasField("quiet_start_hour")
    await screenshot(page, "07-security-saved")

    # Usage: a message sent through the API moves the figures, with no reload.
    await page.click("text=Usage")
    sent_today = page.locator("[data-stat=sent_today] dd")
    await expect(sent_today).to_have_text("0")
    message = await api.send_text("sales", RECIPIENT, "hello from the test")
    assert message.id
    await expect(sent_today).to_have_text("1")
    await expect(page.locator("[data-stat=delivery_rate] dd")).to_have_text("100.0 %")
    await expect(page.locator("[data-stat=queue_depth] dd")).to_have_text("0")
    await screenshot(page, "08-usage")

    # Reconnect: dropped and dialed again with the saved session (reason: stored session).
    reason = page.locator(".instance-header [data-reason]")
    await expect(reason).to_have_text("paired")
    await page.click("[data-action=reconnect]")
    await expect(reason).to_have_text("connected")
    await expect(badge).to_have_attribute("data-state", "CONNECTED")

    # Pause and resume sending from the header.
    await page.click("[data-action=pause]")
    await expect(page.locator("[data-sending]")).to_contain_text("paused from the console")
    await page.click("[data-action=resume]")
    await expect(page.locator("[data-sending]")).to_have_text("Sending on")

    # Webhooks, read only.
    await page.click("header.top >> text=Webhooks")
    await expect(page.locator("[data-page=webhooks] tbody tr")).to_have_count(1)
    await expect(page.locator("[data-page=webhooks]")).to_contain_text("CRM <ingest>")
    await screenshot(page, "09-webhooks")

    # Log the instance out (with confirmation), then delete the other one.
    await page.goto(f"{console.url}#/instances/sales")
    await expect(badge).to_have_attribute("data-state", "CONNECTED")
    await page.click("[data-action=logout]")
    await page.click("dialog[open] button[data-confirm=yes]")
    await expect(badge).to_have_attribute("data-state", "LOGGED_OUT")
    await screenshot(page, "10-logged-out")
    await page.goto(f"{console.url}#/instances/support")
    await page.click("[data-action=delete]")
    await page.click("dialog[open] >> text=Cancel")  # a second thought keeps it
    await page.click("[data-action=delete]")
    await page.click("dialog[open] button[data-confirm=yes]")
    await expect(page.locator("[data-page=instances]")).to_be_visible()
    await expect(page.locator("tr[data-instance=sales]")).to_be_visible()
    await expect(page.locator("tr[data-instance=support]")).to_have_count(0)

    # Sign out: the key is gone from the tab.
    await page.click("[data-action=sign-out]")
    await expect(page.locator("[data-page=sign-in]")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    assert watch.errors == []
    await page.close()


async def test_names_and_texts_from_whatsapp_are_shown_as_text(console: Console) -> None:
    api = console.client
    await api.instances.CreateInstance(instance_pb2.CreateInstanceRequest(instance_id="inbox"))
    await api.pair_simulated("inbox", "+5511999990003")
    page = await console.browser.new_page(viewport={"width": 1280, "height": 900})
    watch = PageWatch(page)
    await sign_in(page, console)
    await page.goto(f"{console.url}#/instances/inbox/events")
    await expect(page.locator("[data-event-type=stateChanged]").first).to_be_visible()

    await api.simulator.InjectIncomingMessage(
        simulator_pb2.InjectIncomingMessageRequest(
            instance_id="inbox", from_phone="+5511977776666", push_name=XSS_NAME, text=XSS_TEXT
        )
    )
    received = page.locator("[data-event-type=messageReceived]")
    await expect(received).to_have_count(1)
    await expect(received).to_contain_text(XSS_NAME)
    await expect(received).to_contain_text(XSS_TEXT)
    assert await page.locator("[data-page=instance] img, [data-page=instance] b").count() == 0
    assert await page.evaluate("window.__xss") is None, "no injected script ran"
    await screenshot(page, "11-events-markup-as-text")
    assert watch.errors == []
    await page.close()


async def test_the_instance_list_pages_and_filters_on_the_server(console: Console) -> None:
    api = console.client
    for n in range(23):
        await api.instances.CreateInstance(
            instance_pb2.CreateInstanceRequest(instance_id=f"zz-page-{n:02}")
        )
    listed = (
        await api.instances.ListInstances(instance_pb2.ListInstancesRequest(page_size=1000))
    ).instances
    ids = sorted(i.id for i in listed)
    page = await console.browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in(page, console)
    rows = page.locator("tr[data-instance]")
    seen: list[str] = []
    while True:  # every instance once, in order, 20 a page
        await expect(rows.first).to_be_visible()
        on_page = [str(await row.get_attribute("data-instance")) for row in await rows.all()]
        assert 0 < len(on_page) <= 20
        seen += on_page
        next_button = page.locator(".pager >> text=Next")
        if not await next_button.count():
            break
        await next_button.click()
        await expect(rows.first).not_to_have_attribute("data-instance", on_page[0])
    assert seen == ids
    await page.click(".pager >> text=Previous")
    await expect(rows).to_have_count(20)
    # The state filter asks the server: only disconnected ones, the 23 new ones among them.
    await page.select_option("select[name=state]", str(instance_pb2.INSTANCE_STATE_DISCONNECTED))
    await expect(page.locator("tr[data-instance][data-state=CONNECTED]")).to_have_count(0)
    await expect(page.locator("tr[data-instance][data-state=DISCONNECTED]")).to_have_count(20)
    await page.close()


async def test_the_qr_code_is_redrawn_as_codes_rotate_until_the_final_result(
    tmp_path: Path,
) -> None:
    fast_qr = ("--sim-qr-first-seconds", "2", "--sim-qr-next-seconds", "2", "--sim-qr-count", "3")
    async with serve_console(tmp_path / "data", *fast_qr) as console:
        await console.client.instances.CreateInstance(
            instance_pb2.CreateInstanceRequest(instance_id="rotating")
        )
        page = await console.browser.new_page(viewport={"width": 1280, "height": 900})
        await sign_in(page, console)
        await page.goto(f"{console.url}#/instances/rotating")
        await page.click("[data-panel=connect] button[type=submit]")
        qr_box = page.locator("[data-qr]:not([hidden])")
        outcome = page.locator("[data-outcome=QR_TIMEOUT]")
        seen: dict[int, str] = {}  # index -> code, as the page showed them
        async with asyncio.timeout(60):  # guards against a hang only
            while not await outcome.count():
                shown = await page.evaluate(SHOWN_QR)  # code and canvas read in one step
                if shown is not None:
                    png = base64.b64decode(shown["png"].split(",", 1)[1])
                    assert decode_qr(png) == shown["code"], "the canvas shows the code on show"
                    seen[int(shown["index"])] = shown["code"]
                await asyncio.sleep(0.05)
        assert len(seen) >= 2, f"the page showed the rotation ({seen})"
        assert len(set(seen.values())) == len(seen), "each rotation shows a new code"
        assert sorted(seen) == [i for i in range(3) if i in seen]
        await expect(qr_box).to_have_count(0)
        await expect(page.locator(".instance-header .badge")).to_have_attribute(
            "data-state", "DISCONNECTED"
        )
        await page.close()


async def test_pairing_with_a_pair_code_from_the_page(console: Console) -> None:
    api = console.client
    await api.instances.CreateInstance(instance_pb2.CreateInstanceRequest(instance_id="bycode"))
    page = await console.browser.new_page(viewport={"width": 1280, "height": 900})
    watch = PageWatch(page)
    await sign_in(page, console)
    await page.goto(f"{console.url}#/instances/bycode")
    await page.fill("#f-phone", "+5511999990004")
    await page.click("[data-panel=connect] button[type=submit]")
    pair_code = page.locator("[data-pair-code]")
    await expect(pair_code).to_be_visible()
    code = await pair_code.get_attribute("data-pair-code")
    assert code
    assert len(code.replace("-", "")) == 8
    await screenshot(page, "12-pair-code")
    await api.simulator.EnterPairCode(
        simulator_pb2.EnterPairCodeRequest(instance_id="bycode", code=code)
    )
    await expect(page.locator("[data-outcome=CONNECTED]")).to_be_visible()
    await expect(page.locator(".instance-header .badge")).to_have_attribute(
        "data-state", "CONNECTED"
    )
    assert watch.errors == []
    await page.close()


async def test_a_key_revoked_while_signed_in_returns_to_sign_in(console: Console) -> None:
    created = await asyncio.to_thread(
        zapgate, "keys", "create", "--tenant", "default", "--data-dir", str(console.data)
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    page = await console.browser.new_page()
    await sign_in(page, Console(console.url, console.client, key, console.browser, console.data))
    revoked = await asyncio.to_thread(
        zapgate, "keys", "revoke", key.split("_")[1], "--data-dir", str(console.data)
    )
    assert revoked.returncode == 0, revoked.stderr
    # The open event stream ends UNAUTHENTICATED (rechecked every few seconds): the console
    # forgets the key and asks for another.
    await expect(page.locator("[data-page=sign-in]")).to_be_visible(timeout=30_000)
    await expect(page.locator("[data-page=sign-in] .banner")).to_contain_text("refused")
    assert await page.evaluate("sessionStorage.length") == 0
    await page.close()


async def test_a_viewer_key_scoped_to_one_instance_sees_it_alone_and_is_refused_actions(
    console: Console,
) -> None:
    await console.client.instances.CreateInstance(
        instance_pb2.CreateInstanceRequest(instance_id="scoped")
    )
    created = await asyncio.to_thread(
        zapgate,
        *("keys", "create", "--tenant", "default", "--role", "viewer"),
        *("--instance", "scoped", "--data-dir", str(console.data)),
    )
    assert created.returncode == 0, created.stderr
    viewer = Console(
        console.url, console.client, created.stdout.strip(), console.browser, console.data
    )
    page = await console.browser.new_page()
    await sign_in(page, viewer)
    await expect(page.locator("tr[data-instance]")).to_have_count(1)
    await expect(page.locator("tr[data-instance=scoped]")).to_be_visible()
    await page.click("tr[data-instance=scoped] a")
    await page.click("[data-action=pause]")
    banner = page.locator("[data-page=instance] > .banner")
    await expect(banner).to_contain_text("may not do that")
    await expect(page.locator("[data-sending]")).to_have_text("Sending on")
    await page.goto(f"{console.url}#/instances/sales")  # outside its scope: as if missing
    await expect(banner).to_contain_text("NotFound")
    await page.close()


async def test_the_console_is_served_with_a_strict_content_security_policy(
    console: Console,
) -> None:
    page = await console.browser.new_page()
    response = await page.goto(console.url)
    assert response is not None
    assert response.ok
    policy = (await response.all_headers()).get("content-security-policy", "")
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    # Markup the page did not build itself cannot run: an inline script is refused.
    watch = PageWatch(page)
    await page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__inline = 1'; document.body.append(s); }"
    )
    assert await page.evaluate("window.__inline") is None
    assert any("Content Security Policy" in e or "Refused" in e for e in watch.errors)
    await page.close()


def test_the_bundle_ships_as_package_data() -> None:
    """Every file of the committed bundle is matched by the package data of `zapgate.gateway`,
    so a wheel carries what `zapgate serve` serves at `/`."""
    root = Path(__file__).parent.parent
    config = read_configuration(root / "pyproject.toml")
    patterns = config["tool"]["setuptools"]["package-data"]["zapgate.gateway"]
    gateway = root / "gateway"
    shipped = {p for pattern in patterns for p in gateway.glob(pattern) if p.is_file()}
    bundle = set((gateway / "console" / "dist").iterdir())
    assert {p.name for p in bundle} >= {"index.html", "app.js", "style.css"}
    assert bundle <= shipped
    assert console_files() is not None


def test_the_bundle_never_parses_markup_or_sets_inline_styles() -> None:
    """Safe by construction: the shipped code has no HTML-parsing sink and no inline style or
    code evaluation (a strict CSP would refuse the last two anyway)."""
    app = (Path(__file__).parent.parent / "gateway" / "console" / "dist" / "app.js").read_text()
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser")
    assert [sink for sink in sinks if sink in app] == []
    assert [s for s in (".style.", '"style"', "eval(", "new Function") if s in app] == []
