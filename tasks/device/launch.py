"""Runs an entry module of the device code shipped beside this file, as a module of its
package (never imported here as ``tasks.device.launch``: it is shipped, and run by path).

On a board the device code is the package folder ``edgeflow_device/`` (this folder, the
modules that import each other relatively: they run as modules of a package, never as
loose scripts). A copy of this file named after an entry module sits beside that folder
(``harness.py`` in a benchmark's run folder, ``predict.py`` in a release), so

    python harness.py ARGS           runs edgeflow_device.harness's main() on ARGS
    python predict.py IMAGE...       runs edgeflow_device.predict's main()
    from predict import Model        (this copy's folder on sys.path) gives the names
                                     of edgeflow_device.predict

Standard library only.
"""

import importlib
import os
import sys

PACKAGE = "edgeflow_device"  # tasks.core.device_code.SHIPPED_PACKAGE

_folder = os.path.dirname(os.path.abspath(__file__))
if _folder not in sys.path:
    sys.path.insert(0, _folder)
_entry = importlib.import_module(f"{PACKAGE}.{os.path.splitext(os.path.basename(__file__))[0]}")
globals().update({name: value for name, value in vars(_entry).items()
                  if not name.startswith("__")})


def __getattr__(name: str) -> object:
    # The names the entry module gives only when asked (predict's ``ImageError``: its
    # pre-processing is imported once a release is verified, not at load).
    return getattr(_entry, name)


if __name__ == "__main__":
    sys.exit(_entry.main())
