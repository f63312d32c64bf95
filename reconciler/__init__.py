"""reconciler: turn a trusted, idempotent provisioning script into a self-healing declarative fleet.

Kept empty of imports on purpose: every command pays only for the modules it uses.
"""

__version__ = "0.1.0"
