"""The policy's metric families are replaced, never cleared first: a scrape from the API's thread between
two passes must not find the quota families empty (issue 15 point 6)."""

from __future__ import annotations

from prometheus_client import generate_latest

from reconciler.metrics import Metrics


def quota_lines(metrics: Metrics) -> list[str]:
    return [line for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith(("reconciler_quota", "reconciler_policy_held"))]


def test_owners_that_leave_drop_out_and_the_rest_keep_their_values() -> None:
    metrics = Metrics()
    metrics.quota(used={"acme": 2, "globex": 1}, limits={"acme": 5})
    metrics.holding(by_rule={"quotas.per_owner": 1})
    assert quota_lines(metrics) == ['reconciler_quota_used{owner="acme"} 2.0',
                                    'reconciler_quota_used{owner="globex"} 1.0',
                                    'reconciler_quota_limit{owner="acme"} 5.0',
                                    'reconciler_policy_held{rule="quotas.per_owner"} 1.0']
    metrics.quota(used={"acme": 3}, limits={})
    metrics.holding(by_rule={})
    assert quota_lines(metrics) == ['reconciler_quota_used{owner="acme"} 3.0']


def test_a_scrape_while_a_pass_replaces_the_values_never_sees_the_family_empty() -> None:
    """Replacing writes the new values before it removes the stale ones, so at no instant is acme missing."""
    metrics = Metrics()
    metrics.quota(used={"acme": 1}, limits={"acme": 5})
    seen: list[bool] = []
    original = metrics.quota_used.remove

    def remove_and_look(*labels: str) -> None:
        seen.append(any('owner="acme"' in line for line in quota_lines(metrics)))
        original(*labels)

    metrics.quota_used.remove = remove_and_look  # type: ignore[method-assign]  # observe the moment of removal
    metrics.quota(used={"acme": 2}, limits={"acme": 5})
    metrics.quota(used={"acme": 2, "old": 1}, limits={"acme": 5})
    metrics.quota(used={"acme": 2}, limits={"acme": 5})
    assert seen == [True]
