"""Registry of export formats, by name.

A format knows its file suffix, the runtime that runs it (a key of the harness's
``RUNTIMES``), the precisions it supports and how to export a trained model at one of
them. ``params.yaml`` picks formats by name under ``formats:``; a bad name or precision
is a one-line error listing what is valid. Heavy libraries are imported inside each
exporter, so importing this registry stays cheap. What the exporters share is
:mod:`tasks.models.formats.base`, re-exported here.
"""

from __future__ import annotations

from tasks.models.formats.base import (EXECUTION_PRECISIONS, Exported, Exporter, ExportRequest,
                                       Format, QuantizationParams, Skipped, SourceModel,
                                       execution_precision, float_spec)

__all__ = ["EXECUTION_PRECISIONS", "FORMATS", "Exported", "Exporter", "ExportRequest", "Format",
           "QuantizationParams", "Skipped", "SourceModel", "execution_precision", "float_spec",
           "validate_format_matrix"]


def _registry() -> dict[str, Format]:
    from tasks.models.formats import edgetpu, onnx, openvino, tflite, tflm

    formats = (tflite.FORMAT, onnx.FORMAT, openvino.FORMAT, tflm.FORMAT, edgetpu.FORMAT)
    return {fmt.name: fmt for fmt in formats}


FORMATS: dict[str, Format] = _registry()


def validate_format_matrix(matrix: dict[str, list[str]]) -> None:
    """Raise ValueError naming the first unknown format or unsupported precision."""
    if not matrix:
        raise ValueError(f"at least one format is required (allowed: {', '.join(FORMATS)})")
    for name, precisions in matrix.items():
        if name not in FORMATS:
            raise ValueError(f"unknown format {name!r} (allowed: {', '.join(FORMATS)})")
        if not precisions:
            raise ValueError(f"format {name!r} lists no precision "
                             f"(supported: {', '.join(FORMATS[name].precisions)})")
        for precision in precisions:
            if precision not in FORMATS[name].precisions:
                raise ValueError(f"format {name!r} does not support precision {precision!r} "
                                 f"(supported: {', '.join(FORMATS[name].precisions)})")
        if len(set(precisions)) != len(precisions):
            raise ValueError(f"format {name!r} lists a precision twice")
