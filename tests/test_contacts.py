"""Contacts synced from the simulator's phone, searched and paged; number checks paced by the
instance's caps and cached; tenants isolated."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.conftest import RunningGateway
from tests.messaging import FAST_POLICY, Messenger
from tests.rpc import expect_error
from tests.sim_client import SimClient
from tests.test_events import subscribe, subscribed, take
from zapgate.v1 import contact_pb2 as pb
from zapgate.v1 import contact_pb2_grpc
from zapgate.v1 import event_pb2 as epb
from zapgate.v1 import instance_pb2 as ipb
from zapgate.v1 import simulator_pb2 as spb


class Contacts:
    """A tenant's view of ContactService and the simulated phone's address book."""

    def __init__(self, messenger: Messenger) -> None:
        self.messenger = messenger
        self.client = messenger.client
        self.stub = contact_pb2_grpc.ContactServiceStub(messenger.client.channel)
        self.metadata = messenger.metadata

    async def ready(self, instance_id: str, phone: str, **policy: object) -> None:
        """Connected, with the automatic sync after connecting done."""
        synced = subscribe(
            self.messenger, instance_ids=[instance_id], types=[epb.EVENT_TYPE_CONTACTS_SYNCED]
        )
        await self.messenger.ready(instance_id, phone, _policy(**policy))
        await take(synced, 1)

    async def set_phone_book(self, instance_id: str, *contacts: spb.SimContact) -> None:
        request = spb.SetContactsRequest(instance_id=instance_id, contacts=contacts)
        await self.client.sim.SetContacts(request, metadata=self.metadata)

    async def sync(self, instance_id: str) -> pb.SyncContactsResponse:
        request = pb.SyncContactsRequest(instance_id=instance_id)
        return await self.stub.SyncContacts(request, metadata=self.metadata)

    async def list(self, instance_id: str, **fields: object) -> pb.ListContactsResponse:
        request = pb.ListContactsRequest(instance_id=instance_id, **fields)  # type: ignore[arg-type]
        return await self.stub.ListContacts(request, metadata=self.metadata)

    async def check(self, instance_id: str, *phones: str) -> list[pb.NumberResult]:
        request = pb.CheckNumbersRequest(instance_id=instance_id, phones=phones)
        return list((await self.stub.CheckNumbers(request, metadata=self.metadata)).results)


def _policy(**fields: object) -> ipb.SendPolicy:
    policy = ipb.SendPolicy()
    policy.CopyFrom(FAST_POLICY)
    for name, value in fields.items():
        setattr(policy, name, value)
    return policy


def person(phone: str, full_name: str = "", **fields: str) -> spb.SimContact:
    return spb.SimContact(phone=phone, full_name=full_name, **fields)


@pytest.fixture
async def contacts(running: RunningGateway, tenant: str) -> Contacts:
    return Contacts(Messenger(await SimClient.for_tenant(running, tenant)))


def counts(reply: pb.SyncContactsResponse) -> tuple[int, int, int, int]:
    return reply.added, reply.updated, reply.unchanged, reply.removed


async def test_sync_adds_updates_and_removes_what_changed_on_the_phone(contacts: Contacts) -> None:
    await contacts.ready("book", "+5511960000001")
    ana, bruno, carla = (
        person("+5511960000101", "Ana Souza", first_name="Ana"),
        person("+5511960000102", "Bruno Lima", push_name="Bruninho"),
        person("+5511960000103", "", business_name="Carla Doces Ltda", lid="99887766"),
    )
    await contacts.set_phone_book("book", ana, bruno, carla)
    assert counts(await contacts.sync("book")) == (3, 0, 0, 0)
    listed = (await contacts.list("book")).contacts
    assert [c.phone for c in listed] == [ana.phone, bruno.phone, carla.phone]  # by name
    stored_carla = listed[2]
    assert stored_carla.jid == "5511960000103@s.whatsapp.net"
    assert stored_carla.lid == "99887766@lid"
    assert stored_carla.business_name == "Carla Doces Ltda"
    assert listed[1].push_name == "Bruninho"
    assert listed[0].first_name == "Ana"
    assert listed[0].sync_time.seconds > 0

    renamed = person(ana.phone, "Ana Souza Prado", first_name="Ana")
    dora = person("+5511960000104", "Dora")
    synced = await subscribed(
        contacts.messenger, only_new=True, types=[epb.EVENT_TYPE_CONTACTS_SYNCED]
    )
    await contacts.set_phone_book("book", carla, renamed, dora, renamed)  # a duplicate, too
    assert counts(await contacts.sync("book")) == (1, 1, 1, 1)
    [event] = await take(synced, 1)
    assert event.instance_id == "book"
    assert (event.contacts_synced.added, event.contacts_synced.removed) == (1, 1)
    names = [c.full_name or c.business_name for c in (await contacts.list("book")).contacts]
    assert names == ["Ana Souza Prado", "Carla Doces Ltda", "Dora"]


async def test_push_names_from_incoming_messages_become_contacts(contacts: Contacts) -> None:
    await contacts.ready("pushed", "+5511960000002")
    request = spb.InjectIncomingMessageRequest(
        instance_id="pushed", from_phone="+5511960000201", push_name="Zé da Esquina", text="oi"
    )
    await contacts.client.sim.InjectIncomingMessage(request, metadata=contacts.metadata)
    assert counts(await contacts.sync("pushed")) == (1, 0, 0, 0)
    [found] = (await contacts.list("pushed", query="ze da")).contacts
    assert found.push_name == "Zé da Esquina"
    assert found.phone == "+5511960000201"


async def test_set_contacts_keeps_push_names_learned_from_messages(contacts: Contacts) -> None:
    """SetContacts replaces the address book's saved names; push names the phone learned
    from incoming messages stay (docs/contacts.md), for people in the new book and not."""
    await contacts.ready("kept", "+5511960000003")
    for phone, push_name in (("+5511960000211", "Zé"), ("+5511960000212", "Lia")):
        request = spb.InjectIncomingMessageRequest(
            instance_id="kept", from_phone=phone, push_name=push_name, text="oi"
        )
        await contacts.client.sim.InjectIncomingMessage(request, metadata=contacts.metadata)
    await contacts.set_phone_book(
        "kept", person("+5511960000211", "José Souza"), person("+5511960000213", "Rui")
    )
    assert counts(await contacts.sync("kept")) == (3, 0, 0, 0)
    listed = {c.phone: (c.full_name, c.push_name) for c in (await contacts.list("kept")).contacts}
    assert listed == {
        "+5511960000211": ("José Souza", "Zé"),  # both names kept
        "+5511960000212": ("", "Lia"),  # not in the book: the push name alone
        "+5511960000213": ("Rui", ""),
    }

    await contacts.set_phone_book("kept")  # an empty address book
    assert counts(await contacts.sync("kept")) == (0, 1, 1, 1)
    listed = {c.phone: (c.full_name, c.push_name) for c in (await contacts.list("kept")).contacts}
    assert listed == {"+5511960000211": ("", "Zé"), "+5511960000212": ("", "Lia")}


async def test_search_ignores_case_and_accents_and_filters_by_phone_prefix(
    contacts: Contacts,
) -> None:
    await contacts.ready("search", "+5511960000003")
    await contacts.set_phone_book(
        "search",
        person("+5511960000301", "João Silva"),
        person("+5521960000302", "JOANA d'Arc"),
        person("+5511960000303", "Maria", push_name="Mãe"),
        person("+5511960000304", "100% Real_Name"),
    )
    await contacts.sync("search")

    async def phones(**fields: object) -> list[str]:
        return [c.phone for c in (await contacts.list("search", **fields)).contacts]

    assert await phones(query="joao") == ["+5511960000301"]
    assert await phones(query="JOÃO SIL") == ["+5511960000301"]
    assert await phones(query="jo") == ["+5521960000302", "+5511960000301"]  # JOANA < João
    assert await phones(query="mae") == ["+5511960000303"]  # the push name counts
    assert await phones(query="%") == ["+5511960000304"]  # a literal, not a wildcard
    assert await phones(query="_") == ["+5511960000304"]
    assert await phones(phone_prefix="+5521") == ["+5521960000302"]
    assert await phones(phone_prefix="55119600003", query="a") == [
        "+5511960000304",
        "+5511960000301",
        "+5511960000303",
    ]
    _, bad = await expect_error(
        contacts.list("search", phone_prefix="55-11"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [name for name, _ in bad] == ["phone_prefix"]


async def test_paging_over_a_thousand_contacts_is_complete_and_stable(
    contacts: Contacts,
) -> None:
    await contacts.ready("many", "+5511960000004")
    book = [person(f"+55119{n:08d}", f"Pessoa {n % 37:02d}") for n in range(1000)]
    await contacts.set_phone_book("many", *book)
    assert counts(await contacts.sync("many")) == (1000, 0, 0, 0)
    seen: list[pb.Contact] = []
    token = ""
    while True:
        page = await contacts.list("many", page_size=150, page_token=token)
        seen.extend(page.contacts)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 1000
    assert {c.phone for c in seen} == {p.phone for p in book}
    order = [(c.full_name.casefold(), c.jid) for c in seen]
    assert order == sorted(order)

    first = await contacts.list("many", page_size=10)
    _, bad = await expect_error(
        contacts.list("many", page_size=10, page_token=first.next_page_token, query="pessoa 01"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [name for name, _ in bad] == ["page_token"]


async def test_check_numbers_valid_invalid_unregistered_and_cached(contacts: Contacts) -> None:
    await contacts.ready("checks", "+5511960000005")
    request = spb.SetRegisteredNumbersRequest(
        instance_id="checks", phones=["+5511960000501", "+5511960000502"]
    )
    await contacts.client.sim.SetRegisteredNumbers(request, metadata=contacts.metadata)
    asked = ["+5511960000501", "12345", "+5511960000599", ""]
    on, invalid, off, empty = await contacts.check("checks", *asked)
    assert (on.phone, on.on_whatsapp, on.jid, on.cached) == (
        "+5511960000501",
        True,
        "5511960000501@s.whatsapp.net",
        False,
    )
    assert (invalid.error_reason, invalid.on_whatsapp) == ("invalid_phone", False)
    assert invalid.error
    assert (off.on_whatsapp, off.jid, off.error_reason) == (False, "", "")
    assert empty.error_reason == "invalid_phone"

    # Registered from now on: the cached answer still says no until its TTL passes.
    await contacts.client.sim.SetRegisteredNumbers(
        spb.SetRegisteredNumbersRequest(instance_id="checks"), metadata=contacts.metadata
    )
    again = await contacts.check("checks", "+5511960000599", "+5511960000501")
    assert [(r.on_whatsapp, r.cached) for r in again] == [(False, True), (True, True)]


async def test_the_lookup_cap_holds_under_a_burst(contacts: Contacts) -> None:
    await contacts.ready("burst", "+5511960000006", number_checks_per_minute=7)
    batches = [[f"+55119600{b:02d}{n:03d}" for n in range(3)] for b in range(6)]
    replies = await asyncio.gather(*(contacts.check("burst", *batch) for batch in batches))
    results = [r for reply in replies for r in reply]
    checked = [r for r in results if not r.error_reason]
    limited = [r for r in results if r.error_reason == "rate_limited"]
    assert len(checked) == 7
    assert len(limited) == 11
    assert all(0 < r.retry_after_seconds <= 60 for r in limited)
    # Cached answers cost nothing: the checked ones are answered again at once.
    again = await contacts.check("burst", *(r.phone for r in checked))
    assert all(r.cached and not r.error_reason for r in again)


async def test_contacts_and_checks_need_a_connected_instance(contacts: Contacts) -> None:
    await contacts.client.create("offline")
    for call in (contacts.sync("offline"), contacts.check("offline", "+5511960000701")):
        info, _ = await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION)
        assert info.reason == "INSTANCE_NOT_RUNNING"
    assert list((await contacts.list("offline")).contacts) == []


async def test_another_tenant_sees_no_contacts(running: RunningGateway, contacts: Contacts) -> None:
    await contacts.ready("private", "+5511960000008")
    await contacts.set_phone_book("private", person("+5511960000801", "Segredo"))
    await contacts.sync("private")
    other = Contacts(Messenger(await SimClient.for_tenant(running, "contacts-intruder")))
    info, _ = await expect_error(other.list("private"), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "INSTANCE_NOT_FOUND"
    await other.client.create("private")
    assert list((await other.list("private")).contacts) == []
    assert list((await contacts.list("private")).contacts) != []


async def test_deleting_an_instance_forgets_its_contacts_cache_and_lookup_budget(
    contacts: Contacts,
) -> None:
    await contacts.ready("again", "+5511960000009", number_checks_per_minute=2)
    await contacts.set_phone_book("again", person("+5511960000901", "Antiga"))
    await contacts.sync("again")
    first = await contacts.check("again", "+5511960000911", "+5511960000912")
    assert [r.error_reason for r in first] == ["", ""]
    assert (await contacts.check("again", "+5511960000913"))[0].error_reason == "rate_limited"

    await contacts.client.instances.DeleteInstance(
        ipb.DeleteInstanceRequest(instance_id="again"), metadata=contacts.metadata
    )
    await contacts.ready("again", "+5511960000009", number_checks_per_minute=2)
    assert list((await contacts.list("again")).contacts) == []
    again = await contacts.check("again", "+5511960000911", "+5511960000913")
    assert [(r.error_reason, r.cached) for r in again] == [("", False), ("", False)]


async def test_a_reconnect_soon_after_a_sync_does_not_sync_again(contacts: Contacts) -> None:
    await contacts.ready("steady", "+5511960000010")  # the first automatic sync is done
    await contacts.client.sim.DropConnection(
        spb.DropConnectionRequest(instance_id="steady"), metadata=contacts.metadata
    )
    await contacts.client.wait_for(
        "steady",
        lambda i: (
            i.state == ipb.INSTANCE_STATE_CONNECTED and i.state_reason == ipb.STATE_REASON_CONNECTED
        ),
    )
    await asyncio.sleep(0.5)  # room for a (wrong) automatic sync to start
    await contacts.set_phone_book("steady", person("+5511960001001", "Nova"))
    await contacts.sync("steady")
    log = subscribe(
        contacts.messenger, instance_ids=["steady"], types=[epb.EVENT_TYPE_CONTACTS_SYNCED]
    )
    first, second = await take(log, 2)
    assert first.contacts_synced.added == 0  # after the first connect: an empty book
    assert second.contacts_synced.added == 1  # the explicit sync came next, not another one
