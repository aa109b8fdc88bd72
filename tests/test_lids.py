"""Phone numbers and LIDs: ContactService.ResolveJids over the simulator's LID map (set with
SetLidMappings, learned from messages and from the phone's contacts), bad input, a
disconnected instance, tenants isolated; and the neonize side's JIDs and answers, built with
neonize's own protobufs."""

from __future__ import annotations

import warnings
from typing import Any

import grpc
import pytest

from tests.conftest import RunningGateway
from tests.messaging import Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_contacts import Contacts, person
from tests.test_inbound import inject
from zapgate.sessions import neonize_calls, neonize_lids
from zapgate.v1 import contact_pb2 as pb
from zapgate.v1 import simulator_pb2 as spb

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.proto import Neonize_pb2 as npb

ANA, ANA_JID, ANA_LID = "+5511950000001", "5511950000001@s.whatsapp.net", "11122233344455@lid"
BIA, BIA_JID, BIA_LID = "+5511950000002", "5511950000002@s.whatsapp.net", "66677788899900@lid"
CAIO, CAIO_JID, CAIO_LID = "+5511950000003", "5511950000003@s.whatsapp.net", "22233344455566@lid"
NOBODY_JID, NOBODY_LID = "5511950000099@s.whatsapp.net", "99999999999999@lid"


@pytest.fixture
async def contacts(running: RunningGateway, tenant: str) -> Contacts:
    return Contacts(Messenger(await SimClient.for_tenant(running, tenant)))


async def resolve(contacts: Contacts, instance_id: str, *jids: str) -> list[pb.ResolvedJid]:
    request = pb.ResolveJidsRequest(instance_id=instance_id, jids=jids)
    return list((await contacts.stub.ResolveJids(request, metadata=contacts.metadata)).results)


async def set_lids(contacts: Contacts, instance_id: str, **lids: str) -> None:
    mappings = [spb.LidMapping(phone=phone, lid=lid) for phone, lid in lids.items()]
    request = spb.SetLidMappingsRequest(instance_id=instance_id, mappings=mappings)
    await contacts.client.sim.SetLidMappings(request, metadata=contacts.metadata)


async def test_both_ways_from_mappings_messages_and_contacts(contacts: Contacts) -> None:
    await contacts.ready("lids", "+5511950000900")
    await set_lids(contacts, "lids", **{ANA: ANA_LID.split("@")[0]})
    await inject(contacts.messenger, "lids", from_phone=BIA, from_lid="66677788899900", text="oi")
    await contacts.set_phone_book("lids", person(CAIO, "Caio", lid="22233344455566"))
    results = await resolve(
        contacts, "lids", ANA_JID, BIA_LID, CAIO_JID, CAIO_LID, NOBODY_JID, NOBODY_LID
    )
    assert results == [
        pb.ResolvedJid(jid=ANA_JID, phone_jid=ANA_JID, lid=ANA_LID, found=True),
        pb.ResolvedJid(jid=BIA_LID, phone_jid=BIA_JID, lid=BIA_LID, found=True),
        pb.ResolvedJid(jid=CAIO_JID, phone_jid=CAIO_JID, lid=CAIO_LID, found=True),
        pb.ResolvedJid(jid=CAIO_LID, phone_jid=CAIO_JID, lid=CAIO_LID, found=True),
        pb.ResolvedJid(jid=NOBODY_JID, phone_jid=NOBODY_JID, found=False),
        pb.ResolvedJid(jid=NOBODY_LID, lid=NOBODY_LID, found=False),
    ]


async def test_bad_jids_are_field_violations(contacts: Contacts) -> None:
    await contacts.client.create("lids-bad")
    cases = [
        ((), "jids"),
        (("+5511950000001",), "jids[0]"),
        ((ANA_JID, "5511950000001:3@s.whatsapp.net"), "jids[1]"),
        (("120363025246125486@g.us",), "jids[0]"),
        (("ana@lid",), "jids[0]"),
        ((ANA_JID,) * 501, "jids"),
    ]
    for jids, field in cases:
        _, bad = await expect_error(
            resolve(contacts, "lids-bad", *jids), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert field in [name for name, _ in bad], jids
    request = spb.SetLidMappingsRequest(
        instance_id="lids-bad", mappings=[spb.LidMapping(phone=ANA, lid="12ab")]
    )
    _, bad = await expect_error(
        contacts.client.sim.SetLidMappings(request, metadata=contacts.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [name for name, _ in bad] == ["mappings[0].lid"]


async def test_a_disconnected_instance_cannot_resolve(contacts: Contacts) -> None:
    await contacts.client.create("lids-offline")
    info, _ = await expect_error(
        resolve(contacts, "lids-offline", ANA_JID), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert info.reason == "INSTANCE_NOT_RUNNING"


async def test_another_tenant_neither_reads_nor_sets_the_map(
    running: RunningGateway, contacts: Contacts
) -> None:
    await contacts.ready("lids-private", "+5511950000901")
    await set_lids(contacts, "lids-private", **{ANA: "11122233344455"})
    other = Contacts(Messenger(await SimClient.for_tenant(running, "lids-intruder")))
    for call in (
        resolve(other, "lids-private", ANA_JID),
        set_lids(other, "lids-private", **{ANA: "1"}),
    ):
        info, _ = await expect_error(call, grpc.StatusCode.NOT_FOUND)
        assert info.reason == "INSTANCE_NOT_FOUND"
    # Its own instance of the same id knows nothing of the first tenant's map.
    await other.ready("lids-private", "+5511950000902")
    [result] = await resolve(other, "lids-private", ANA_JID)
    assert not result.found
    [own] = await resolve(contacts, "lids-private", ANA_JID)
    assert own.lid == ANA_LID


# -- the neonize side, offline -----------------------------------------------------------------


def test_a_jid_becomes_a_neonize_jid_that_go_can_read() -> None:
    for text, user, server in (
        (ANA_JID, "5511950000001", "s.whatsapp.net"),
        (BIA_LID, "66677788899900", "lid"),
    ):
        jid = neonize_lids.to_neonize(text)
        # Serializing raises, as Go's Marshal would refuse it, if a required field is unset.
        again = npb.JID.FromString(jid.SerializeToString())
        assert (again.User, again.Server, again.Device, again.IsEmpty) == (user, server, 0, False)


class LidMap:
    """neonize's client as far as its LID map goes (GetLIDFromPN / GetPNFromLID answers are
    neonize JIDs; an unknown user is the empty JID)."""

    def __init__(self, lids: dict[str, str]) -> None:
        self._lids = lids
        self._phones = {lid: phone for phone, lid in lids.items()}

    def get_lid_from_pn(self, jid: Any) -> Any:
        return self._answer(self._lids.get(f"{jid.User}@{jid.Server}", ""))

    def get_pn_from_lid(self, jid: Any) -> Any:
        return self._answer(self._phones.get(f"{jid.User}@{jid.Server}", ""))

    @staticmethod
    def _answer(text: str) -> Any:
        user, _, server = text.partition("@")
        return npb.JID(
            User=user, RawAgent=0, Device=0, Integrator=0, Server=server, IsEmpty=not user
        )


def test_the_lid_map_answers_in_the_order_asked() -> None:
    client = LidMap({ANA_JID: ANA_LID})
    asked = [ANA_LID, NOBODY_JID, ANA_JID, ANA_LID]
    found = neonize_calls.alternates(
        client, [neonize_lids.to_neonize(jid) for jid in dict.fromkeys(asked)]
    )
    assert neonize_lids.in_order(asked, found) == [ANA_JID, "", ANA_LID, ANA_JID]
