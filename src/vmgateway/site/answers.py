"""Filling in the clinic's form: from a file, from flags, or by asking, into the configuration.

Answers are layered: what the configuration file already says, then a form file (TOML with
`[site]` and `[pacs]`, the same keys as the configuration), then flags, then — when asking —
the technician, who sees the current value and keeps it with Enter. Each answer is checked
as it is given, the whole form at the end; nothing is written unless all of it is right.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vmgateway.config import ConfigError, Settings, parse_settings
from vmgateway.site.form import Language, form_problems

MAX_TRIES = 5
"""A question answered wrongly this many times ends `site init` (stdin may be a script gone wrong)."""


@dataclass(frozen=True)
class Question:
    key: str
    """Dotted configuration key, e.g. site.contact.phone."""
    en: str
    sv: str
    kind: str = "text"
    """text, int, yes/no, or list (comma-separated)."""
    wanted: Callable[[dict[str, Any]], bool] = lambda answers: True
    """Whether to ask, given the answers so far (the router option decides which addresses)."""


def _option(answers: dict[str, Any]) -> int:
    return int(_get(answers, "site.router_option") or 1)


QUESTIONS = [
    Question("site.name", "Site name", "Anläggningens namn"),
    Question("site.router_option", "Router set-up: 1 DMZ (recommended), 2 WAN + LAN, 3 one-to-one NAT,"
             " 4 port forwarding", "Routerkonfiguration: 1 DMZ (rekommenderas), 2 WAN + LAN, 3 en-till-en-NAT,"
             " 4 portvidarebefordran", "int"),
    Question("site.external_ip", "External IP address (what Vetmanager connects to)",
             "Extern IP-adress (den Vetmanager ansluter till)"),
    Question("site.wan_network", "WAN/DMZ network of that address, e.g. 198.51.100.0/29",
             "WAN-/DMZ-nätet som adressen ligger i, t.ex. 198.51.100.0/29", wanted=lambda a: _option(a) in (1, 2)),
    Question("site.internal_ip", "Internal IP address (the gateway on the LAN)",
             "Intern IP-adress (gatewayen i klinikens LAN)", wanted=lambda a: _option(a) != 1),
    Question("site.lan_network", "The clinic's LAN network, e.g. 192.168.1.0/24",
             "Klinikens LAN-nät, t.ex. 192.168.1.0/24"),
    Question("site.router_ip", "Router address (the gateway's default route)",
             "Routerns IP-adress (gatewayens standardgateway)"),
    Question("site.dns", "Name servers, comma-separated (empty: the router)",
             "DNS-servrar, kommaseparerade (tomt: routern)", "list"),
    Question("site.contact.name", "Contact person's name", "Kontaktpersonens namn"),
    Question("site.contact.phone", "Contact person's phone", "Kontaktpersonens telefonnummer"),
    Question("site.contact.email", "Contact person's e-mail", "Kontaktpersonens e-postadress"),
    Question("pacs.host", "PACS IP address, where the gateway polls one (empty: none)",
             "PACS-serverns IP-adress, om gatewayen ska hämta bilder därifrån (tomt: inget PACS)"),
    Question("pacs.port", "PACS port", "PACS-serverns port", "int", wanted=lambda a: bool(_get(a, "pacs.host"))),
    Question("pacs.ae_title", "PACS AE title", "PACS-serverns AE-titel", wanted=lambda a: bool(_get(a, "pacs.host"))),
]
FLAGS = [(question.key, question.kind) for question in QUESTIONS] + [
    ("site.one_to_one_nat", "yes/no"), ("site.device_networks", "list"), ("site.wan_interface", "text"),
    ("site.lan_interface", "text"), ("pacs.poll", "yes/no")]
"""Every form key `site init` takes as a flag: --external-ip for site.external_ip, and so on."""


def flag_name(key: str) -> str:
    section, _, rest = key.partition(".")
    name = rest if section == "site" else key
    return "--" + name.replace("contact.", "contact-").replace(".", "-").replace("_", "-")


def _get(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_answer(data: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    node = data
    for part in sections:
        node = node.setdefault(part, {})
    if value in ("", None, []):
        node.pop(last, None)  # back to the default
    else:
        node[last] = value


def parse_answer(kind: str, text: str) -> Any:
    """The typed value of an answer of `kind`; ValueError saying what is allowed."""
    text = text.strip()
    if kind == "int":
        if not text.isdigit():
            raise ValueError("a whole number")
        return int(text)
    if kind == "yes/no":
        if text.lower() in ("y", "yes", "j", "ja", "true"):
            return True
        if text.lower() in ("n", "no", "nej", "false"):
            return False
        raise ValueError("yes or no")
    if kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def merge_form_file(data: dict[str, Any], form: dict[str, Any], source: str) -> None:
    """Take `[site]` and `[pacs]` from a form file; anything else there is a mistake, said as such."""
    stray = sorted(set(form) - {"site", "pacs"})
    if stray:
        raise ConfigError(f"{source}: a form file holds only [site] and [pacs], not {', '.join(stray)}")
    for section in ("site", "pacs"):
        data.setdefault(section, {}).update(copy.deepcopy(form.get(section, {})))


def derive(data: dict[str, Any], given: set[str]) -> None:
    """What follows from other answers unless stated: one-to-one NAT is option 3; a PACS named is polled."""
    if "site.one_to_one_nat" not in given:
        set_answer(data, "site.one_to_one_nat", _option(data) == 3)
    if "pacs.poll" not in given:
        set_answer(data, "pacs.poll", bool(_get(data, "pacs.host")))


SAYINGS: dict[Language, dict[str, str]] = {
    "en": {"not_valid": "not valid", "does_not_add_up": "The form does not add up yet:",
           "not_complete": "the form is not complete:"},
    "sv": {"not_valid": "ogiltigt", "does_not_add_up": "Formuläret stämmer inte ihop än:",
           "not_complete": "formuläret är inte komplett:"},
}
"""What `ask` says besides its questions (the problems it lists come in the same language, each
naming the configuration key it is about)."""


def ask(data: dict[str, Any], read: Callable[[str], str], say: Callable[[str], None],
        given: set[str] | None = None, language: Language = "sv") -> None:
    """Ask every question that applies, showing the current value; check each answer at once.

    Then check the form as a whole (an answer can be right alone and wrong beside another: a
    router address outside the WAN network): say what does not add up and ask again only the
    questions those problems name, keeping every other answer.
    """
    _ask_each(QUESTIONS, data, read, say, language)
    for _ in range(MAX_TRIES):
        candidate = copy.deepcopy(data)
        derive(candidate, given or set())
        try:
            problems = form_problems(parse_settings(candidate, source="the form"), language)
        except ConfigError:
            return  # not for a question to mend (the file itself): checked() names it
        named = [q for q in QUESTIONS if any(_names(problem, q.key) for problem in problems)]
        if not named:
            return  # complete, or nothing a question can mend: checked() says what is left
        say(SAYINGS[language]["does_not_add_up"])
        for problem in problems:
            say(f"  {problem}")
        _ask_each(named, data, read, say, language)


def _names(problem: str, key: str) -> bool:
    """Whether a problem (which names its keys: "site.router_ip … site.wan_network …") is about `key`;
    "site.contact needs …" is about each of its fields."""
    return any(key == token or key.startswith(token + ".")
               for token in re.findall(r"\b(?:site|pacs)\.[a-z_.]*[a-z_]", problem))


def _shown(data: dict[str, Any], key: str) -> str:
    """The value Enter keeps, as a person writes it: what the file says, else the embedded default
    (PACS port 104); lists comma-separated; nothing at all for an empty value (not `[]`)."""
    current = _get(data, key)
    if current is None:
        current = _get(Settings().model_dump(mode="json"), key)
    if isinstance(current, list):
        return ", ".join(str(value) for value in current)
    return "" if current is None else str(current)


def _ask_each(questions: list[Question], data: dict[str, Any], read: Callable[[str], str],
              say: Callable[[str], None], language: Language) -> None:
    for question in questions:
        if not question.wanted(data):
            continue
        shown = _shown(data, question.key)
        prompt = question.sv if language == "sv" else question.en
        for _ in range(MAX_TRIES):
            text = read(f"{prompt} [{shown}]: " if shown else f"{prompt}: ")
            if not text.strip():
                break  # keep what is there
            try:
                candidate = copy.deepcopy(data)
                set_answer(candidate, question.key, parse_answer(question.kind, text))
                parse_settings(candidate)
            except (ValueError, ConfigError) as exc:
                say(f"  {SAYINGS[language]['not_valid']}: {str(exc).splitlines()[-1].strip()}")
                continue
            data.clear()
            data.update(candidate)
            break
        else:
            raise ConfigError(f"{question.key}: no valid answer after {MAX_TRIES} tries")


def checked(data: dict[str, Any], language: Language = "en") -> Settings:
    """The settings, if the form is complete and consistent; ConfigError listing every problem."""
    settings = parse_settings(data, source="the form")
    problems = form_problems(settings, language)
    if problems:
        raise ConfigError(SAYINGS[language]["not_complete"] + "\n  " + "\n  ".join(problems))
    return settings
