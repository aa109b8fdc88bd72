"""Structured logs: JSON lines that name the tenant and instance they concern, and no secret
in any line, at DEBUG, through a whole flow on a real gateway."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import started_gateway
from tests.messaging import FAST_POLICY, Messenger
from tests.server_process import ServerProcess
from tests.sim_client import SimClient
from zapgate.gateway.ops.logs import (
    about_instance,
    configure_logging,
    instance_fields,
    make_handler,
)
from zapgate.sessions.log_lines import QUIET_LOGGERS, JsonFormatter, mask_secrets, quiet_libraries
from zapgate.v1 import event_pb2, event_pb2_grpc
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import message_pb2 as mpb
from zapgate.v1 import simulator_pb2 as spb

FIELDS = {"time", "level", "logger", "message"}


@pytest.fixture
def debug_logs() -> Iterator[tuple[io.StringIO, io.StringIO, list[logging.LogRecord]]]:
    """Everything logged at DEBUG, as JSON lines, as text lines and as raw records."""
    json_out, text_out = io.StringIO(), io.StringIO()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handlers = [make_handler("json", json_out), make_handler("text", text_out), Keep()]
    saved = root.level, {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet_libraries()  # as configure_logging does
    try:
        yield json_out, text_out, records
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


def json_lines(out: io.StringIO) -> list[dict[str, str]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for line in lines:
        assert line.keys() >= FIELDS, line
    return lines


async def test_a_whole_flow_logs_no_secret_and_names_its_instance(
    tmp_path: Path,
    debug_logs: tuple[io.StringIO, io.StringIO, list[logging.LogRecord]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    json_out, text_out, records = debug_logs
    tenant = f"logs-{uuid.uuid4().hex[:8]}"
    marker = f"marker-{uuid.uuid4().hex}"
    inbound_marker = f"inbound-{uuid.uuid4().hex}"
    qr_codes: list[str] = []
    async with started_gateway(tmp_path) as running:
        key = await running.new_key(tenant)
        messenger = Messenger(SimClient(running.channel, key))
        client = messenger.client
        await client.create("flow")
        await messenger.set_policy("flow", FAST_POLICY)
        async for update in client.connect("flow"):
            if update.HasField("qr_code"):
                qr_codes.append(update.qr_code.code)
                await client.scan("flow", update.qr_code.code, "+5511900000009")
            if update.HasField("result"):
                break
        events = event_pb2_grpc.EventServiceStub(running.channel)
        stream = events.Subscribe(event_pb2.SubscribeRequest(), metadata=client.metadata)
        sent = await messenger.send_text("flow", "+5511988887777", f"Hi {marker}")
        await messenger.wait_message(
            "flow", sent.id, lambda m: m.state == mpb.MESSAGE_STATE_DELIVERED
        )
        await client.sim.InjectIncomingMessage(
            spb.InjectIncomingMessageRequest(
                instance_id="flow", from_phone="+5511977776666", text=inbound_marker
            ),
            metadata=client.metadata,
        )
        await client.instances.PauseSending(
            ipb.PauseSendingRequest(instance_id="flow"), metadata=client.metadata
        )
        seen = 0
        async for _ in stream:
            seen += 1
            if seen >= 5:
                break
        stream.cancel()
        initial_key = (tmp_path / "data" / "initial-api-key").read_text().strip()
        master_key = (tmp_path / "data" / "master.key").read_text().strip()
        await asyncio.sleep(0.3)  # let the keeper log its snapshots
    assert qr_codes

    worker_output = capfd.readouterr()
    secrets = {
        "API key": key,
        "API key secret": key.rsplit("_", 1)[1],
        "initial API key": initial_key,
        "master key": master_key,
        "message text": marker,
        "inbound message text": inbound_marker,
        "QR code": qr_codes[0],
    }
    everything = {
        "JSON log": json_out.getvalue(),
        "text log": text_out.getvalue(),
        "raw log messages": "\n".join(r.getMessage() for r in records),
        "worker processes": worker_output.out + worker_output.err,
    }
    for where, text in everything.items():
        assert text, f"nothing in the {where}"
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} is in the {where}"

    lines = json_lines(json_out)
    about_flow = [line for line in lines if f"{tenant}/flow" in line["message"]]
    assert about_flow
    for line in about_flow:  # every line about the instance says so in its fields
        assert (line.get("tenant"), line.get("instance_id")) == (tenant, "flow"), line
    messages = [line["message"] for line in lines if line.get("instance_id") == "flow"]
    assert any("INSTANCE_STATE_CONNECTED" in m for m in messages)
    assert any("sending paused" in m for m in messages)
    calls = [line for line in lines if line["message"].startswith("call started")]
    assert calls
    assert all(line["tenant"] for line in calls if f"tenant {tenant}" in line["message"])


def test_json_lines_carry_the_instance_from_context_or_extra() -> None:
    out = io.StringIO()
    log = logging.getLogger("zapgate.test.logs")
    handler = make_handler("json", out)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("outside")
        with about_instance("acme", "sales"):
            log.info("inside")
        log.info("explicit", extra=instance_fields("acme", "support"))
        try:
            raise RuntimeError("boom with zg_0123abcd_s3cr3t-value")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    outside, inside, explicit, failed = json_lines(out)
    assert "tenant" not in outside
    assert "instance_id" not in outside
    assert (inside["tenant"], inside["instance_id"]) == ("acme", "sales")
    assert (explicit["tenant"], explicit["instance_id"]) == ("acme", "support")
    assert failed["level"] == "ERROR"
    assert "RuntimeError" in failed["exception"]
    assert "s3cr3t" not in failed["exception"]
    assert inside["time"].endswith("Z")


def test_api_keys_are_masked_anywhere_in_a_line() -> None:
    assert mask_secrets("key zg_0011aabb_Xy-z9 used") == "key zg_0011aabb_<redacted> used"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", ("zg_1_abc",), None)
    assert "abc" not in JsonFormatter().format(record)


def test_configure_logging_replaces_the_handlers_and_quiets_sql_logging() -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        out = io.StringIO()
        configure_logging("debug", "json", out)
        assert root.level == logging.DEBUG
        assert logging.getLogger("sqlalchemy.engine").getEffectiveLevel() == logging.WARNING
        logging.getLogger("zapgate.test").debug("hello")
        assert json.loads(out.getvalue())["message"] == "hello"
        with pytest.raises(ValueError, match="log format"):
            configure_logging("INFO", "xml")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[1]:
            root.addHandler(handler)
        root.setLevel(saved[0])


async def test_zapgate_serve_log_format_json(tmp_path: Path) -> None:
    """The real command: every line, of the core and of its engine workers, is a JSON
    object."""
    server = ServerProcess(
        tmp_path / "data", "--engine", "sim", "--engine-workers", "1", "--log-format", "json"
    )
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        server.terminate()
        assert server.wait() == 0
        server.wait_for("zapgate stopped")
    finally:
        server.close()
    assert server.log
    for line in server.log:
        parsed = json.loads(line)
        assert parsed.keys() >= FIELDS, line
    initial_key = (tmp_path / "data" / "initial-api-key").read_text().strip()
    assert initial_key not in "".join(server.log)
