"""Which environment variables a user may give a sandbox, and what the platform's own execs clear.

A sandbox's `environment_variables` become the container's environment, and so the environment
of every process in it, the platform's agent runtime included (its `serve` process and each
health-check / tool exec, the health check running as `nobody`). A variable that makes a program
load code or read files it names would carry agent-written code into the platform's processes:
`LD_PRELOAD=/workspace/pre.so` loads a library the agent wrote into every exec. So:

- the API refuses such names (422 naming the variable) at sandbox create and config update;
- the worker drops them from the container it creates (a config stored before the rule), which
  also changes the container's env hash, so an older container holding one is re-created
  (keeping /workspace) at its next start/restart;
- every runtime exec (health, tools) overrides the loader's variables with empty values, so a
  container created before the rule cannot load anything into the runtime before that restart.

Refused (case-insensitive):
- `LD_*`: the dynamic loader (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...);
- GCONV_PATH, GETCONF_DIR, GLIBC_TUNABLES, LOCPATH, MALLOC_TRACE, NLSPATH: glibc loads modules or
  opens files they name (glibc ignores them in setuid programs for that reason);
- `PYTHON*`: the runtime runs `python3 -I`, which ignores them, but no runtime path should depend
  on that (PYTHONHOME/PYTHONPATH/PYTHONSTARTUP change what Python loads); an agent that wants
  PYTHONPATH sets it for its own command (`PYTHONPATH=src python3 ...`, run_command's `env`);
- `AINTANDEM_*`: the platform's own (the runtime reads AINTANDEM_WORKSPACE as the root its file
  tools are confined to, AINTANDEM_HEARTBEAT_FILE, the sandbox and workspace ids).

Allowed on purpose: PATH (the agent's own commands; the runtime is started through an absolute,
root-owned interpreter path and runs commands with /bin/sh by absolute path), HOME, TMPDIR, locale
and time zone variables, BASH_ENV/ENV (they only affect the agent's own shells).
"""

from __future__ import annotations

REFUSED_ENV_PREFIXES = ("LD_", "PYTHON", "AINTANDEM_")
REFUSED_ENV_NAMES = frozenset(
    {"GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "LOCPATH", "MALLOC_TRACE", "NLSPATH"}
)

# Set to "" in every runtime exec (an empty value is the same as unset for the loader and
# glibc): the code-loading variables a container created before the refusal may still hold.
# Docker cannot unset a container's variable for one exec, only override it.
LOADER_ENV = (
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "LD_DEBUG",
    "LD_DEBUG_OUTPUT",
    "LD_PROFILE",
    "LD_PROFILE_OUTPUT",
    "LD_ORIGIN_PATH",
    "LD_BIND_NOW",
    "LD_DYNAMIC_WEAK",
    "LD_HWCAP_MASK",
    "LD_USE_LOAD_BIAS",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "MALLOC_TRACE",
    "NLSPATH",
)


def refused_env_name(name: str) -> str | None:
    """Why a sandbox may not set `name` (None: it may)."""
    upper = name.upper()
    if upper in REFUSED_ENV_NAMES or upper.startswith("LD_"):
        return (
            f"{name} changes how programs load code; it would reach the platform's runtime, "
            "so it cannot be set for a sandbox"
        )
    if upper.startswith("PYTHON"):
        return (
            f"{name} changes what Python loads; set it for your own command instead "
            "(e.g. run_command's env)"
        )
    if upper.startswith("AINTANDEM_"):
        return f"{name} is reserved for the platform"
    return None


def allowed_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without the refused names (what the worker gives a container)."""
    return {k: v for k, v in env.items() if refused_env_name(k) is None}
