# SPDX-License-Identifier: Apache-2.0
"""pyVmomi, seen as `Any` by the type checker.

pyVmomi ships py.typed but its generated types (vim.*, vmodl.*) are untyped calls, which mypy --strict
rejects at every use. Importing them from here keeps that decision in one place.
"""

from typing import Any

import pyVmomi
import pyVmomi.SoapAdapter
import pyVmomi.VmomiSupport

__all__ = ['PC', 'SoapStubAdapter', 'VmomiSupport', 'vim', 'vmodl']

vim: Any = getattr(pyVmomi, 'vim')  # noqa: B009  (generated at import time; invisible to mypy)
vmodl: Any = getattr(pyVmomi, 'vmodl')  # noqa: B009
VmomiSupport: Any = pyVmomi.VmomiSupport
SoapStubAdapter: Any = pyVmomi.SoapAdapter.SoapStubAdapter
PC: Any = vmodl.query.PropertyCollector
