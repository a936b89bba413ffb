"""Our flows pickle by reference: "import this module, take this attribute", never by value.

Prefect cloudpickles a flow whenever it leaves the process: a served run started from memory
(`run_flow_in_subprocess`, flows/warm.py) and the flow run context of every task run sent to a
process pool or a Dask worker. A Flow's function is not what its module holds under its name (the
module holds the Flow), so cloudpickle copies the function by value, with the globals it uses; the
evaluate flow's include a ContextVar, which cannot be pickled, and the run or task crashes before
it starts. By reference, the other side imports the module (it needs our code anyway), and a
module-level object stays the one object it is there.
"""

from __future__ import annotations

import copyreg
import importlib
import sys
from typing import Any

# The flows that pickle by reference: id -> (module, attribute).
_BY_REFERENCE: dict[int, tuple[str, str]] = {}


def _import_flow(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _reduce_flow(flow: Any) -> Any:
    where = _BY_REFERENCE.get(id(flow))
    return (_import_flow, where) if where is not None else flow.__reduce_ex__(2)


def pickle_by_reference(flow: Any) -> bool:
    """Make `flow` pickle as "import this module, take this attribute"; False when it is not its
    module's attribute under its function's name, or does not round-trip that way."""
    import cloudpickle
    from prefect.flows import Flow

    module, name = getattr(flow.fn, "__module__", None), getattr(flow.fn, "__name__", None)
    if not module or not name or getattr(sys.modules.get(module), name, None) is not flow:
        return False
    _BY_REFERENCE[id(flow)] = (module, name)
    copyreg.pickle(Flow, _reduce_flow)
    try:
        return cloudpickle.loads(cloudpickle.dumps(flow)) is flow
    except Exception:  # noqa: BLE001 - not picklable this way: it stays as Prefect pickles it
        _BY_REFERENCE.pop(id(flow), None)
        return False
