"""Security and shutdown: TLS binds, secrets kept out of logs and API output, SIGTERM drain."""

from __future__ import annotations

import datetime
import ipaddress
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.harness import (
    APP_TOKEN,
    CHANNEL,
    OPERATOR_TOKEN,
    Bridge,
    BridgeOptions,
    Receiver,
    wait_for,
)

PASSWORDS = ("cmcc-pw", "cucc-pw", "ctcc-pw", "cbn-pw", "intl-pw")


def _self_signed(tmp: Path, name: str) -> Path:
    """A PEM file holding a self-signed certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


class TestTls:
    def test_bind_over_tls_with_self_signed_smsc(self, tmp_path: Path, make_bridge: Callable[..., Bridge],
                                                 receiver: Receiver) -> None:
        """A TLS bind trusting the SMSC's self-signed certificate delivers; an untrusted one never binds."""
        smsc_cert = _self_signed(tmp_path, "smsc")
        other = _self_signed(tmp_path, "other")
        bridge = make_bridge(
            external_sim=True,
            sim_carrier_extra={"cmcc": f'tls_cert_file = "{smsc_cert}"', "cucc": f'tls_cert_file = "{smsc_cert}"'},
            carrier_extra={"cmcc": f'tls = true\ntls_ca_file = "{smsc_cert}"',
                           "cucc": f'tls = true\ntls_ca_file = "{other}"'},
            wait_bound=False,
        )
        wait_for(lambda: _bind_state(bridge, "cmcc-1").startswith("bound"), what="TLS bind")
        mid = bridge.send(["+8613812370001"])["result"][0]["smsMsgId"]
        assert wait_for(lambda: receiver.reports_for(mid), what="report")[0]["status"] == "DELIVRD"
        assert [s["text"] for s in bridge.submits("cmcc")] == ["[HUAWEI]Your code is 123456."]
        wait_for(lambda: _bind(bridge, "cucc-1")["reconnects"] >= 1 or _bind(bridge, "cucc-1")["errors"] >= 1,
                 what="the untrusted bind to fail")
        assert not _bind_state(bridge, "cucc-1").startswith("bound")


def _bind(bridge: Bridge, bind_id: str) -> dict:
    status, answer = bridge.request("GET", f"{bridge.api}/v1/binds", token=OPERATOR_TOKEN)
    return next(b for b in answer["binds"] if b["bind_id"] == bind_id)


def _bind_state(bridge: Bridge, bind_id: str) -> str:
    return _bind(bridge, bind_id)["state"].lower()


class TestSecrets:
    def test_no_secret_number_or_body_in_logs_or_api(self, bridge: Bridge, receiver: Receiver) -> None:
        """Passwords and tokens never appear; numbers and bodies are masked in logs by default."""
        number = "+8613812370101"
        secret_text = "Secret parcel code 7788"
        mid = bridge.send([number], body=secret_text)["result"][0]["smsMsgId"]
        other = bridge.send(["+8613812370102"], body=secret_text, callback=False)
        wait_for(lambda: receiver.reports_for(mid), what="report")
        status, _ = bridge.sim("POST", "/mo", {"carrier": "cmcc", "from": number[1:], "to": CHANNEL, "text": "T"})
        assert status == 200
        wait_for(lambda: receiver.acked("/uplink"), what="uplink")
        outputs = []
        for path in ("/v1/binds", "/v1/apps", "/v1/templates", "/healthz", "/metrics", f"/v1/sms/{mid}",
                     f"/v1/blacklist?channel={CHANNEL}"):
            outputs.append(str(bridge.request("GET", f"{bridge.api}{path}", token=OPERATOR_TOKEN)[1]))
        api_text = "\n".join(outputs)
        assert bridge.stop() == 0
        logs = bridge.log_text()
        assert "blacklist" in logs or "mo." in logs   # the log did record the activity
        for secret in (*PASSWORDS, APP_TOKEN, OPERATOR_TOKEN):
            assert secret not in logs, f"{secret!r} leaked into the logs"
            assert secret not in api_text, f"{secret!r} leaked into API output"
        for raw in (number, number[1:], "13812370101", secret_text, "8613812370102"):
            assert raw not in logs, f"{raw!r} appears unmasked in the logs"
        assert other["code"] == "000000"


class TestGracefulShutdown:
    def test_sigterm_refuses_intake_drains_and_resends_nothing(self, make_bridge: Callable[..., Bridge],
                                                              receiver: Receiver) -> None:
        """SIGTERM answers 503, lets in-flight submits finish, and a restart resends nothing acknowledged."""
        bridge = make_bridge(external_sim=True)
        bridge.sim("POST", "/faults", {"carrier": "cmcc", "mode": "slow", "latency_ms": [1500, 1500]})
        numbers = [f"+86138123702{i:02d}" for i in range(40)]
        ids = [r["smsMsgId"] for r in bridge.send(numbers)["result"]]
        wait_for(lambda: _bind(bridge, "cmcc-1")["in_flight"] > 0, what="submits in flight")
        assert bridge.proc is not None
        bridge.proc.send_signal(15)
        wait_for(lambda: _post_status(bridge) == 503, timeout=10, what="intake to answer 503 while draining")
        assert bridge.proc.wait(30) == 0
        bridge.sim("POST", "/faults", {"carrier": "cmcc", "mode": "none"})
        bridge.start()
        wait_for(lambda: all(receiver.reports_for(m) for m in ids), timeout=60, what="all reports")
        accepted = Counter(s["destination_addr"] for s in bridge.submits("cmcc") if s["status"] == 0)
        assert set(accepted) == {n[1:] for n in numbers}
        assert set(accepted.values()) == {1}, "a submit acknowledged before shutdown was sent again"


def _post_status(bridge: Bridge) -> int | None:
    try:
        return bridge.request("POST", f"{bridge.api}/v1/sms", {"from": CHANNEL, "to": ["+8613812379999"],
                                                               "body": "x"})[0]
    except OSError:
        return None


class TestAccessAndLimits:
    def test_oversized_body_is_refused_before_parsing(self, bridge: Bridge) -> None:
        """A body over api.max_body_bytes gets 413 from its Content-Length, and nothing is stored."""
        huge = b'{"from": "10690001", "to": ["+8613812345678"], "body": "' + b"x" * 2_000_000 + b'"}'
        status, answer = bridge.request("POST", f"{bridge.api}/v1/sms", raw=huge)
        assert status == 413 and answer["code"] == "E200017"

    def test_admin_calls_need_the_operator_token(self, bridge: Bridge) -> None:
        """Application tokens cannot list applications or the blacklist; the operator token can."""
        for path in ("/v1/apps", f"/v1/blacklist?channel={CHANNEL}"):
            assert bridge.request("GET", f"{bridge.api}{path}", token=APP_TOKEN)[0] == 401
            assert bridge.request("GET", f"{bridge.api}{path}", token=OPERATOR_TOKEN)[0] == 200
        assert bridge.request("GET", f"{bridge.api}/v1/binds", token=None)[0] == 401

    def test_other_applications_messages_are_invisible(self, bridge: Bridge) -> None:
        """A message id is only readable with its own application's token or the operator's."""
        mid = bridge.send(["+8613812370301"], callback=False)["result"][0]["smsMsgId"]
        assert bridge.request("GET", f"{bridge.api}/v1/sms/{mid}", token="not-a-token")[0] == 401
        assert bridge.request("GET", f"{bridge.api}/v1/sms/{mid}", token=OPERATOR_TOKEN)[0] == 200


class TestSignals:
    def test_sigint_stops_cleanly_even_when_started_ignoring_it(self, tmp_path: Path, receiver: Receiver) -> None:
        """A daemon launched in the background (SIGINT ignored) still stops cleanly on Ctrl-C."""
        import signal
        import subprocess
        import sys

        from tests.e2e.harness import write_config
        from tools.lab import read_ready_line

        cfg = write_config(tmp_path, receiver, BridgeOptions(), None)
        log = tmp_path / "sigint.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg)],
                                    stdout=subprocess.PIPE, stderr=err, cwd=tmp_path,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            read_ready_line(proc, 30, log.read_text)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
            assert "daemon.stopped" in log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
