"""The three-tier chain, pure; and the router's checks against a registry."""

from __future__ import annotations

from decimal import Decimal

import pytest

from providers.echo import EchoProvider
from providers.registry import Backend, Registry
from server.errors import UnknownModel
from server.routing import Facts, Router, Rule, address, auto_route, choose


def test_the_chain_picks_the_first_tier_that_names_a_model_and_keeps_the_rest_as_fallbacks() -> None:
    c = choose("openai:a", "anthropic:b", "echo:echo")
    assert (c.model, c.tier, c.fallbacks) == ("openai:a", "message", (("anthropic:b", "conversation"),
                                                                       ("echo:echo", "system")))
    c = choose(None, "anthropic:b", "echo:echo")
    assert (c.model, c.tier, c.fallbacks) == ("anthropic:b", "conversation", (("echo:echo", "system"),))
    c = choose(None, None, "echo:echo")
    assert (c.model, c.tier, c.fallbacks) == ("echo:echo", "system", ())


def test_a_lower_tier_naming_a_model_already_chosen_is_no_fallback() -> None:
    c = choose("echo:echo", "echo:echo", "echo:echo")
    assert (c.tier, c.fallbacks) == ("message", ())
    c = choose("openai:a", "echo:echo", "openai:a")
    assert c.fallbacks == (("echo:echo", "conversation"),)


def test_the_router_uses_the_registrys_current_default_for_the_system_tier() -> None:
    registry = Registry("echo:echo")
    router = Router(registry)
    assert router.choose(None, None).model == "echo:echo"
    registry.default_model_id = "echo:other"
    assert router.choose(None, None).model == "echo:other"


def test_unknown_or_malformed_model_ids_are_the_contracts_unknown_model() -> None:
    registry = Registry("echo:echo")
    registry.add(Backend("echo", "Echo", "echo", EchoProvider(delay=0), ["echo"]))
    router = Router(registry)
    router.check("echo:echo")
    assert router.resolve("echo:echo")[1] == "echo"
    for bad in ("echo:nope", "nope:echo", "no colon"):
        with pytest.raises(UnknownModel) as info:
            router.check(bad)
        assert info.value.code == "unknown_model" and info.value.details == {"model": bad}
        with pytest.raises(UnknownModel):
            router.resolve(bad)


ALIASES = {"claude": "anthropic:claude-x", "llama": "client:1:llama3.1"}


@pytest.mark.parametrize(("text", "addressed", "model"), [
    ("hello there", False, None),
    ("@ai what do you think?", True, None),
    ("what do you think, @AI?", True, None),
    ("@claude summarize", True, "anthropic:claude-x"),
    ("ok @llama. then @claude", True, "client:1:llama3.1"),  # the first alias named wins
    ("@ai and @claude", True, "anthropic:claude-x"),  # an alias beats the plain @ai
    ("mail me at bob@claude.example", False, None),  # inside an email address: no mention
    ("@@claude", False, None),
    ("@claudette", False, None),  # not an alias, not @ai
    ("(@claude-)", True, "anthropic:claude-x"),  # trailing punctuation is not part of the name
])
def test_mentions_address_the_ai_and_an_alias_names_its_model(text: str, addressed: bool, model: str | None) -> None:
    found = address(text, ALIASES)
    assert (found.addressed, found.model) == (addressed, model)


def test_a_mention_sets_the_message_tier_as_mention_with_the_lower_tiers_as_fallbacks() -> None:
    c = choose("anthropic:claude-x", "echo:echo", "echo:echo", "mention")
    assert (c.model, c.tier, c.fallbacks) == ("anthropic:claude-x", "mention", (("echo:echo", "conversation"),))


RULES = (
    Rule("anthropic:claude-x", contains_code=True),
    Rule("openai:big", min_chars=200, reason="long question"),
    Rule("client:1:llama3.1", pattern=r"\bquick\b"),
    Rule("openai:small"),
)


@pytest.mark.parametrize(("text", "model", "reason"), [
    ("```py\nprint(1)\n```", "anthropic:claude-x", "contains code"),
    ("def f(x):\n    return x", "anthropic:claude-x", "contains code"),
    ("why is the sky blue? " * 20, "openai:big", "long question"),
    ("a quick one: hi", "client:1:llama3.1", r"matches /\bquick\b/"),
    ("hello", "openai:small", "default rule"),
])
def test_auto_routing_takes_the_first_rule_that_holds(text: str, model: str, reason: str) -> None:
    assert auto_route(text, RULES, Facts(lambda m: True)) == (model, reason)


def test_auto_routing_skips_models_that_are_not_usable_now() -> None:
    assert auto_route("```x```", RULES, Facts(lambda m: m != "anthropic:claude-x")) == ("openai:small", "default rule")
    down = {"anthropic:claude-x", "openai:small"}
    assert auto_route("```x```", RULES, Facts(lambda m: m not in down)) is None  # nothing usable: the next tier


def test_auto_in_the_chain_reports_the_tier_that_named_it_and_why() -> None:
    def route(auto_id: str) -> tuple[str, str] | None:
        return auto_route("```code```", RULES, Facts(lambda m: True))

    c = choose(None, "auto", "echo:echo", route=route)
    assert (c.model, c.tier, c.reason, c.fallbacks) == ("anthropic:claude-x", "conversation", "contains code",
                                                        (("echo:echo", "system"),))


def test_a_rule_over_several_models_picks_the_cheapest_usable_one_within_its_speed_target() -> None:
    rule = Rule(models=("a:fast-dear", "b:fast-cheap", "c:slow-cheapest", "d:unknown-speed"), max_ttft_ms=500)
    speed = {"a:fast-dear": 200.0, "b:fast-cheap": 450.0, "c:slow-cheapest": 900.0}
    price = {"a:fast-dear": Decimal("0.02"), "b:fast-cheap": Decimal("0.001"), "c:slow-cheapest": Decimal("0.0001"),
             "d:unknown-speed": Decimal(0)}
    facts = Facts(lambda m: True, speed.get, price.get)
    assert auto_route("hi", (rule,), facts) == ("b:fast-cheap", "cheapest under 500 ms to first token")
    down = Facts(lambda m: m != "b:fast-cheap", speed.get, price.get)
    assert auto_route("hi", (rule,), down) == ("a:fast-dear", "cheapest under 500 ms to first token")
    none_fast = Facts(lambda m: m in ("c:slow-cheapest", "d:unknown-speed"), speed.get, price.get)
    assert auto_route("hi", (rule,), none_fast) is None  # no figures is not fast: the next rule or tier
