"""Notifications: a real SMTP server (plain + AUTH, and STARTTLS + AUTH) and a local webhook."""

from __future__ import annotations

import email
import email.policy
import io
import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from PIL import Image

from tiledelta import sample
from tiledelta.api import init_project, load_project
from tiledelta.config import EmailConfig, NotifyConfig, WebhookConfig
from tiledelta.project import Project
from tiledelta.runs.notify import notify, notify_failure, notify_run, wanted
from tiledelta.runs.report import write_report

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

USER = "tiles-bot"
PASSWORD = "s3cret-Pa55word!"  # must never show up in logs or return values


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A real update run on the sample county, with its report written."""
    root = tmp_path_factory.mktemp("notify") / "county"
    sample.generate(root)
    init_project(root, style=root / "style.xml", levels="13-15", force=True)
    p = Project.load(root)
    p = p.updated(render={"processes": 1})
    p.save()
    from tiledelta.api import seed, update

    seed(load_project(root))
    sample.apply_edits(root)
    result = update(load_project(root))
    project = load_project(root)
    write_report(project, Path(result["run_folder"]))
    return {"project": project, "result": result, "folder": Path(result["run_folder"])}


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch):
    for name in ("SMTP_USERNAME", "SMTP_PASSWORD", "NOTIFY_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)


# --- SMTP ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """aiosmtpd handler + authenticator: keeps messages and who logged in."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[str] = []
        self.tls: list[bool] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == USER
            and auth_data.password.decode() == PASSWORD
        )
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        self.tls.append(session.ssl is not None)
        return "250 OK"


@pytest.fixture
def smtp_plain():
    inbox = Inbox()
    ctl = aiosmtpd_controller.Controller(
        inbox,
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=inbox,
        auth_require_tls=False,  # loopback test relay
    )
    ctl.start()
    try:
        yield inbox, ctl.port
    finally:
        ctl.stop()


@pytest.fixture
def smtp_tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    inbox = Inbox()
    ctl = aiosmtpd_controller.Controller(
        inbox,
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=inbox,
        tls_context=server_ctx,
        require_starttls=True,
        auth_require_tls=True,
    )
    ctl.start()
    try:
        yield inbox, ctl.port, cafile
    finally:
        ctl.stop()


def _email_cfg(port: int, **kw) -> NotifyConfig:
    e = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "sender": "tiles@example.org",
        "to": ["gis@example.org", "ops@example.org"],
    }
    e.update(kw)
    return NotifyConfig(on="always", email=EmailConfig(**e))


def _check_message(msg, run) -> None:
    assert msg["From"] == "tiles@example.org"
    assert msg["To"] == "gis@example.org, ops@example.org"
    assert msg["Subject"].startswith("[tiledelta] county: update finished")
    text = msg.get_body(("plain",)).get_content()
    assert "parcels: 3 added, 0 modified, 0 deleted" in text
    html_part = msg.get_body(("html",)).get_content()
    assert "<table>" in html_part and 'src="cid:' in html_part
    pngs = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(pngs) == 1 and pngs[0].get_filename() == "changemap.png"
    data = pngs[0].get_content()
    assert data == (run["folder"] / "changemap.png").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (800, 560)
    cid = pngs[0]["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html_part


def test_email_plain_smtp_with_auth_from_dotenv(run, smtp_plain, caplog, tmp_path):
    inbox, port = smtp_plain
    project = run["project"]
    env = project.root / ".env"
    env.write_text(f"SMTP_USERNAME={USER}\nSMTP_PASSWORD={PASSWORD}\n")
    caplog.set_level(logging.DEBUG)
    try:
        sent = notify(
            project, run["result"], ok=True, folder=run["folder"], config=_email_cfg(port)
        )
    finally:
        env.unlink()
    assert sent == [f"email to gis@example.org, ops@example.org via 127.0.0.1:{port}"]
    assert inbox.logins == [USER] and inbox.tls == [False]
    _check_message(inbox.messages[0], run)
    assert PASSWORD not in caplog.text and PASSWORD not in repr(sent)


def test_email_starttls_with_auth(run, smtp_tls, monkeypatch, caplog):
    inbox, port, cafile = smtp_tls
    monkeypatch.setenv("SMTP_USERNAME", USER)
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    cfg = _email_cfg(port, starttls=True, cafile=str(cafile))
    sent = notify(run["project"], run["result"], ok=True, folder=run["folder"], config=cfg)
    assert len(sent) == 1, caplog.text
    assert inbox.logins == [USER] and inbox.tls == [True]
    _check_message(inbox.messages[0], run)
    assert PASSWORD not in caplog.text


def test_email_starttls_untrusted_certificate_is_a_warning(run, smtp_tls, monkeypatch, caplog):
    inbox, port, _cafile = smtp_tls
    monkeypatch.setenv("SMTP_USERNAME", USER)
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    cfg = _email_cfg(port, starttls=True)  # the test CA is not trusted
    sent = notify(run["project"], run["result"], ok=True, folder=run["folder"], config=cfg)
    assert sent == [] and inbox.messages == [] and inbox.logins == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text or "certificate" in caplog.text.lower()
    assert PASSWORD not in caplog.text


def test_email_wrong_password_never_leaks(run, smtp_plain, monkeypatch, caplog):
    inbox, port = smtp_plain
    wrong = "not-the-Pa55word-at-all"
    monkeypatch.setenv("SMTP_USERNAME", USER)
    monkeypatch.setenv("SMTP_PASSWORD", wrong)
    caplog.set_level(logging.DEBUG)
    sent = notify(
        run["project"], run["result"], ok=True, folder=run["folder"], config=_email_cfg(port)
    )
    assert sent == [] and inbox.messages == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "notify" in r.name]
    assert warnings and "SMTPAuthenticationError" in warnings[0].getMessage()
    assert wrong not in caplog.text


def test_email_without_credentials_and_failure_message(run, smtp_plain):
    inbox, port = smtp_plain
    cfg = _email_cfg(port)
    cfg = cfg.model_copy(update={"on": "failure"})
    project = run["project"]
    assert notify(project, run["result"], ok=True, folder=run["folder"], config=cfg) == []
    assert inbox.messages == []
    sent = notify(
        project,
        {"kind": "update", "error": "LockedError: <another run>"},
        ok=False,
        folder=None,
        config=cfg,
    )
    assert len(sent) == 1 and inbox.logins == []
    msg = inbox.messages[0]
    assert msg["Subject"] == "[tiledelta] county: update failed"
    assert "LockedError: <another run>" in msg.get_body(("plain",)).get_content()
    assert "LockedError: &lt;another run&gt;" in msg.get_body(("html",)).get_content()
    assert not [p for p in msg.walk() if p.get_content_type() == "image/png"]


def test_unreachable_smtp_server_does_not_raise(run, caplog):
    cfg = _email_cfg(_free_port(), timeout=2)
    sent = notify(run["project"], run["result"], ok=True, folder=run["folder"], config=cfg)
    assert sent == [] and "email via 127.0.0.1" in caplog.text


# --- webhooks --------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(n)
            posts.append(
                {
                    "path": self.path,
                    "type": self.headers.get("Content-Type"),
                    "json": json.loads(body),
                }
            )
            status = 500 if self.path.endswith("/fail") else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


def _hook(url: str, kind: str) -> NotifyConfig:
    return NotifyConfig(on="always", webhook=WebhookConfig(url=url, kind=kind))


def test_webhook_slack(run, receiver):
    base, posts = receiver
    url = f"{base}/services/T000/B000/XXXXSECRET"
    sent = notify(
        run["project"], run["result"], ok=True, folder=run["folder"], config=_hook(url, "slack")
    )
    assert sent == [f"webhook slack to {base}/…"] and "XXXXSECRET" not in sent[0]
    (post,) = posts
    assert post["path"] == "/services/T000/B000/XXXXSECRET"
    assert post["type"] == "application/json"
    assert set(post["json"]) == {"text"}
    assert "county: update finished" in post["json"]["text"]
    assert "parcels: 3 added" in post["json"]["text"]


def test_webhook_teams(run, receiver):
    base, posts = receiver
    sent = notify(
        run["project"],
        {"kind": "seed", "error": "CacheError: disk full"},
        ok=False,
        folder=None,
        config=_hook(f"{base}/webhookb2/abc", "teams"),
    )
    assert len(sent) == 1
    card = posts[0]["json"]
    assert card["@type"] == "MessageCard" and card["themeColor"] == "D13438"
    assert card["title"] == "county: seed failed" and "CacheError: disk full" in card["text"]


def test_webhook_json_and_url_from_dotenv(run, receiver):
    base, posts = receiver
    project = run["project"]
    env = project.root / ".env"
    env.write_text(f"NOTIFY_WEBHOOK_URL={base}/hook/secret-token\n")
    try:
        cfg = NotifyConfig(on="success", webhook=WebhookConfig(kind="json"))
        sent = notify_run_with(project, run["result"], cfg)
    finally:
        env.unlink()
    assert sent == [f"webhook json to {base}/…"]
    body = posts[0]["json"]
    assert body["ok"] is True and body["project"] == str(project.root)
    assert body["summary"]["tiles_written"] == run["result"]["tiles_written"]
    assert body["summary"]["changes"]["layers"]["parcels"]["added"] == 3


def notify_run_with(project, result, cfg):
    return notify(project, result, ok=True, folder=Path(result["run_folder"]), config=cfg)


def test_webhook_errors_are_warnings_without_the_url(run, receiver, caplog):
    base, _posts = receiver
    sent = notify(
        run["project"],
        run["result"],
        ok=True,
        folder=run["folder"],
        config=_hook(f"{base}/secret-path/fail", "json"),
    )
    assert sent == [] and "HTTP 500" in caplog.text and "secret-path" not in caplog.text
    dead = f"http://127.0.0.1:{_free_port()}/another-secret"
    assert (
        notify(run["project"], run["result"], ok=True, folder=None, config=_hook(dead, "slack"))
        == []
    )
    assert "another-secret" not in caplog.text


# --- when ------------------------------------------------------------------------------------


def test_when_to_notify(run):
    r = run["result"]
    assert not wanted(NotifyConfig(on="failure"), r, ok=True)
    assert wanted(NotifyConfig(on="failure"), {}, ok=False)
    assert wanted(NotifyConfig(on="success"), r, ok=True)
    assert not wanted(NotifyConfig(on="success"), {}, ok=False)
    assert wanted(NotifyConfig(on="always"), r, ok=True)
    nothing = {**r, "tiles_written": 0, "tiles_removed": 0}
    assert not wanted(NotifyConfig(on="always"), nothing, ok=True)
    assert wanted(NotifyConfig(on="always", skip_unchanged=False), nothing, ok=True)
    # no [notify] section (or no notify field yet): nothing happens
    assert notify_run(run["project"], r) == []
    assert notify_failure(run["project"], "update", RuntimeError("x")) == []


def test_config_from_toml():
    from tiledelta.config import ProjectConfig

    cfg = ProjectConfig.model_validate(
        {
            "style": "s.xml",
            "notify": {
                "on": "always",
                "email": {"host": "smtp.example.org", "sender": "a@b", "to": ["c@d"]},
                "webhook": {"url": "https://hooks.example/x", "kind": "teams"},
            },
        }
    )
    assert cfg.notify.email.port == 587 and cfg.notify.email.starttls
    assert cfg.notify.email.subject_prefix == "[tiledelta]"
