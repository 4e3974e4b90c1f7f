"""Coral Edge TPU: the full-int8 TFLite model compiled by ``edgetpu_compiler``.

When the compiler is on PATH it compiles ``model.tflite`` into
``model_edgetpu.tflite``; its log (ops mapped to the TPU against ops left on the CPU,
subgraphs, on-chip memory) is parsed into the variant's details. When it is missing
(it exists for x86-64 Linux only), the variant is skipped with that reason.

The compiled model needs the TPU to run, so the conversion check runs the int8 model it
was compiled from, on the CPU: the same quantised graph, the same numbers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from tasks.models.formats.base import Exported, ExportRequest, Format, Skipped
from tasks.models.formats.tflite import tflite_bytes, tflite_spec

COMPILER = "edgetpu_compiler"
OPERATOR_ROW = re.compile(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$")
SUMMARY = {
    "tpu_ops_reported": re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
    "cpu_ops_reported": re.compile(r"Number of operations that will run on CPU:\s*(\d+)"),
    "subgraphs": re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)"),
    "total_ops": re.compile(r"Total number of operations:\s*(\d+)"),
}
MEMORY = re.compile(r"On-chip memory used for caching model parameters:\s*(\S+)")


def parse_compiler_log(text: str) -> dict[str, Any]:
    """Ops mapped to the Edge TPU and left on the CPU, from the compiler's output."""
    operators = []
    for line in text.splitlines():
        row = OPERATOR_ROW.match(line.strip())
        if row and row.group(1) not in {"Operator"}:
            operators.append({"op": row.group(1), "count": int(row.group(2)),
                              "status": row.group(3)})
    tpu = sum(op["count"] for op in operators if op["status"].startswith("Mapped to Edge TPU"))
    cpu = sum(op["count"] for op in operators) - tpu
    parsed: dict[str, Any] = {"operators": operators, "tpu_ops": tpu, "cpu_ops": cpu}
    for key, pattern in SUMMARY.items():
        found = pattern.search(text)
        if found:
            parsed[key] = int(found.group(1))
    memory = MEMORY.search(text)
    if memory:
        parsed["on_chip_parameter_memory"] = memory.group(1)
    return parsed


def export_edgetpu(request: ExportRequest) -> Exported:
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise Skipped(f"{COMPILER} is not on PATH (Coral ships it for x86-64 Linux: "
                      "apt install edgetpu-compiler)")
    cpu_model = request.out_dir / "model.tflite"
    converted = tflite_bytes(request, "int8")
    cpu_model.write_bytes(converted.model)
    result = subprocess.run([compiler, "--show_operations", "--out_dir", str(request.out_dir),
                             str(cpu_model)], capture_output=True, text=True, timeout=600,
                            check=False)
    compiled = request.out_dir / "model_edgetpu.tflite"
    if result.returncode != 0 or not compiled.is_file():
        raise RuntimeError(f"{COMPILER} failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-300:]}")
    log_file = request.out_dir / "model_edgetpu.log"
    details = {**converted.details, **parse_compiler_log(result.stdout)}
    if not details["operators"] and log_file.is_file():
        # Without --show_operations output the per-op table lives in the log file only.
        table = parse_compiler_log(log_file.read_text())
        details.update(operators=table["operators"], tpu_ops=table["tpu_ops"],
                       cpu_ops=table["cpu_ops"])
    version = re.search(r"Edge TPU Compiler version (\S+)", result.stdout)
    details["compiler_version"] = version.group(1) if version else "unknown"
    extras = (cpu_model, log_file) if log_file.is_file() else (cpu_model,)
    return Exported(compiled, (compiled,), tflite_spec(cpu_model, request.source.input_shape),
                    details=details, check_file=cpu_model, check_runtime="tflite", extras=extras)


FORMAT = Format(name="edgetpu", suffix="_edgetpu.tflite", runtime="edgetpu", precisions=("int8",),
                export=export_edgetpu)
