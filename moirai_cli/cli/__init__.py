"""The `moirai` command line: commands that build a job from their options and hand it to an engine.

`app` is the Typer application, `main(argv)` runs it and returns the exit code, `run()` is the executable.
"""

import os

# Arrow's own allocator (mimalloc) held 25-40 MB more than the C library's in streamed runs of many
# series (benchmarks/README.md). Arrow reads this once, when pyarrow is first imported.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from moirai_cli.cli.app import app, main, run  # noqa: E402

__all__ = ["app", "main", "run"]
