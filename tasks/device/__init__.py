"""Code that runs on boards: the benchmark harness (``harness``, its CLI, and the modules
it wires: ``runtimes``, ``tensors``, ``timing``, ``latency``, ``host``, ``conditions``,
``pipeline``, ``measure``), the release's predictor (``predict``, ``preprocess``), the
variant spec they read (``spec``), the kinds of task they score with (``kinds``, a
sub-package: the registry and one module per kind), and two scripts run by path
(``launch``, ``releases``).

The modules import each other relatively and nothing of edgeflow (the standard library,
NumPy, Pillow, one runtime), so the folder is the package ``tasks.device`` here and the
package ``edgeflow_device`` on a board; this file imports nothing. Only
:mod:`tasks.core.device_code` reaches it from the rest of edgeflow.
"""
