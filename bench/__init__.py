"""AInTandem benchmarks: `python -m bench [--only NAME] [--quick] [--json PATH]`.

Each benchmark is one module under `bench/` registering an async function with
`bench.core.benchmark`; the runner (`bench.__main__`) starts the platform stack on demand
(`bench.stack`), runs them, prints one table (ours, baseline measured in the same run, ratio,
goal, verdict) with the machine it ran on, and writes the same as JSON.
"""
