"""Prometheus metrics of one daemon: what operators graph and alert on.

Counters and histograms are fed as things happen (jobs, health checks, passes); gauges of the fleet
are read from the store at scrape time, so they are never stale and cost nothing between scrapes.
A registry per daemon keeps tests and several daemons in one process apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST  # what /metrics answers with

SCRIPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.resources = Gauge("reconciler_resources", "Resources by lifecycle status.", ["status"], registry=r)
        self.health = Gauge("reconciler_resources_health", "Live resources by health.", ["health"], registry=r)
        self.jobs = Counter("reconciler_jobs", "Finished jobs by action and outcome.", ["action", "outcome"],
                            registry=r)
        self.script = Histogram("reconciler_script_duration_seconds", "Wall time of script runs per job.",
                                ["action"], buckets=SCRIPT_BUCKETS, registry=r)
        self.checks = Counter("reconciler_health_checks", "Health checks by result.", ["result"], registry=r)
        self.check_latency = Histogram("reconciler_health_check_latency_seconds", "Latency of health checks.",
                                       buckets=CHECK_BUCKETS, registry=r)
        self.last_pass = Gauge("reconciler_last_pass_timestamp_seconds", "Unix time of the last reconcile pass.",
                               registry=r)
        self.load_errors = Gauge("reconciler_desired_load_errors",
                                 "Problems in desired/ right now (0 when it loads).", registry=r)
        self.load_failures = Counter("reconciler_desired_load_failures",
                                     "Passes whose desired/ failed to load.", registry=r)

        self._shown: dict[int, set[str]] = {}  # the labels each one-label family shows now (_replace)
        self._policy_families(r)
        self._rollout_families(r)
        self._halts: set[tuple[str, str, str]] = set()

    def _rollout_families(self, r: CollectorRegistry) -> None:
        """Rollouts (issue 17): open rollouts per state, and while one is halted, the failures that halted it
        (bounded: max_failures + 1 resources per halted rollout)."""
        self.rollouts = Gauge("reconciler_rollouts", "Open rollouts by state (running, paused, halted).", ["state"],
                              registry=r)
        self.rollout_failures = Gauge("reconciler_rollout_halt_failures", "Resources whose failure halted a "
                                      "rollout (1 while it stays halted).", ["rollout_id", "resource_id", "kind"],
                                      registry=r)

    def rollouts_seen(self, *, states: dict[str, int], failures: Iterable[tuple[str, str, str]]) -> None:
        """The open rollouts of the last tick, and the failures of the halted ones."""
        self._replace(self.rollouts, {state: float(count) for state, count in states.items()})
        now = set(failures)
        for labels in now:
            self.rollout_failures.labels(*labels).set(1)
        for labels in self._halts - now:  # replaced, not cleared first (a scrape in between would see none)
            self.rollout_failures.remove(*labels)
        self._halts = now

    def _policy_families(self, r: CollectorRegistry) -> None:
        """policy.yaml at work: quota use against limits per owner (owners, never resources: bounded), the
        resources held back per rule, refusals per rule (holds written and API calls refused)."""
        self.quota_used = Gauge("reconciler_quota_used", "Declared resources counted against the per-owner quota.",
                                ["owner"], registry=r)
        self.quota_limit = Gauge("reconciler_quota_limit", "The per-owner quota in force (owners with a limit).",
                                 ["owner"], registry=r)
        self.held = Gauge("reconciler_policy_held", "Resources the policy holds back now, by rule.", ["rule"],
                          registry=r)
        self.refusals = Counter("reconciler_policy_refusals", "Changes refused by the policy (a resource newly "
                                "held, an API call answered 403), by rule.", ["rule"], registry=r)
        self.policy_errors = Gauge("reconciler_policy_load_errors",
                                   "Problems in policy.yaml now (0 when it loads; the last good one is in force).",
                                   registry=r)

    def quota(self, *, used: dict[str, int], limits: dict[str, int]) -> None:
        """The per-owner quota use of the last pass (owners that left the fleet drop out)."""
        self._replace(self.quota_used, {owner: float(count) for owner, count in used.items()})
        self._replace(self.quota_limit, {owner: float(limit) for owner, limit in limits.items()})

    def holding(self, *, by_rule: dict[str, int]) -> None:
        self._replace(self.held, {rule: float(count) for rule, count in by_rule.items()})

    def _replace(self, gauge: Gauge, values: dict[str, float]) -> None:
        """Set a one-label gauge family to `values`, then drop the labels no longer there. Never cleared
        first: the API serves /metrics from another thread, and a scrape in between would see none."""
        for label, value in values.items():
            gauge.labels(label).set(value)
        shown = self._shown.setdefault(id(gauge), set())
        for label in shown - values.keys():
            gauge.remove(label)
        self._shown[id(gauge)] = set(values)

    def refused(self, *, rules: Iterable[str]) -> None:
        for rule in rules:
            self.refusals.labels(rule=rule).inc()

    def policy_loaded(self, *, problems: int) -> None:
        self.policy_errors.set(problems)

    def job_finished(self, *, action: str, ok: bool, duration: float) -> None:
        self.jobs.labels(action=action, outcome="succeeded" if ok else "failed").inc()
        self.script.labels(action=action).observe(duration)

    def checked(self, *, results: Iterable[Any]) -> None:
        for result in results:
            self.checks.labels(result="ok" if result.ok else "failed").inc()
            self.check_latency.observe(result.latency)

    def pass_done(self, *, at: float, problems: int) -> None:
        self.last_pass.set(at)
        self.load_errors.set(problems)
        if problems:
            self.load_failures.inc()

    def render(self, *, statuses: dict[str, int], health: dict[str, int]) -> bytes:
        for status, count in statuses.items():
            self.resources.labels(status=status).set(count)
        for name, count in health.items():
            self.health.labels(health=name).set(count)
        return generate_latest(self.registry)

