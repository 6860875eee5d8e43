"""Benchmarks of oversync-sa against a real PostgreSQL; run them with ``python -m benchmarks``.

Every public module of this package (a name not starting with ``_``) that defines
``async def run(ctx: BenchContext) -> list[Measurement]`` is a benchmark; ``__main__`` finds
them itself, so adding a file is all it takes to register one (``OPT_IN = True`` keeps a module,
the soak, out of the default run). See ``README.md``.
"""
