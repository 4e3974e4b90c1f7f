"""A TensorFlow Lite Micro firmware built from a release bundle and run on an emulated
Cortex-M4 (``qemu-system-arm -M mps2-an386``).

- :mod:`.settings`: where the third-party source archives are and where the unpacked
  trees and built libraries are cached (``firmware.sources`` / ``EDGEFLOW_THIRD_PARTY``);
- :mod:`.sources`: the TFLM tree and the libraries its Makefile downloads, unpacked from
  those archives and patched as TFLM's download scripts patch them, once per set of
  archives;
- :mod:`.library`: TFLM's static library for a core (cached by its make variables);
- :mod:`.build`: the firmware ELF of one bundle (its ``model_data.cc`` unchanged, a
  harness, a vector table, a linker script for the board);
- :mod:`.run`: the ELF run under qemu with semihosting, its output parsed into
  :class:`.run.FirmwareRun` (scores, accuracy, the arena needed, instructions per inference,
  text and data sizes);
- :mod:`.measure`: all of it for one bundle and a set of test images.

Here, not a step: the target kinds (``tasks.targets``) build and run firmware for their
benchmark, and a step may not be imported by the layer below it.
"""
