"""SimulatorService: drives the phone side of the simulator engine. Only served with
`--engine sim`; on a real engine every call is UNIMPLEMENTED with a clear message."""

from __future__ import annotations

from typing import Any

import grpc.aio

from zapgate.engine.v1 import worker_pb2 as wpb
from zapgate.gateway.errors import FieldViolation, SimulatorDisabled
from zapgate.gateway.interceptor import current_tenant
from zapgate.gateway.services.convert import timestamp
from zapgate.gateway.supervisor import Supervisor
from zapgate.gateway.validation import check_instance_id, check_phone, raise_if_any
from zapgate.v1 import simulator_pb2 as pb
from zapgate.v1 import simulator_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_BAN_CODE = 101


class SimulatorService(simulator_pb2_grpc.SimulatorServiceServicer):
    def __init__(self, supervisor: Supervisor, enabled: bool) -> None:
        self._supervisor = supervisor
        self._enabled = enabled

    def _check(self, instance_id: str, violations: list[FieldViolation] | None = None) -> None:
        if not self._enabled:
            raise SimulatorDisabled()
        raise_if_any(check_instance_id("instance_id", instance_id) + (violations or []))

    async def _run(self, instance_id: str, action: wpb.SimulateRequest) -> None:
        await self._supervisor.simulate(current_tenant(), instance_id, action)

    async def ScanQr(self, request: pb.ScanQrRequest, context: Context) -> pb.ScanQrResponse:
        violations = check_phone("phone", request.phone)
        if not request.phone:
            violations.append(FieldViolation("phone", "required: the simulated phone's number"))
        if not request.code:
            violations.append(FieldViolation("code", "required: the QR code string shown"))
        self._check(request.instance_id, violations)
        scan = wpb.SimulateRequest.ScanQr(code=request.code, phone=request.phone)
        await self._run(request.instance_id, wpb.SimulateRequest(scan_qr=scan))
        return pb.ScanQrResponse()

    async def EnterPairCode(
        self, request: pb.EnterPairCodeRequest, context: Context
    ) -> pb.EnterPairCodeResponse:
        missing = [] if request.code else [FieldViolation("code", "required: the pair code")]
        self._check(request.instance_id, missing)
        entry = wpb.SimulateRequest.EnterPairCode(code=request.code)
        await self._run(request.instance_id, wpb.SimulateRequest(enter_pair_code=entry))
        return pb.EnterPairCodeResponse()

    async def DropConnection(
        self, request: pb.DropConnectionRequest, context: Context
    ) -> pb.DropConnectionResponse:
        self._check(request.instance_id)
        drop = wpb.SimulateRequest.DropConnection()
        await self._run(request.instance_id, wpb.SimulateRequest(drop_connection=drop))
        return pb.DropConnectionResponse()

    async def LogoutFromPhone(
        self, request: pb.LogoutFromPhoneRequest, context: Context
    ) -> pb.LogoutFromPhoneResponse:
        self._check(request.instance_id)
        logout = wpb.SimulateRequest.LogoutFromPhone()
        await self._run(request.instance_id, wpb.SimulateRequest(logout_from_phone=logout))
        return pb.LogoutFromPhoneResponse()

    async def TemporaryBan(
        self, request: pb.TemporaryBanRequest, context: Context
    ) -> pb.TemporaryBanResponse:
        bad = request.expires_in_seconds <= 0
        self._check(
            request.instance_id, [FieldViolation("expires_in_seconds", "must be positive")] * bad
        )
        ban = wpb.SimulateRequest.TemporaryBan(
            code=request.code or DEFAULT_BAN_CODE, expires_in_seconds=request.expires_in_seconds
        )
        await self._run(request.instance_id, wpb.SimulateRequest(temporary_ban=ban))
        return pb.TemporaryBanResponse()

    async def StreamReplaced(
        self, request: pb.StreamReplacedRequest, context: Context
    ) -> pb.StreamReplacedResponse:
        self._check(request.instance_id)
        replaced = wpb.SimulateRequest.StreamReplaced()
        await self._run(request.instance_id, wpb.SimulateRequest(stream_replaced=replaced))
        return pb.StreamReplacedResponse()

    async def FailSends(
        self, request: pb.FailSendsRequest, context: Context
    ) -> pb.FailSendsResponse:
        violations = [v for phone in request.phones for v in check_phone("phones", phone)]
        if request.code not in ("", "not_on_whatsapp", "463"):
            violations.append(FieldViolation("code", 'one of "not_on_whatsapp", "463", ""'))
        self._check(request.instance_id, violations)
        failing = wpb.SimulateRequest.FailSends(phones=list(request.phones), code=request.code)
        await self._run(request.instance_id, wpb.SimulateRequest(fail_sends=failing))
        return pb.FailSendsResponse()

    async def ListReceived(
        self, request: pb.ListReceivedRequest, context: Context
    ) -> pb.ListReceivedResponse:
        self._check(request.instance_id)
        received = await self._supervisor.phone_log(current_tenant(), request.instance_id)
        return pb.ListReceivedResponse(
            messages=[
                pb.ReceivedMessage(
                    recipient_jid=r.recipient_jid,
                    kind=r.kind,
                    text=r.text,
                    whatsapp_message_id=r.message_id,
                    receive_time=timestamp(int(r.received_at * 1e6)),
                    media_size=r.media_size,
                    media_sha256=r.media_sha256,
                )
                for r in received
            ]
        )

    async def SetKeepAlive(
        self, request: pb.SetKeepAliveRequest, context: Context
    ) -> pb.SetKeepAliveResponse:
        self._check(request.instance_id)
        keep_alive = wpb.SimulateRequest.KeepAlive(failing=request.failing)
        await self._run(request.instance_id, wpb.SimulateRequest(keep_alive=keep_alive))
        return pb.SetKeepAliveResponse()
