"""A seeded chaos campaign against the whole system (issue 13): real daemons, real scripts, real stores.

Hand-written fault tests find the combinations someone thought of. This package builds a throwaway
world (a git repository of desired files, recording scripts, SQLite or a real PostgreSQL), runs a
random but seeded schedule of operations and faults against `reconciler`, and checks the invariants
after every step and once the faults stop. A seed fixes the schedule, not the timing: a failure is
confirmed by replaying its seed, and shrunk by dropping steps while some replay still fails.

    python -m chaos --seed 7 --steps 60 --backend sqlite
"""
