"""Notifications after a run: an email (with the change map) and/or a webhook post.

``[notify]`` in ``tiledelta.toml``::

    [notify]
    on = "failure"                # failure | success | always

    [notify.email]
    host = "smtp.example.org"
    port = 587
    starttls = true               # or ssl = true for implicit TLS (port 465)
    sender = "tiles@example.org"
    to = ["gis-team@example.org"]

    [notify.webhook]
    kind = "slack"                # slack | teams | json
    url = "https://hooks.slack.com/services/..."   # or NOTIFY_WEBHOOK_URL in .env

SMTP credentials come from ``SMTP_USERNAME`` / ``SMTP_PASSWORD`` in the environment or the
project's ``.env``; without them the mail is sent without AUTH. Credentials are only sent
over TLS (or to a loopback relay). Notifying never fails a run: problems are logged as
warnings, and neither the password nor the webhook URL (a secret for Slack and Teams)
appears in logs, return values or exceptions.
"""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tiledelta.config import EmailConfig, NotifyConfig, WebhookConfig
from tiledelta.credentials import Secret, env_value
from tiledelta.project import Project
from tiledelta.runs.report import CHANGEMAP_FILE, read_json, render_html, run_kind, summary_text
from tiledelta.runs.report.facts import (
    SERVER_KINDS,
    changed_anything,
    count_label,
    outcome,
    parse_summary,
    tile_counts,
)

log = logging.getLogger(__name__)

WEBHOOK_URL_ENV = "NOTIFY_WEBHOOK_URL"


class NotifyError(Exception):
    """A notification could not be sent (logged, never raised out of :func:`notify`)."""


# --- secrets ---------------------------------------------------------------------------------


def smtp_credentials(project_root: Path) -> tuple[str, Secret] | None:
    """``SMTP_USERNAME`` / ``SMTP_PASSWORD`` (environment, then ``.env``), or None."""
    user = env_value(project_root, "SMTP_USERNAME")
    password = env_value(project_root, "SMTP_PASSWORD")
    if not user and not password:
        return None
    if not user or not password:
        log.warning(
            "notify: SMTP_USERNAME and SMTP_PASSWORD must both be set; sending without AUTH"
        )
        return None
    return user, Secret(password)


def _redact_url(url: str) -> str:
    """Scheme and host only: webhook paths and queries hold the secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}/…"


def _scrub(text: str, secrets: list[str]) -> str:
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- what to say -----------------------------------------------------------------------------


def wanted(cfg: NotifyConfig, summary: dict, ok: bool) -> bool:
    """Whether ``cfg`` asks for a message about this run."""
    if cfg.on == "failure" and ok:
        return False
    if cfg.on == "success" and not ok:
        return False
    if ok and cfg.skip_unchanged:
        s = parse_summary(summary)
        if s is None or not changed_anything(s):
            return False
    return True


def _title(project: Project, summary: dict, ok: bool) -> str:
    kind = run_kind(summary)
    name = project.root.name
    if not ok:
        return f"{name}: {kind} failed"
    s = parse_summary(summary)
    return f"{name}: {kind} finished" + (f", {outcome(s)}" if s is not None else "")


def _body(summary: dict, folder: Path | None) -> str:
    tiles = read_json(folder / "tiles.json") if folder is not None else None
    return summary_text(summary, tiles=tiles, folder=folder)


def build_email(
    project: Project, cfg: EmailConfig, summary: dict, *, ok: bool, folder: Path | None
) -> EmailMessage:
    """The message: plain text, the HTML report inline, the change map as an inline PNG."""
    msg = EmailMessage()
    msg["Subject"] = f"{cfg.subject_prefix} {_title(project, summary, ok)}".strip()
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=cfg.sender.rpartition("@")[2] or None)
    msg.set_content(_body(summary, folder) + "\n")
    png = None
    if folder is not None and (folder / CHANGEMAP_FILE).is_file():
        png = (folder / CHANGEMAP_FILE).read_bytes()
    cid = make_msgid(domain="tiledelta")
    page = render_html(
        summary,
        tiles=read_json(folder / "tiles.json") if folder is not None else None,
        map_src=f"cid:{cid[1:-1]}" if png else None,
        project_name=project.root.name,
    )
    msg.add_alternative(page, subtype="html")
    html_part = msg.get_body(("html",))
    if png and html_part is not None:
        html_part.add_related(
            png, "image", "png", cid=cid, filename=CHANGEMAP_FILE, disposition="inline"
        )
    return msg


def send_email(
    project: Project, cfg: EmailConfig, summary: dict, *, ok: bool, folder: Path | None
) -> str:
    """Send the run's email; return what was sent. Raises :class:`NotifyError` (scrubbed)."""
    msg = build_email(project, cfg, summary, ok=ok, folder=folder)
    creds = smtp_credentials(project.root)
    secrets = [creds[1].get()] if creds else []
    cafile = str(project.resolve(cfg.cafile)) if cfg.cafile else None
    try:
        context = ssl.create_default_context(cafile=cafile)
        if cfg.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=cfg.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        with smtp:
            smtp.ehlo()
            tls = cfg.ssl
            if cfg.starttls and not cfg.ssl:
                smtp.starttls(context=context)
                smtp.ehlo()
                tls = True
            if creds:
                if not tls and not _is_loopback(cfg.host):
                    raise NotifyError(
                        "refusing to send SMTP credentials without TLS; "
                        "set starttls = true or ssl = true"
                    )
                smtp.login(creds[0], creds[1].get())
            smtp.send_message(msg)
    except NotifyError:
        raise
    except Exception as exc:
        reason = _scrub(f"{type(exc).__name__}: {exc}", secrets)
        raise NotifyError(f"email via {cfg.host}:{cfg.port} failed: {reason}") from None
    return f"email to {', '.join(cfg.to)} via {cfg.host}:{cfg.port}"


def webhook_payload(
    kind: str, project: Project, summary: dict, *, ok: bool, folder: Path | None
) -> dict:
    """The JSON body for a ``slack``, ``teams`` or ``json`` webhook."""
    title = _title(project, summary, ok)
    if kind == "json":
        return {"ok": ok, "project": str(project.root), "title": title, "summary": summary}
    body = _body(summary, folder)
    if kind == "slack":
        return {"text": f"{'✅' if ok else '❌'} *{title}*\n```\n{body}\n```"}
    s = parse_summary(summary)
    facts = [{"name": count_label(w), "value": f"{n:,}"} for w, n in tile_counts(s)] if s else []
    if s is not None and s.kind in SERVER_KINDS and s.jobs is not None:
        facts.append({"name": "server jobs", "value": f"{len(s.jobs):,}"})
    card: dict = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": "2EB67D" if ok else "D13438",
        "summary": title,
        "title": title,
        "text": "\n\n".join(line.strip() for line in body.splitlines()),
    }
    if facts:
        card["sections"] = [{"facts": facts}]
    return card


def send_webhook(
    project: Project, cfg: WebhookConfig, summary: dict, *, ok: bool, folder: Path | None
) -> str:
    """Post the run to the webhook; return what was sent. Raises :class:`NotifyError`."""
    url = cfg.url or env_value(project.root, WEBHOOK_URL_ENV)
    if not url:
        raise NotifyError(f"webhook has no url: set url or {WEBHOOK_URL_ENV}")
    shown = _redact_url(url)
    payload = webhook_payload(cfg.kind, project, summary, ok=ok, folder=folder)
    verify: bool | ssl.SSLContext = (
        ssl.create_default_context(cafile=str(project.resolve(cfg.verify)))
        if isinstance(cfg.verify, str)
        else cfg.verify
    )
    try:
        r = httpx.post(url, json=payload, timeout=cfg.timeout, verify=verify)
        if r.status_code >= 400:
            raise NotifyError(f"webhook {shown} answered HTTP {r.status_code}")
    except NotifyError:
        raise
    except Exception as exc:
        reason = _scrub(f"{type(exc).__name__}: {exc}", [url, urlsplit(url).path])
        raise NotifyError(f"webhook {shown} failed: {reason}") from None
    return f"webhook {cfg.kind} to {shown}"


# --- entry points ----------------------------------------------------------------------------


def notify(
    project: Project,
    summary: dict,
    *,
    ok: bool,
    folder: Path | None,
    config: NotifyConfig | None = None,
) -> list[str]:
    """Send the run's notifications per ``[notify]`` (or ``config``); return what was sent.

    Never raises: a notification that fails is logged as a warning.
    """
    cfg = config if config is not None else getattr(project.config, "notify", None)
    if cfg is None:
        return []
    sent: list[str] = []
    try:
        if not wanted(cfg, summary, ok):
            return []
        folder = Path(folder) if folder is not None else None
        for channel, send in (("email", send_email), ("webhook", send_webhook)):
            channel_cfg = getattr(cfg, channel)
            if channel_cfg is None:
                continue
            try:
                sent.append(send(project, channel_cfg, summary, ok=ok, folder=folder))
                log.info("notify: sent %s", sent[-1])
            except NotifyError as exc:
                log.warning("notify: %s", exc)
            except Exception as exc:  # building the message failed (no secrets involved)
                log.warning("notify: %s not sent: %s: %s", channel, type(exc).__name__, exc)
    except Exception as exc:
        log.warning("notify: nothing sent: %s: %s", type(exc).__name__, exc)
    return sent


def notify_run(project: Project, result: dict) -> list[str]:
    """After a successful seed/update: notify with its summary and run folder."""
    folder = result.get("run_folder")
    return notify(project, result, ok=True, folder=Path(folder) if folder else None)


def notify_failure(project: Project, kind: str, exc: BaseException) -> list[str]:
    """After a seed/update raised ``exc``: notify with a summary holding the error."""
    summary = {"kind": kind, "error": f"{type(exc).__name__}: {exc}"}
    return notify(project, summary, ok=False, folder=None)
