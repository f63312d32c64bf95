"""Rollouts (issue 17): a large change set rolled across the fleet in health-gated waves.

`model` (policy, rollout, member, states), `plan` (pure: wave assignment, the plan's holds),
`machine` (pure: the transitions). The effects (store writes, jobs, health checks) are in
reconciler/rollouts.py, which the daemon and `apply` call.
"""
