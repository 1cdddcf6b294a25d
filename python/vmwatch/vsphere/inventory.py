# SPDX-License-Identifier: Apache-2.0
"""Inventory questions the service asks vCenter outside the watcher: which containers still exist."""

from __future__ import annotations

from collections.abc import Iterable

from pyVmomi import vmodl

from vmwatch.vsphere.errors import NotAuthenticatedError
from vmwatch.vsphere.refs import MoRef
from vmwatch.vsphere.session import Session

__all__ = ['existing']

PC = vmodl.query.PropertyCollector


def existing(session: Session, refs: Iterable[MoRef]) -> set[MoRef]:
    """The subset of `refs` that exist in vCenter, in one RetrievePropertiesEx (spec 4.3 step 4).

    Asks for no properties with reportMissingObjectsInResults: vCenter leaves missing objects out of
    the result instead of failing the call, so one stale Zone folder cannot stop the watcher.
    """
    wanted = sorted(set(refs))
    if not wanted:
        return set()
    objs = [session.managed_object(ref) for ref in wanted]
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=o, skip=False) for o in objs],
        propSet=[PC.PropertySpec(type=t, all=False, pathSet=[]) for t in {type(o) for o in objs}],
        reportMissingObjectsInResults=True,
    )
    pc = session.content.propertyCollector
    found: set[MoRef] = set()
    result = session.call('RetrievePropertiesEx(folders)', pc.RetrievePropertiesEx, [spec], PC.RetrieveOptions())
    while result is not None:
        for oc in result.objects or ():
            if any(getattr(type(m.fault), '_wsdlName', '') == 'NotAuthenticated' for m in oc.missingSet or ()):
                raise NotAuthenticatedError('RetrievePropertiesEx(folders): the vCenter session is not authenticated')
            found.add(MoRef(oc.obj._wsdlName, str(oc.obj._moId)))
        token = result.token
        result = session.call('ContinueRetrievePropertiesEx', pc.ContinueRetrievePropertiesEx, token) if token else None
    return found & set(wanted)
