"""Code that runs on boards (the benchmark harness): loaded by file path, never imported
as a package (see :mod:`tasks.core.device_code`)."""
