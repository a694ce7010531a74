#!/usr/bin/env python3
"""How much does finding the subscribers of a topic cost? (kushi.router micro-benchmark)

10,000 subscriptions shaped like an IoT deployment: 100 sites x 70 devices
subscribed exactly ("site/S/device/D/temp"), 2,000 one-level wildcards
("site/S/device/+/<metric>"), 1,000 multi-level ones ("site/S/#",
"site/S/device/D/#") and a few "#" / "$SYS/#" monitors. Topics are drawn from
the same sites and devices, so a topic matches about 12 subscriptions.

Measured in microseconds per call, as CPU time of this process (the machine
is shared, wall time would count the others), the best and the median of
--rounds:
  trie        SubscriptionTrie.match on every topic (no cache at all)
  cold        TopicMatcher.match on topics it has never seen (a cache miss each time)
  cached      TopicMatcher.match on topics already in its cache (the steady state)
  retained    RetainedStore.match of "site/S/device/+/temp" over 10,000 retained topics

    python benchmarks/router_micro.py [--rounds 5] [--topics 20000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from kushi.protocol.packets import Publish
from kushi.router import RetainedStore, SubscriptionTrie, TopicMatcher

SITES = 100
DEVICES = 70
METRICS = ("temp", "humidity", "power", "status")


def subscriptions(rng: random.Random) -> list[tuple[str, str]]:
    """(filter, client id) pairs: 10,000 of them."""
    subs = [(f"site/{s}/device/{d}/temp", f"dash-{s}-{d}")
            for s in range(SITES) for d in range(DEVICES)]
    subs += [(f"site/{rng.randrange(SITES)}/device/+/{rng.choice(METRICS)}", f"agg-{i}")
             for i in range(2000)]
    subs += [(f"site/{rng.randrange(SITES)}/#", f"site-log-{i}") for i in range(500)]
    subs += [(f"site/{rng.randrange(SITES)}/device/{rng.randrange(DEVICES)}/#", f"dev-log-{i}")
             for i in range(497)]
    subs += [("#", "monitor"), ("$SYS/#", "sys"), ("+/+/device/+/status", "status-board")]
    return subs


def topics(rng: random.Random, count: int) -> list[str]:
    return [f"site/{rng.randrange(SITES)}/device/{rng.randrange(DEVICES)}/{rng.choice(METRICS)}"
            for _ in range(count)]


def ns_per_call(function: Callable[[str], object], items: list[str]) -> float:
    start = time.process_time_ns()
    for item in items:
        function(item)
    return (time.process_time_ns() - start) / len(items)


def best_and_median(rounds: int, measure: Callable[[], float]) -> tuple[float, float]:
    samples = [measure() for _ in range(rounds)]
    return min(samples), statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--topics", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(7)
    subs = subscriptions(rng)

    trie = SubscriptionTrie()
    for filter, key in subs:
        trie.add(filter, key, None)
    probe = topics(rng, args.topics)
    matches_per_topic = sum(len(trie.match(topic)) for topic in probe) / len(probe)

    distinct = list(dict.fromkeys(probe))

    def cold() -> float:
        matcher = TopicMatcher(cache_size=len(probe) + 1)
        for filter, key in subs:
            matcher.add(filter, key, None)
        cost = ns_per_call(matcher.match, distinct)
        assert matcher.hits == 0
        return cost

    warm = TopicMatcher(cache_size=len(probe) + 1)
    for filter, key in subs:
        warm.add(filter, key, None)
    for topic in probe:
        warm.match(topic)

    store = RetainedStore()
    for topic in set(topics(rng, 10_000)):
        store.set(topic, Publish(topic, b"21.5", retain=True), 0.0)
    retained_filters = [f"site/{rng.randrange(SITES)}/device/+/temp" for _ in range(1000)]

    results = {
        "trie": best_and_median(args.rounds, lambda: ns_per_call(trie.match, probe)),
        "cold": best_and_median(args.rounds, cold),
        "cached": best_and_median(args.rounds, lambda: ns_per_call(warm.match, probe)),
        "retained": best_and_median(args.rounds, lambda: ns_per_call(
            lambda f: store.match(f, 1.0), retained_filters)),
    }
    print(f"{len(subs)} subscriptions, {len(probe)} topics, "
          f"{matches_per_topic:.1f} matching subscriptions per topic on average; "
          f"{len(store)} retained topics")
    print(f"  {'':9} {'best':>8} {'median':>8}  us per call")
    for name, (best, median) in results.items():
        print(f"  {name:9} {best / 1000:8.2f} {median / 1000:8.2f}")


if __name__ == "__main__":
    main()
