"""The status page as a person sees it: Debian's Chromium, headless, driven by Playwright."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

from tests.support.clients import new_token
from tests.support.dicomdata import copies_of_ct_small
from tests.support.gateway import GatewayProcess, dcmtk
from vmgateway import __version__
from vmgateway.clock import clock_synchronised

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
# Chromium as root needs --no-sandbox; the rest keeps it from reaching for the internet.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?:[A-Z]{2,5}|[+-]\d{2,4})$")
"""A time as the page shows it: local, with its zone."""


def snapshots(page: Page, state: str) -> None:
    """The page in this state at desktop and phone width, kept as test artifacts; at phone width
    nothing may be wider than the screen (wide tables scroll inside their box)."""
    for width, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        if width == "phone":
            assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"], f"{state}: too wide"
        page.screenshot(path=str(ARTIFACTS / f"status-page-{state}-{width}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


@pytest.mark.peer
def test_sign_in_see_devices_activate_transfers(gateway: GatewayProcess, tmp_path: Path) -> None:
    token = new_token(gateway, "office")
    assert dcmtk("echoscu", "-aet", "XRAY_ROOM1", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port)).returncode == 0
    [instance] = copies_of_ct_small(tmp_path, 1)
    assert dcmtk("storescu", "-aet", "XRAY_ROOM1", "-aec", "VM_GATEWAY", "127.0.0.1", str(gateway.port),
                 instance).returncode == 0
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            said: list[str] = []  # what Chromium reports: a policy that blocked the page's style or a form
            page.on("console", lambda message: said.append(message.text))
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
            with gateway.journal() as conn:
                (gateway_id,) = conn.execute("SELECT value FROM settings WHERE key = 'gateway_id'").fetchone()
            identity = page.locator("#identity")
            for shown in (gateway_id, socket.gethostname(), __version__):  # which box, quoted on the phone
                expect(identity).to_contain_text(shown)
            expect(page.locator("#transfers")).to_contain_text("off")
            pull = page.locator("#destinations tr", has_text="pull feed")
            expect(pull).to_contain_text("off")
            assert pull.locator("td").nth(2).inner_text() == "1"  # waiting
            newest = page.locator("#newest tr", has_text="XRAY_ROOM1")
            expect(newest).to_contain_text("CompressedSamples CT1")  # the patient, readable
            expect(newest).to_contain_text("received")
            assert LOCAL_TIME.search(newest.locator("td").first.inner_text()), "a time without its zone"
            snapshots(page, "commissioning" if clock_ok else "commissioning-clock")
            page.click("text=Activate transfers")
            expect(page.locator("#transfers")).to_contain_text("on")
            expect(page.locator("#overall")).to_contain_text("All well" if clock_ok else "Needs attention")
            expect(page.locator("#destinations tr", has_text="pull feed")).to_contain_text("ok")
            snapshots(page, "all-well" if clock_ok else "activated-clock")
            page.fill("input[name=host]", "127.0.0.1")
            page.fill("input[name=port]", str(gateway.port))
            page.fill("input[name=called_ae]", "VM_GATEWAY")
            page.click("text=C-ECHO")
            expect(page.locator("#echo-result")).to_contain_text("succeeded")
            cookies = page.context.cookies()
            assert [(c["name"], c["httpOnly"], c["secure"], c["sameSite"]) for c in cookies] == [
                ("vmgateway_token", True, True, "Strict")]
            assert page.evaluate("getComputedStyle(document.body).fontFamily") != "", "the page's style was blocked"
            assert [text for text in said if "Content Security Policy" in text] == []
        finally:
            browser.close()
    assert all(shot.stat().st_size > 10_000 for shot in ARTIFACTS.glob("status-page-*-phone.png"))
    with gateway.journal() as conn:
        audit = [r[0] for r in conn.execute("SELECT detail FROM events WHERE kind = 'audit' ORDER BY id")]
    assert audit[0] == "office: transfers activated"


@pytest.mark.peer
def test_a_dead_item_is_listed_with_why_and_retried_from_a_phone(make_gateway: Any) -> None:
    from tests.support.push import dead_count, pushing_hl7, send, wait_delivered
    from tests.support.upstream import Step, Upstream

    with Upstream(default=Step(400)) as upstream:  # refuses: the message dies at its first attempt
        gateway, token = pushing_hl7(make_gateway, upstream.url, allow_plain_http=True, max_attempts=1)
        send(gateway, "DIES-1")
        gateway.wait_until(lambda lines: dead_count(lines) == 1, "the message is dead")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                phone = browser.new_context(ignore_https_errors=True, viewport=PHONE)
                page = phone.new_page()
                page.goto(f"https://127.0.0.1:{gateway.api_port}/")
                page.fill("input[name=token]", token)
                page.click("button[type=submit]")
                expect(page.locator("#overall")).to_contain_text("Needs attention")
                expect(page.locator("#reasons")).to_contain_text("1 item(s) dead")
                expect(page.locator("#dead")).to_contain_text("HTTP 400 Bad Request")
                hl7 = page.locator("#destinations tr", has_text="hl7")
                # waiting, dead; a refusal counts against the item (listed above), not the destination
                assert [hl7.locator("td").nth(n).inner_text() for n in (1, 2, 3)] == ["ok", "0", "1"]
                assert page.evaluate("document.scrollingElement.scrollWidth") <= 390, "the page is wider than a phone"
                snapshots(page, "attention-dead-item")
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
