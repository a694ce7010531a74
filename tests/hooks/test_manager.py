"""HookManager: order, chaining, provides, awaiting connect hooks, sync-only
message-path filters, and notification errors kept away from the broker."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from kushi.errors import ConfigurationError
from kushi.hooks.base import EVENTS, FILTER_EVENTS, Hook, PublishRejected
from kushi.hooks.manager import SYNC_ONLY_EVENTS, HookManager
from kushi.protocol.packets import Auth, Connect, Publish


class Recorder(Hook):
    """Appends its name to a shared list on on_published; tags payloads on on_publish."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.id = name
        self.calls = calls
        self.configs: list[Any] = []

    def init(self, config: Any) -> None:
        self.configs.append(config)

    def on_published(self, client: Any, packet: Publish) -> None:
        self.calls.append(self.id)

    def on_publish(self, client: Any, packet: Publish) -> Publish:
        return dataclasses.replace(packet, payload=bytes(packet.payload) + self.id.encode())


def test_provides_only_the_events_a_hook_overrides() -> None:
    manager = HookManager()
    assert not any(manager.provides(event) for event in EVENTS)
    manager.add(Recorder("a", []))
    assert manager.provides("on_publish") and manager.provides("on_published")
    assert not manager.provides("on_subscribe")
    assert not manager.provides("on_acl_check")
    assert not manager.provides("stored_clients")


def test_has_flags_answer_as_provides_for_every_event_as_hooks_and_functions_are_added() -> None:
    """``hooks.has.EVENT`` (read on the message path) never disagrees with ``provides(EVENT)``."""
    manager = HookManager()
    assert all(getattr(manager.has, event) is False for event in EVENTS)
    manager.add(Recorder("a", []))
    manager.on("on_acl_check", lambda client, topic, write: True)
    assert all(getattr(manager.has, event) is manager.provides(event) for event in EVENTS)
    assert manager.has.on_publish and manager.has.on_acl_check and not manager.has.on_subscribe
    with pytest.raises(AttributeError):
        manager.has.on_no_such_event   # a misspelt event fails loudly, never reads False


def test_a_plain_base_hook_provides_nothing() -> None:
    manager = HookManager()
    manager.add(Hook())
    assert not any(manager.provides(event) for event in EVENTS)


def test_hooks_and_functions_run_in_the_order_added(make_client) -> None:
    calls: list[str] = []
    manager = HookManager()
    manager.add(Recorder("a", calls))
    manager.on("on_published", lambda client, packet: calls.append("function"))
    manager.add(Recorder("b", calls))
    manager.on_published(make_client(), Publish("t"))
    assert calls == ["a", "function", "b"]


def test_filters_chain_the_value_from_hook_to_hook(make_client) -> None:
    manager = HookManager()
    manager.add(Recorder("a", []))
    manager.add(Recorder("b", []))
    seen = []
    manager.on("on_publish", lambda client, packet: seen.append(bytes(packet.payload)))  # returns None
    result = manager.on_publish(make_client(), Publish("t", b">"))
    assert seen == [b">ab"], "the third hook must see what the second returned"
    assert result.payload == b">ab", "a hook returning None leaves the value unchanged"


def test_on_select_subscribers_chains_the_subscriber_map() -> None:
    manager = HookManager()
    manager.on("on_select_subscribers", lambda subscribers, packet: {k: v for k, v in subscribers.items() if k != "x"})
    manager.on("on_select_subscribers", lambda subscribers, packet: {**subscribers, "z": 2})
    assert manager.on_select_subscribers({"x": 0, "y": 1}, Publish("t")) == {"y": 1, "z": 2}


def test_a_filter_exception_propagates_to_the_broker(make_client) -> None:
    def reject(client: Any, packet: Publish) -> Publish:
        raise PublishRejected(0x99)

    manager = HookManager()
    manager.on("on_publish", reject)
    with pytest.raises(PublishRejected) as raised:
        manager.on_publish(make_client(), Publish("t"))
    assert raised.value.reason_code == 0x99


def test_acl_check_needs_every_provider_and_stops_at_the_first_refusal(make_client) -> None:
    asked: list[str] = []

    def allow(client: Any, topic: str, write: bool) -> bool:
        asked.append("allow")
        return True

    def deny(client: Any, topic: str, write: bool) -> bool:
        asked.append("deny")
        return False

    manager = HookManager()
    manager.on("on_acl_check", allow)
    assert manager.on_acl_check(make_client(), "t", True) is True
    manager.on("on_acl_check", deny)
    manager.on("on_acl_check", allow)
    asked.clear()
    assert manager.on_acl_check(make_client(), "t", True) is False
    assert asked == ["allow", "deny"]


def test_acl_check_treats_a_missing_return_as_a_refusal(make_client) -> None:
    manager = HookManager()
    manager.on("on_acl_check", lambda client, topic, write: None)
    assert manager.on_acl_check(make_client(), "t", False) is False


@pytest.mark.parametrize("event", sorted(SYNC_ONLY_EVENTS))
def test_a_coroutine_for_on_packet_encode_is_refused(event: str) -> None:
    async def coroutine_hook(*args: Any) -> Any:
        return None

    manager = HookManager()
    with pytest.raises(ConfigurationError, match=f"but {event} must be a plain function: .+"):
        manager.on(event, coroutine_hook)
    assert not manager.provides(event)
    assert not manager.awaiting


def test_a_hook_class_with_a_coroutine_encode_filter_is_refused_whole() -> None:
    class AsyncEncode(Hook):
        def on_published(self, client: Any, packet: Publish) -> None:
            pass

        async def on_packet_encode(self, client: Any, packet: Any) -> Any:
            return packet

    manager = HookManager()
    with pytest.raises(ConfigurationError, match="on_packet_encode must be a plain function: it runs "
                                                 "inside every write"):
        manager.add(AsyncEncode())
    assert manager.hooks == []
    assert not manager.provides("on_published"), "a refused hook must not be half-added"


def test_every_filter_but_packet_encode_and_every_notification_accepts_coroutines() -> None:
    async def coroutine_hook(*args: Any) -> Any:
        return True

    manager = HookManager()
    for event in sorted(EVENTS - SYNC_ONLY_EVENTS):
        manager.on(event, coroutine_hook)
        assert manager.provides(event)
    assert FILTER_EVENTS - SYNC_ONLY_EVENTS == FILTER_EVENTS - {"on_packet_encode"}


def test_a_coroutine_message_path_filter_makes_the_manager_awaiting_and_tells_the_broker() -> None:
    async def acl(client: Any, topic: str, write: bool) -> bool:
        return True

    manager = HookManager()
    told: list[str] = []
    manager.when_awaiting(lambda: told.append("later"))
    manager.on("on_publish", lambda client, packet: packet)
    manager.on("on_disconnect", acl)        # a coroutine notification: not a filter
    assert not manager.awaiting and told == []
    manager.on("on_acl_check", acl)
    assert manager.awaiting and told == ["later"]
    manager.when_awaiting(lambda: told.append("now"))
    assert told == ["later", "now"]


def test_an_awaiting_manager_chains_plain_and_coroutine_hooks_in_the_order_added(make_client) -> None:
    async def add_b(client: Any, packet: Publish) -> Publish:
        await asyncio.sleep(0)
        return dataclasses.replace(packet, payload=packet.payload + b"b")

    manager = HookManager()
    manager.on("on_publish", lambda client, packet: dataclasses.replace(packet, payload=packet.payload + b"a"))
    manager.on("on_publish", add_b)
    manager.on("on_publish", lambda client, packet: dataclasses.replace(packet, payload=packet.payload + b"c"))
    client = make_client()
    given = Publish("t", b"-")
    result = asyncio.run(manager.resolve_chain("on_publish", client, given))
    assert result.payload == b"-abc"
    with manager.answering({"on_publish": (given, result)}):
        assert manager.on_publish(client, given) is result
    with manager.answering({"on_publish": (given, given)}):
        other = Publish("t", b"-")
        assert manager.on_publish(client, other) is other, "unchanged: the broker's own object back"


def test_an_awaiting_manager_answers_acl_from_what_was_prepared_and_refuses_the_rest(make_client) -> None:
    async def acl(client: Any, topic: str, write: bool) -> bool:
        return topic == "yes"

    manager = HookManager()
    manager.on("on_acl_check", acl)
    client = make_client()
    assert asyncio.run(manager.resolve_acl(client, "yes", True)) is True
    assert asyncio.run(manager.resolve_acl(client, "no", True)) is False
    answers = {manager.acl_key(client, "yes", False): True}
    with manager.answering(answers):
        assert manager.on_acl_check(client, "yes", False) is True
        assert manager.on_acl_check(client, "yes", True) is False, "not prepared: refused"
    assert manager.on_acl_check(client, "yes", False) is False, "outside answering: refused"


def test_unknown_event_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown hook event"):
        HookManager().on("on_pubilsh", lambda *args: None)


def test_connect_authenticate_awaits_coroutines_and_needs_every_provider(make_client) -> None:
    order: list[str] = []

    async def slow_yes(client: Any, packet: Connect) -> bool:
        await asyncio.sleep(0)
        order.append("slow_yes")
        return True

    async def slow_no(client: Any, packet: Connect) -> bool:
        await asyncio.sleep(0)
        order.append("slow_no")
        return False

    def sync_yes(client: Any, packet: Connect) -> bool:
        order.append("sync_yes")
        return True

    client, packet = make_client(), Connect(client_id="c")
    manager = HookManager()
    assert asyncio.run(manager.on_connect_authenticate(client, packet)) is True, "no provider: allowed"
    manager.on("on_connect_authenticate", slow_yes)
    manager.on("on_connect_authenticate", sync_yes)
    assert asyncio.run(manager.on_connect_authenticate(client, packet)) is True
    assert order == ["slow_yes", "sync_yes"]
    manager.on("on_connect_authenticate", slow_no)
    assert asyncio.run(manager.on_connect_authenticate(client, packet)) is False


def test_on_connect_first_refusal_wins_and_later_hooks_are_not_asked(make_client) -> None:
    asked: list[str] = []

    async def accept(client: Any, packet: Connect) -> int | None:
        asked.append("accept")
        return 0

    async def refuse(client: Any, packet: Connect) -> int:
        asked.append("refuse")
        return 0x9F

    def never(client: Any, packet: Connect) -> int:
        asked.append("never")
        return 0x87

    manager = HookManager()
    manager.on("on_connect", accept)
    assert asyncio.run(manager.on_connect(make_client(), Connect())) is None
    manager.on("on_connect", refuse)
    manager.on("on_connect", never)
    asked.clear()
    assert asyncio.run(manager.on_connect(make_client(), Connect())) == 0x9F
    assert asked == ["accept", "refuse"]


def test_on_auth_packet_first_hook_knowing_the_method_answers(make_client) -> None:
    class Unknown(Hook):
        pass  # the default answers 0x8C: not my method

    class Scram(Hook):
        async def on_auth_packet(self, client: Any, packet: Auth) -> Auth | int:
            return Auth(reason_code=0x18)

    manager = HookManager()
    assert asyncio.run(manager.on_auth_packet(make_client(), Auth())) == 0x8C
    manager.on("on_auth_packet", Unknown().on_auth_packet)
    manager.add(Scram())
    answer = asyncio.run(manager.on_auth_packet(make_client(), Auth()))
    assert isinstance(answer, Auth) and answer.reason_code == 0x18


def test_a_failing_notification_is_logged_and_the_next_hook_still_runs(make_client, caplog) -> None:
    calls: list[str] = []

    def broken(client: Any, packet: Publish) -> None:
        raise RuntimeError("hook bug")

    manager = HookManager()
    manager.on("on_published", broken)
    manager.add(Recorder("after", calls))
    with caplog.at_level(logging.ERROR, logger="kushi.hooks"):
        manager.on_published(make_client(), Publish("t"))
    assert calls == ["after"]
    assert any("on_published" in record.message and record.exc_info for record in caplog.records)


def test_coroutine_notifications_run_as_tasks_and_their_errors_are_logged(make_client, caplog) -> None:
    done = []

    class AsyncNotifier(Hook):
        async def on_disconnect(self, client: Any, error: BaseException | None, expire: bool) -> None:
            await asyncio.sleep(0)
            done.append(client.client_id)

    async def broken(client: Any, error: BaseException | None, expire: bool) -> None:
        raise RuntimeError("async hook bug")

    async def scenario() -> None:
        manager = HookManager()
        manager.add(AsyncNotifier())
        manager.on("on_disconnect", broken)
        manager.on_disconnect(make_client(client_id="gone"), None, True)  # returns without awaiting
        assert done == []
        await manager.wait_tasks()

    with caplog.at_level(logging.ERROR, logger="kushi.hooks"):
        asyncio.run(scenario())
    assert done == ["gone"]
    assert any("failed" in record.message and record.exc_info for record in caplog.records)


def test_a_coroutine_notification_outside_a_loop_is_skipped_and_logged(make_client, caplog) -> None:
    async def notifier(client_id: str) -> None:
        raise AssertionError("must not run")

    manager = HookManager()
    manager.on("on_client_expired", notifier)
    with caplog.at_level(logging.ERROR, logger="kushi.hooks"):
        manager.on_client_expired("c")
    assert any("no running event loop" in record.message for record in caplog.records)


def test_init_all_passes_each_hook_its_config_and_stop_all_survives_a_failure(caplog) -> None:
    stopped: list[str] = []

    class Stopper(Hook):
        def __init__(self, name: str, fail: bool) -> None:
            self.id, self.fail = name, fail

        def stop(self) -> None:
            stopped.append(self.id)
            if self.fail:
                raise RuntimeError("stop failed")

    first, second = Recorder("a", []), Recorder("b", [])
    manager = HookManager()
    manager.add(first, {"db": "one"})
    manager.add(second)
    assert first.configs == [] and second.configs == [], "add() must not call the hook"
    manager.init_all()
    assert first.configs == [{"db": "one"}] and second.configs == [None]

    manager.add(Stopper("x", fail=True))
    manager.add(Stopper("y", fail=False))
    with caplog.at_level(logging.ERROR, logger="kushi.hooks"):
        manager.stop_all()
    assert stopped == ["x", "y"]
    assert any("x" in record.message for record in caplog.records)


def test_reload_all_reports_a_hook_that_kept_its_old_rules() -> None:
    class Reloadable(Hook):
        def __init__(self, ok: bool) -> None:
            self.ok, self.reloaded = ok, 0

        def reload(self) -> bool:
            self.reloaded += 1
            return self.ok

    good, bad = Reloadable(True), Reloadable(False)
    manager = HookManager()
    manager.add(good)
    manager.add(Hook())
    assert manager.reload_all() is True
    manager.add(bad)
    assert manager.reload_all() is False
    assert (good.reloaded, bad.reloaded) == (2, 1)


def test_storage_loaders_concatenate_what_every_provider_returns() -> None:
    manager = HookManager()
    manager.on("stored_retained", lambda: [1, 2])

    async def from_a_database() -> list[int]:   # a loader may be a coroutine: it is awaited
        await asyncio.sleep(0)
        return [3]

    manager.on("stored_retained", from_a_database)
    manager.on("stored_retained", lambda: [4])
    assert asyncio.run(manager.stored_retained()) == [1, 2, 3, 4]
    assert asyncio.run(manager.stored_clients()) == []
