"""Parameter types of the flows' Prefect UI forms: what renders as a dropdown, and its help text.

Prefect builds a deployment's form from the flow's signature: a `Literal` becomes a dropdown, a
pydantic model a sub-form with its fields' titles and descriptions, and the Google-style `Args:`
of the docstring the description of each plain parameter (Prefect titles those with their names).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

# The bundled frameworks (policy/frameworks/*.yaml; tests/test_ui_forms.py keeps the two in step).
# A policy file path is accepted too, so the type is this dropdown or free text; the branch titles
# label the UI's switch between the two (untitled, both read "str").
BundledPolicy = Literal["anthropic-rsp", "openai-preparedness", "gdm-fsf"]
PolicyRef = Annotated[BundledPolicy, Field(title="bundled framework")] | Annotated[str, Field(title="policy file")]

# The task runners by name; "threads:N" and "dask://host:port" are typed as free text.
TaskRunnerName = Literal["threads", "dask"]
TaskRunnerSpec = Annotated[TaskRunnerName, Field(title="runner")] | Annotated[str, Field(title="address or threads:N")]

__all__ = ["BundledPolicy", "PolicyRef", "TaskRunnerName", "TaskRunnerSpec"]
