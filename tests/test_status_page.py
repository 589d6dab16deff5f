"""The status page as a person sees it: Debian's Chromium, headless, driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from playwright.sync_api import expect, sync_playwright

from tests.conftest import GatewayProcess, dcmtk
from tests.test_api import new_token
from vmgateway.clock import clock_synchronised

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
# Chromium as root needs --no-sandbox; the rest keeps it from reaching for the internet.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def test_sign_in_see_devices_activate_transfers(gateway: GatewayProcess) -> None:
    token = new_token(gateway, "office")
    assert dcmtk("echoscu", "-aet", "XRAY_ROOM1", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port)).returncode == 0
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"https://127.0.0.1:{gateway.api_port}/")
            page.fill("input[name=token]", "wrong")
            page.click("button[type=submit]")
            expect(page.locator("body")).to_contain_text("That token is not valid")
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            # Before the first activation: commissioning, unless this machine's clock is not NTP-synchronised
            # (then that is named — a fact about the machine the test cannot change).
            clock_ok = clock_synchronised() is not False
            expect(page.locator("#overall")).to_contain_text("Commissioning" if clock_ok else "Needs attention")
            expect(page.locator("#reasons")).to_contain_text("Vetmanager activates transfers")
            if not clock_ok:
                expect(page.locator("#reasons")).to_contain_text("the clock is not synchronised")
            expect(page.locator("#devices")).to_contain_text("XRAY_ROOM1")
            expect(page.locator("#transfers")).to_contain_text("off")
            page.click("text=Activate transfers")
            expect(page.locator("#transfers")).to_contain_text("on")
            expect(page.locator("#overall")).to_contain_text("All well" if clock_ok else "Needs attention")
            page.fill("input[name=host]", "127.0.0.1")
            page.fill("input[name=port]", str(gateway.port))
            page.fill("input[name=called_ae]", "VM_GATEWAY")
            page.click("text=C-ECHO")
            expect(page.locator("#echo-result")).to_contain_text("succeeded")
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
            cookies = page.context.cookies()
            assert [(c["name"], c["httpOnly"], c["secure"], c["sameSite"]) for c in cookies] == [
                ("vmgateway_token", True, True, "Strict")]
        finally:
            browser.close()
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
    with gateway.journal() as conn:
        audit = [r[0] for r in conn.execute("SELECT detail FROM events WHERE kind = 'audit' ORDER BY id")]
    assert audit[0] == "office: transfers activated"


def test_a_dead_item_is_listed_with_why_and_retried_from_a_phone(make_gateway: Any) -> None:
    from tests.test_push import dead_count, wait_delivered
    from tests.test_push_hl7 import pushing_hl7, send
    from tests.upstream import Step, Upstream

    with Upstream(default=Step(400)) as upstream:  # refuses: the message dies at its first attempt
        gateway, token = pushing_hl7(make_gateway, upstream.url, allow_plain_http=True, max_attempts=1)
        send(gateway, "DIES-1")
        gateway.wait_until(lambda lines: dead_count(lines) == 1, "the message is dead")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                phone = browser.new_context(ignore_https_errors=True, viewport={"width": 390, "height": 844})
                page = phone.new_page()
                page.goto(f"https://127.0.0.1:{gateway.api_port}/")
                page.fill("input[name=token]", token)
                page.click("button[type=submit]")
                expect(page.locator("#overall")).to_contain_text("Needs attention")
                expect(page.locator("#reasons")).to_contain_text("1 item(s) dead")
                expect(page.locator("#dead")).to_contain_text("HTTP 400 Bad Request")
                assert page.evaluate("document.scrollingElement.scrollWidth") <= 390, "the page is wider than a phone"
                page.screenshot(path=str(ARTIFACTS / "status-page-phone-dead-item.png"), full_page=True)
                upstream.default = Step(201)  # the cause is fixed
                page.click("#dead >> text=Retry")
                expect(page.locator("#reasons")).not_to_contain_text("dead")
                expect(page.locator("#dead")).to_have_count(0)
            finally:
                browser.close()
        wait_delivered(gateway, 1)
    with gateway.journal() as conn:
        audit = [r[0] for r in conn.execute("SELECT detail FROM events WHERE kind = 'audit' ORDER BY id")]
    assert audit[-1] == "vetmanager: retried 1 dead item(s)"
