"""The demo controls' command table (light: the CLI lists it without loading Django)."""

from __future__ import annotations

DEFAULT_SLOW_S = 1.5
MAX_SLOW_S = 30.0

# command -> (arguments after the node, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "stop": ("", "stop the node (its server goes away, groups it led re-elect)"),
    "start": ("", "start a stopped node (empty KeyViz history, a new flush phase)"),
    "slow": ("[SECONDS]", f"answer every call SECONDS late (default {DEFAULT_SLOW_S:g})"),
    "heal": ("", "answer on time again"),
    "wrong-token": ("", "give the node a token the portal does not have"),
    "fix-token": ("", "give the node the demo's token back"),
    "keyviz-off": ("", "run the node without its KeyViz sampler"),
    "keyviz-on": ("", "give the node a fresh KeyViz sampler"),
    "phase": ("MS", "move the node's flush timer to MS into the step"),
}
