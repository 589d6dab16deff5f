"""The `vmgateway` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from vmgateway import __version__, logs
from vmgateway.bundle.manifest import PLATFORMS
from vmgateway.config import ENV_CONFIG, ConfigError, Settings, config_file
from vmgateway.paths import BOX_CONFIG, BOX_DATA_DIR
from vmgateway.records import SCOPES
from vmgateway.remote_settings import load_settings
from vmgateway.site.answers import FLAGS as FORM_FLAGS
from vmgateway.site.answers import flag_name
from vmgateway.when import when

log = logging.getLogger("vmgateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmgateway",
        description="Vetmanager Gateway: keeps the DICOM and HL7 a clinic's devices send, for Vetmanager.",
    )
    parser.add_argument("--version", action="version", version=f"vmgateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = CONFIG_HELP

    run = commands.add_parser("run", help="run the gateway in the foreground (Ctrl-C / SIGTERM drains and stops)")
    run.add_argument("--config", metavar="FILE", help=config_help)
    run.set_defaults(handler=_run)

    status = commands.add_parser("status", help="what the gateway has received, from its journal")
    status.add_argument("--config", metavar="FILE", help=config_help)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(handler=_status)

    echo = commands.add_parser("echo", help="send a DICOM C-ECHO to a modality or PACS")
    echo.add_argument("host")
    echo.add_argument("port", type=int)
    echo.add_argument("--aet", default="VM_GATEWAY", help="our (calling) AE title (default VM_GATEWAY)")
    echo.add_argument("--called-aet", default="ANY-SCP", help="the peer's (called) AE title (default ANY-SCP)")
    echo.add_argument("--timeout", type=float, default=10, help="seconds to wait for each step (default 10)")
    echo.set_defaults(handler=_echo)

    token = commands.add_parser("token", help="API tokens: create (shown once), list, revoke")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    for action, text in (("create", "make a new token and print it once"), ("revoke", "revoke a token for good")):
        sub = token_commands.add_parser(action, help=text)
        sub.add_argument("name", help="who or what the token is for, e.g. vetmanager-server")
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.set_defaults(handler=_token)
        if action == "create":
            sub.add_argument("--scope", choices=SCOPES, default="all",
                             help="all (default), or monitoring: read /api/v1/status and /api/v1/metrics only")
            sub.add_argument("--from-file", metavar="FILE",
                             help="install this token (at least 32 characters) instead of making one: the one"
                             " monitoring token a fleet shares")
    listing = token_commands.add_parser("list", help="the tokens' names and dates (never the tokens)")
    listing.add_argument("--config", metavar="FILE", help=config_help)
    listing.set_defaults(handler=_token)

    send_hl7 = commands.add_parser("send-hl7", help="send HL7 files MLLP-framed and print each ACK")
    send_hl7.add_argument("files", nargs="+", metavar="FILE", help="one HL7 message per file, sent as it is")
    send_hl7.add_argument("--host", default="127.0.0.1", help="the gateway (default 127.0.0.1)")
    send_hl7.add_argument("--port", type=int, default=2575, help="its HL7 port (default 2575)")
    send_hl7.add_argument("--timeout", type=float, default=30, help="seconds to wait for each ACK (default 30)")
    send_hl7.set_defaults(handler=_send_hl7)

    pacs = commands.add_parser("pacs", help="the clinic's PACS: what it has, poll it now")
    pacs_commands = pacs.add_subparsers(dest="pacs_command", required=True, metavar="ACTION")
    find = pacs_commands.add_parser("find", help="list the studies the PACS has (C-FIND), and whether we hold them")
    find.add_argument("--days", type=int, help="look this many days back (default pacs.lookback_days)")
    find.add_argument("--config", metavar="FILE", help=config_help)
    find.set_defaults(handler=_pacs_find)
    poll = pacs_commands.add_parser("poll-now", help="ask the running gateway to poll the PACS now (needs a token)")
    poll.add_argument("--config", metavar="FILE", help=config_help)
    poll.add_argument("--token", default=os.environ.get("VMGATEWAY_TOKEN", ""),
                      help="an API token (default $VMGATEWAY_TOKEN)")
    poll.add_argument("--json", action="store_true", help="the API's answer as JSON, for scripts")
    poll.set_defaults(handler=_pacs_poll_now)

    site = commands.add_parser("site", help="the clinic's form: fill it in, print it")
    site_commands = site.add_subparsers(dest="site_command", required=True, metavar="ACTION")
    init = site_commands.add_parser(
        "init", help="fill in the clinic's form (flags, a form file, or questions) and write the configuration",
        description="Fills in [site] and [pacs] of the configuration from the clinic's form. Values come from"
        " the existing file, then --from, then flags, then (with --ask, or on a terminal) questions. Nothing"
        " is written unless the whole form is complete and consistent; the previous file is kept as .bak.")
    init.add_argument("--config", metavar="FILE",
                      help=f"the configuration to write (default: ${ENV_CONFIG}, else {BOX_CONFIG})")
    init.add_argument("--from", dest="form_file", metavar="FILE", help="a TOML file with [site] and [pacs]")
    init.add_argument("--ask", action=argparse.BooleanOptionalAction, default=None,
                      help="ask for each value (default: when standard input is a terminal)")
    init.add_argument("--lang", choices=["sv", "en"], default="sv", help="questions in Swedish (default) or English")
    for key, kind in FORM_FLAGS:
        init.add_argument(flag_name(key), dest=key, metavar=kind.upper().replace("/", "|"), help=key)
    init.set_defaults(handler=_site_init)
    form = site_commands.add_parser("form", help="print the filled-in form and the settings for the devices")
    form.add_argument("--config", metavar="FILE", help=config_help)
    form.add_argument("--lang", choices=["sv", "en"], default="sv", help="Swedish (default) or English")
    form.set_defaults(handler=_site_form)

    doctor = commands.add_parser(
        "doctor", help="check the box and explain: config, listeners, disk, clock, UPS, PACS, upstream, release,"
        " firewall",
        description="Each check prints OK, WARN or FAIL, and what to do. Exit status: 0 all OK, 1 a warning,"
        " 2 a failure. Nothing is changed (the DICOM checks are C-ECHOs, the upstream check an OPTIONS request).")
    _box_config(doctor)
    doctor.add_argument("--skip", action="append", default=[], metavar="CHECK",
                        help="leave a check out (may be repeated): site, listeners, disk, clock, ups, pacs,"
                        " upstream, certificates, release or firewall")
    doctor.add_argument("--json", action="store_true", help="print JSON for scripts")
    doctor.set_defaults(handler=_doctor)

    upgrade = commands.add_parser(
        "upgrade", help="install a new release beside the running one, try it, commit it or roll back",
        description="Installs RELEASE (a signed bundle; a wheel only with --allow-unsigned) into"
        " upgrade.root/releases/<version>, drains the gateway, snapshots the"
        " journal, switches the `current` link and starts the new release on trial (loopback only) until a"
        " deep health check passes: then it is committed; otherwise the last committed release comes back,"
        " with the journal snapshot if the new release migrated it. Exit status: 0 committed, 1 rolled back,"
        " 2 refused (nothing changed).")
    upgrade.add_argument("wheel", nargs="?", metavar="RELEASE",
                         help="the release: a signed bundle vmgateway-<version>.pyz (a wheel with --allow-unsigned)")
    _box_config(upgrade)
    upgrade.add_argument("--wheelhouse", metavar="DIR", help="install dependencies from here only (no index)")
    upgrade.add_argument("--force", action="store_true",
                         help="go ahead with transfers waiting, the UPS unreadable, or a release that failed before")
    upgrade.add_argument("--allow-unsigned", action="store_true",
                         help="install a wheel, which carries no signature, on your word (audited at each start)")
    upgrade.add_argument("--recover", action="store_true",
                         help="only settle an upgrade that was cut off: roll back a release left on trial")
    upgrade.add_argument("--boot", action="store_true",
                         help="with --recover, at boot before the gateway starts: do not stop or start the service")
    upgrade.set_defaults(handler=_upgrade)
    version = commands.add_parser("version", help="the running, previous and failed releases")
    _box_config(version)
    version.add_argument("--json", action="store_true", help="print JSON for scripts")
    version.set_defaults(handler=_version)

    host = commands.add_parser("host", help="files for the box the gateway runs on")
    host_commands = host.add_subparsers(dest="host_command", required=True, metavar="ACTION")
    unit = host_commands.add_parser("unit", help="print the systemd service unit")
    unit.add_argument("--config", metavar="FILE",
                      help=f"the configuration the service runs with (default: ${ENV_CONFIG}, else {BOX_CONFIG})")
    _executable_option(unit)
    unit.set_defaults(handler=_host_unit)
    render = host_commands.add_parser(
        "render", help="write the box's firewall, network, UPS and service files into a folder",
        description="Renders, from the configuration (the clinic's form must be complete), the files the box"
        " needs, laid out as under / : etc/nftables.d/vmgateway.nft, etc/systemd/network/, etc/nut/,"
        " etc/systemd/system/vmgateway.service. Nothing is installed or loaded.")
    render.add_argument("--out", metavar="DIR", required=True, help="the folder to write into")
    render.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    _executable_option(render)
    render.set_defaults(handler=_host_render)
    host_install = host_commands.add_parser(
        "install", help="make or put right the gateway's place on this box (as root; run by the bundle's install)",
        description="The system user vmgateway, /etc/vmgateway with a configuration, the data folder, the units"
        " running upgrade.root's current release, vmgateway on the PATH, the service enabled and started. Each"
        " step changes only what differs; run again it says that nothing changed.")
    host_install.add_argument("--config", metavar="FILE", help=f"the configuration (default: ${ENV_CONFIG}, else"
                              f" {BOX_CONFIG}, written when missing)")
    host_install.set_defaults(handler=_host_install)

    bundle = commands.add_parser("bundle", help="release bundles: build one, verify one")
    bundle_commands = bundle.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    build = bundle_commands.add_parser(
        "build", help="write vmgateway-<version>.pyz: the release and every dependency, pinned, signed",
        description="Builds the release wheel from the checkout, downloads every dependency's wheel for the box"
        " (Debian 12's Python 3.11) pinned to the versions installed here, and writes one zipapp with their"
        " hashes in a manifest signed with Ed25519. A box installs it with `python3 FILE install` and upgrades"
        " with `vmgateway upgrade FILE`, both offline.")
    build.add_argument("--out", metavar="DIR", required=True, help="the folder to write into (made if missing)")
    build.add_argument("--sign-key", metavar="KEY.pem",
                       help="the Ed25519 private key (openssl genpkey -algorithm ed25519 -out KEY.pem); without it"
                       " the bundle is unsigned and no box installs it")
    build.add_argument("--platform", choices=sorted(PLATFORMS), default="x86_64",
                       help="the box's machine (default x86_64)")
    build.add_argument("--source", metavar="DIR", help="the source tree (default: the checkout this runs from)")
    build.set_defaults(handler=_bundle_build)
    verify = bundle_commands.add_parser("verify", help="check a bundle: version, signer, contents")
    verify.add_argument("file", metavar="FILE")
    verify.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    verify.set_defaults(handler=_bundle_verify)
    return parser


CONFIG_HELP = (f"TOML configuration file (default: ${ENV_CONFIG}, else {BOX_CONFIG} if it exists,"
               " else the embedded defaults)")


def _box_config(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def _say_where(given: str | None, settings: Settings) -> str:
    """Which configuration and data folder a command used, on stderr (so a person sees at once
    when it is not the box's); returned for --json too."""
    where = f"configuration {config_file(given) or 'the embedded defaults'}; data {settings.storage.data_dir.resolve()}"
    print(f"vmgateway: {where}", file=sys.stderr)
    return where


def _config_for_unit(given: str | None) -> str:
    """The file the service is to run with: by the rule, else the box's file (to be written)."""
    return os.path.abspath(config_file(given) or BOX_CONFIG)


def _executable_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--executable", metavar="PATH",
                         help="the vmgateway program (default: upgrade.root's current release, else this one)")


def _as_owner_of_data(settings: Settings) -> None:
    """Run as root, become the data folder's owner (on a box, the service's user) before touching
    it: a journal, WAL or spool file root made would be one the service can no longer write."""
    if os.geteuid() != 0:
        return
    try:
        owner = settings.storage.data_dir.stat()
    except FileNotFoundError:
        return
    if owner.st_uid == 0:
        return
    import pwd

    try:
        groups = os.getgrouplist(pwd.getpwuid(owner.st_uid).pw_name, owner.st_gid)
    except KeyError:
        groups = [owner.st_gid]
    os.setgroups(groups)
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"vmgateway: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from vmgateway.service import Gateway, StartupError
    from vmgateway.upgrade import trial

    settings, on_trial = trial.as_run(load_settings(args.config))
    _as_owner_of_data(settings)
    logs.configure()
    log.info("configuration", extra={"file": config_file(args.config) or "the embedded defaults",
                                     "data_dir": str(settings.storage.data_dir.resolve())})
    if on_trial:
        log.warning("release on trial: listening on loopback only until the upgrade commits it",
                    extra={"version": __version__})
    try:
        asyncio.run(Gateway(settings, config_file(args.config)).run())
    except StartupError as exc:
        log.error("gateway did not start", extra={"error": str(exc)})
        print(f"vmgateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from vmgateway.identity import identity
    from vmgateway.store.report import NoJournal, received_summary, running_as

    settings = load_settings(args.config)
    _as_owner_of_data(settings)
    where = _say_where(args.config, settings)
    try:
        summary = asdict(received_summary(settings.journal_path, settings.dicom.stable_after_s)) | {
            "identity": identity(settings, *running_as(settings.journal_path)), "used": where}
    except NoJournal as exc:
        print(f"vmgateway: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(_render_status(summary))
    return 0


def _echo(args: argparse.Namespace) -> int:
    from vmgateway.dicom.echo import echo

    result = echo(args.host, args.port, args.aet, args.called_aet, args.timeout)
    print(result.message, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _token(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmgateway.store import Store, TokenExists
    from vmgateway.store.access import TokenRefused, check_given_token

    settings = load_settings(args.config)
    _as_owner_of_data(settings)
    _say_where(args.config, settings)
    if not settings.journal_path.exists():
        print(f"vmgateway: no journal at {settings.journal_path} yet: making a new one (the gateway run with"
              " this configuration will use it)", file=sys.stderr)
    store = Store(settings.storage.data_dir, settings.storage.min_free_mb)
    store.open_journal()  # creates or migrates the journal, so tokens can be made before the first run
    try:
        if args.token_command == "create":
            try:
                given = check_given_token(Path(args.from_file).read_text().strip()) if args.from_file else None
                token = store.tokens.create(args.name, args.scope, given)
            except (TokenExists, TokenRefused, OSError) as exc:
                print(f"vmgateway: {exc}", file=sys.stderr)
                return 1
            if given:
                print(f"Token {args.name!r} ({args.scope}) installed from {args.from_file}.")
            else:
                print(token)
                print(f"Token {args.name!r} ({args.scope}) created. It is shown only this once: store it now.",
                      file=sys.stderr)
        elif args.token_command == "revoke":
            if not store.tokens.revoke(args.name):
                print(f"vmgateway: no valid token named {args.name!r}", file=sys.stderr)
                return 1
            print(f"Token {args.name!r} revoked.")
        else:
            tokens = store.tokens.list()
            for info in tokens:
                state = f"revoked {_when(info.revoked_at)}" if info.revoked_at else "valid"
                print(f"{info.name:<24} {info.scope:<10} created {_when(info.created_at)}  {state}")
            if not tokens:
                print("no tokens yet: vmgateway token create NAME")
    finally:
        store.close()
    return 0


def _pacs_find(args: argparse.Namespace) -> int:
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    from vmgateway.pacs.query import PacsError, associate, find_studies
    from vmgateway.store import Store

    settings = load_settings(args.config)
    _as_owner_of_data(settings)
    store = Store(settings.storage.data_dir, settings.storage.min_free_mb)
    journal = settings.journal_path.exists()
    pacs = settings.pacs  # with what Vetmanager changed remotely (load_settings lays it over the file)
    if not (pacs.host and pacs.ae_title):
        print("vmgateway: no PACS configured: set pacs.host and pacs.ae_title", file=sys.stderr)
        return 2
    ae = AE(ae_title=settings.dicom.ae_title)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    try:
        assoc = associate(ae, pacs)
        try:
            studies = find_studies(assoc, pacs.lookback_days if args.days is None else args.days)
        finally:
            assoc.release()
    except PacsError as exc:
        print(f"vmgateway: {exc}", file=sys.stderr)
        return 1
    for study in studies:
        held = sum(len(s) for s in store.held_instances(study.study_instance_uid).values()) if journal else 0
        print(f"{study.study_date or '-':<9} {study.modalities or '-':<6} {study.instances or '?':>5} on PACS"
              f" {held:>5} here  {study.patient_name or '-'} ({study.patient_id or '-'})  {study.study_instance_uid}")
    print(f"{_count(len(studies), 'study', 'studies')} on {pacs.ae_title}@{pacs.host}:{pacs.port}", file=sys.stderr)
    return 0


def _pacs_poll_now(args: argparse.Namespace) -> int:
    import httpx

    settings = load_settings(args.config)
    if not args.token:
        print("vmgateway: an API token is needed (--token or $VMGATEWAY_TOKEN; vmgateway token create NAME)",
              file=sys.stderr)
        return 2
    url = settings.api.local_url("/api/v1/pacs/poll")
    try:  # our own API on this box: its certificate is self-signed, the connection never leaves the host
        answer = httpx.post(url, headers={"Authorization": f"Bearer {args.token}"}, verify=False, timeout=600,
                            trust_env=False)
    except httpx.HTTPError as exc:
        print(f"vmgateway: the gateway's API at {url} did not answer: {exc}", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        print(f"vmgateway: {answer.status_code} {answer.text}", file=sys.stderr)
        return 1
    result = answer.json()
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif "error" in result:
        print(f"the poll failed: {result['error']}")
    else:
        print(f"{_count(result['studies'], 'study', 'studies')} on the PACS in the last"
              f" {settings.pacs.lookback_days} day(s); {_count(result['missing'], 'instance', 'instances')} missing"
              f" here, {result['fetched']} fetched now")
        for problem in result.get("problems", []):
            print(f"  problem: {problem}")
    return 0 if result.get("ok") else 1


def _count(number: int, one: str, many: str) -> str:
    """`1 study`, `2 studies`."""
    return f"{number} {one if number == 1 else many}"


def _site_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmgateway.config import read_config_file
    from vmgateway.files import write_toml
    from vmgateway.remote_settings import keys_of, read_remote, remote_file
    from vmgateway.site.answers import ask, checked, derive, merge_form_file, parse_answer, set_answer

    path = Path(config_file(args.config) or BOX_CONFIG)
    # A new box's file: the data where the unit's StateDirectory puts it, as an absolute path so
    # that doctor and upgrade, run from any folder, find the same journal as the service.
    data = read_config_file(path) if path.exists() else {"storage": {"data_dir": BOX_DATA_DIR}}
    given = set()
    if args.form_file:
        form = read_config_file(args.form_file)
        merge_form_file(data, form, args.form_file)
        given |= {f"{section}.{key}" for section in form for key in form[section]}
    for key, kind in FORM_FLAGS:
        text = getattr(args, key)
        if text is not None:
            try:
                set_answer(data, key, parse_answer(kind, text))
            except ValueError as exc:
                raise ConfigError(f"{flag_name(key)} {text!r}: {exc}") from None
            given.add(key)
    if args.ask if args.ask is not None else sys.stdin.isatty():
        ask(data, _read_line, print, given, args.lang)
    derive(data, given)
    settings = checked(data, args.lang)
    backup = write_toml(path, data)
    print(f"wrote {path}" + (f" (the previous version is {backup})" if backup else ""))
    print(f"site {settings.site.name!r}, router option {settings.site.router_option}")
    remote = keys_of(read_remote(settings.storage.data_dir))
    if remote:
        print(f"note: Vetmanager changed {', '.join(remote)} remotely; those stay as they are"
              f" ({remote_file(settings.storage.data_dir)}), whatever the form says")
    print("the gateway reads it when it starts: systemctl restart vmgateway; then vmgateway host render"
          " writes the box's firewall, network and UPS files")
    return 0


def _read_line(prompt: str) -> str:
    """input(), but the end of standard input is an empty answer rather than a crash."""
    try:
        return input(prompt)
    except EOFError:
        print()
        return ""


def _site_form(args: argparse.Namespace) -> int:
    from vmgateway.site.form import form_problems, printed_form

    settings = load_settings(args.config)
    print(printed_form(settings, args.lang))
    problems = form_problems(settings, args.lang)
    for problem in problems:
        print(f"vmgateway: {'ofullständigt' if args.lang == 'sv' else 'incomplete'}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _doctor(args: argparse.Namespace) -> int:
    from vmgateway.doctor import report
    from vmgateway.doctor.checks import CHECKS, overall

    unknown = sorted(set(args.skip) - set(CHECKS))
    if unknown:
        print(f"vmgateway: no check named {', '.join(unknown)} (there are: {', '.join(CHECKS)})", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        findings = [report.fail("config", str(exc).splitlines()[0], "\n                    ".join(
            str(exc).splitlines()[1:]) or "fix the file; the other checks need it")]
    else:
        findings = [report.ok("config", f"{config_file(args.config) or 'the embedded defaults'} is valid")]
        for name, check in CHECKS.items():
            if name not in args.skip:
                findings += check(settings)
        findings.insert(0, overall(settings, findings))
    if args.json:
        print(json.dumps([finding.as_dict() for finding in findings], indent=2))
    else:
        print(report.text(findings), end="")
    return report.exit_code(findings)


def _upgrade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmgateway.upgrade.run import UpgradeFailed, UpgradeRefused, recover_now, upgrade

    settings = load_settings(args.config)

    def say(line: str) -> None:
        print(f"vmgateway upgrade: {line}", flush=True)

    try:
        if args.recover:
            recover_now(settings, say, boot=args.boot)
            return 0
        if not args.wheel:
            print("vmgateway: upgrade needs a RELEASE, vmgateway-X.Y.Z.pyz (or --recover)", file=sys.stderr)
            return 2
        version = upgrade(settings, Path(args.wheel), Path(args.wheelhouse) if args.wheelhouse else None,
                          args.force, say, allow_unsigned=args.allow_unsigned)
    except UpgradeRefused as exc:
        print(f"vmgateway: upgrade refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    except UpgradeFailed as exc:
        print(f"vmgateway: {exc}", file=sys.stderr)
        return 1
    say(f"release {version} is running and committed")
    if settings.upgrade.service != "systemd":
        return 0
    # A release may bring a changed unit or new host needs: its own `host install` puts them right.
    from vmgateway.upgrade.layout import Layout

    given = config_file(args.config)
    host = subprocess.run([str(Layout(settings.upgrade.root).program(version)), "host", "install",
                           *(["--config", given] if given else [])], timeout=600)
    if host.returncode:
        print(f"vmgateway: release {version} is committed and running, but its host install failed (above)",
              file=sys.stderr)
        return 1
    return 0


def _version(args: argparse.Namespace) -> int:
    from vmgateway.upgrade.layout import Layout
    from vmgateway.upgrade.state import UpgradeState

    settings = load_settings(args.config)
    layout = Layout(settings.upgrade.root)
    state = UpgradeState.load(layout.state_file)
    installed = sorted(p.name for p in layout.releases.iterdir() if p.is_dir()) if layout.releases.exists() else []
    report = {"this_program": __version__, "running": layout.current_version(), "committed": state.committed,
              "previous": state.previous, "on_trial": state.trial, "failed": state.failed, "installed": installed}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key.replace('_', ' ') + ':':<14} {shown if shown else '-'}")
    return 0


def _host_unit(args: argparse.Namespace) -> int:
    from vmgateway.host.systemd import service_unit

    settings = load_settings(args.config)
    print(service_unit(settings, _executable(args.executable, settings), _config_for_unit(args.config)), end="")
    return 0


def _executable(given: str | None, settings: Settings) -> str:
    """The program the service runs: as given; else through the `current` link upgrades switch
    (so the unit follows every upgrade); else on PATH; else the one beside this Python."""
    import shutil

    from vmgateway.upgrade.layout import Layout

    current = Layout(settings.upgrade.root).current / "venv" / "bin" / "vmgateway"
    if given:
        return os.path.abspath(given)
    if current.exists():
        return str(current)
    return os.path.abspath(shutil.which("vmgateway") or os.path.join(os.path.dirname(sys.executable), "vmgateway"))


def _host_render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmgateway.host.render import render_host

    settings = load_settings(args.config)
    program = _executable(args.executable, settings)
    written = render_host(settings, Path(args.out), program, _config_for_unit(args.config))
    for path in written:
        print(path)
    print(f"install with: cp -a {args.out}/. / && systemctl daemon-reload && systemctl enable --now"
          " nftables systemd-networkd nut-server nut-monitor vmgateway-upgrade-recover vmgateway", file=sys.stderr)
    return 0


def _host_install(args: argparse.Namespace) -> int:
    from vmgateway.host.box import HostInstallError, install_on_host

    def say(line: str) -> None:
        print(f"vmgateway host install: {line}", flush=True)

    try:
        changed = install_on_host(config_file(args.config), say)
    except HostInstallError as exc:
        print(f"vmgateway: host install: {exc}", file=sys.stderr)
        return 1
    for line in changed:
        say(line)
    if not changed:
        say("nothing changed: the box was already set up")
    return 0


def _bundle_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmgateway.bundle.build import BuildError, build, checkout

    source = Path(args.source) if args.source else checkout()
    if source is None:
        print("vmgateway: not run from a checkout: give --source DIR", file=sys.stderr)
        return 2
    try:
        path = build(source, Path(args.out), Path(args.sign_key) if args.sign_key else None, args.platform,
                     lambda line: print(f"vmgateway bundle: {line}", file=sys.stderr, flush=True))
    except BuildError as exc:
        print(f"vmgateway: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _bundle_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmgateway.bootstrap import describe
    from vmgateway.bundle.manifest import BundleError, read_bundle
    from vmgateway.bundle.trust import UntrustedKey, trusted_keys

    settings = load_settings(args.config)
    try:
        bundle = read_bundle(Path(args.file))
        print(describe(bundle), end="")
        keys = trusted_keys(settings.upgrade.trusted_keys)
        print(f"trusted here as {bundle.check_signed_by(keys)}")
    except (BundleError, UntrustedKey) as exc:
        print(f"vmgateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _send_hl7(args: argparse.Namespace) -> int:
    from vmgateway.hl7.client import send_messages

    messages = []
    for name in args.files:
        try:
            with open(name, "rb") as handle:
                messages.append(handle.read())
        except OSError as exc:
            print(f"vmgateway: cannot read {name}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        answers = send_messages(args.host, args.port, messages, args.timeout)
    except (OSError, ConnectionError) as exc:
        print(f"vmgateway: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    for name, answer in zip(args.files, answers, strict=True):
        print(f"{name}: {answer.code or '?'}" + (f" {answer.text}" if answer.text else ""))
    return 0 if all(a.code in ("AA", "CA") for a in answers) else 1


def _when(timestamp: float | None) -> str:
    return when(timestamp, missing="-")


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def _render_status(summary: dict[str, Any]) -> str:
    totals, today, studies = summary["totals"], summary["today"], summary["studies"]
    states = ", ".join(f"{n} {state}" for state, n in sorted(totals["by_state"].items())) or "none"
    kinds = ", ".join(f"{v['items']} {kind.upper()}" for kind, v in sorted(totals["by_kind"].items())) or "nothing"
    kinds_today = ", ".join(f"{n} {kind.upper()}" for kind, n in sorted(today["by_kind"].items())) or "nothing"
    box = summary["identity"]
    running = f"running since {_when(box['started_at'])}" if box["started_at"] else "not running"
    lines = [
        f"Gateway {box['gateway_id'] or '(no id yet: never started)'} on {box['hostname']},"
        f" site {box['site'] or '-'}, vmgateway {box['version']}, {running}",
        f"Journal: {summary['journal']}",
        f"Received in all: {totals['items']} items, {_size(totals['bytes'])}: {kinds} ({states})",
        f"Received today:  {today['items']} items, {_size(today['bytes'])}: {kinds_today}",
        f"Studies: {studies['complete']} complete, {len(studies['arriving'])} still arriving",
        f"Not yet delivered: {totals['by_state'].get('received', 0)}; dead (given up on, retry through the API):"
        f" {totals['by_state'].get('dead', 0)}",
    ]
    for title, rows in (("Still arriving", studies["arriving"]), ("Recently complete", studies["recently_complete"])):
        if rows:
            lines.append(f"\n{title}:")
            lines += [
                f"  {_when(s['last_received_at'])}  {s['instances']:>5} inst  {s['modalities'] or '-':<6}"
                f" {s['patient_name'] or '-'} ({s['patient_id'] or '-'})  {s['study_instance_uid']}"
                for s in rows
            ]
    lines.append("\nSenders (last contact):")
    lines += [
        f"  {_when(s['last_seen_at'])}  {s['protocol']:<5} {s['name']:<16} {s['address']:<15} {s['items']} items"
        for s in summary["senders"]
    ] or ["  none yet"]
    return "\n".join(lines)
