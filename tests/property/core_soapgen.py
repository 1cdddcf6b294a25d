# SPDX-License-Identifier: Apache-2.0
"""Build WaitForUpdatesEx response bodies from a small description, in several byte styles.

A body is a list of object updates `(moref, kind, changes)`; a change is `(path, op, value)`
where value is one of the `V*` records below (or None: no `<val>`). Styles vary prefixes,
quoting, indentation, where `xsi` is declared, and escaping (entities vs CDATA), so tests
prove the decoder depends on none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

XSI = 'http://www.w3.org/2001/XMLSchema-instance'
XSD = 'http://www.w3.org/2001/XMLSchema'
SOAPENV = 'http://schemas.xmlsoap.org/soap/envelope/'


@dataclass(frozen=True)
class VNil:
    """`<val xsi:nil="true"/>`."""


@dataclass(frozen=True)
class VPrim:
    xsd_type: str  # 'string', 'int', 'long', 'boolean'
    text: str


@dataclass(frozen=True)
class VEnum:
    type_name: str  # e.g. 'VirtualMachinePowerState'
    text: str


@dataclass(frozen=True)
class VMoRef:
    mo_type: str
    value: str


@dataclass(frozen=True)
class VExtraConfig:
    entries: tuple[tuple[str, str, str], ...]  # (key, xsd type, text)


@dataclass(frozen=True)
class VDevices:
    devices: tuple[tuple[int, str, str], ...]  # (key, device type, label)


Value = VNil | VPrim | VEnum | VMoRef | VExtraConfig | VDevices | None


@dataclass(frozen=True)
class Style:
    env: str = 'soapenv'  # envelope prefix
    vim: str = ''  # prefix for urn:vim25 elements ('' = default namespace)
    xsi: str = 'xsi'
    xsd: str = 'xsd'
    xsi_on_val: bool = False  # declare xsi on each <val> (govmomi) instead of the envelope
    indent: bool = False
    cdata: bool = False  # text as CDATA where possible instead of entities
    quote: str = '"'
    empty_tags: bool = True  # <a/> for empty elements


STYLES = (
    Style(),
    Style(env='S', vim='v', xsi='i', xsd='t', quote="'", empty_tags=False),
    Style(xsi='_XMLSchema-instance', xsi_on_val=True),
    Style(env='soap', indent=True, cdata=True),
    Style(env='e', vim='vim25', xsi='x', xsd='s', indent=True, xsi_on_val=True, quote="'"),
)


@dataclass
class _W:
    style: Style
    parts: list[str] = field(default_factory=list)
    depth: int = 0

    def q(self, v: str) -> str:
        if self.style.quote == '"':
            return quoteattr(v)
        return "'" + escape(v, {"'": '&apos;'}) + "'"

    def n(self, local: str) -> str:
        return f'{self.style.vim}:{local}' if self.style.vim else local

    def nl(self) -> None:
        if self.style.indent:
            self.parts.append('\n' + '  ' * self.depth)

    def text(self, t: str) -> str:
        if self.style.cdata and t and ']]>' not in t and any(c in t for c in '<&>'):
            return f'<![CDATA[{t}]]>'
        return escape(t, {'"': '&quot;'} if self.style.quote == '"' else {})

    def leaf(self, local: str, t: str, attrs: str = '') -> None:
        self.nl()
        if t == '' and self.style.empty_tags:
            self.parts.append(f'<{self.n(local)}{attrs}/>')
        else:
            self.parts.append(f'<{self.n(local)}{attrs}>{self.text(t)}</{self.n(local)}>')

    def open(self, local: str, attrs: str = '') -> None:
        self.nl()
        self.parts.append(f'<{self.n(local)}{attrs}>')
        self.depth += 1

    def close(self, local: str) -> None:
        self.depth -= 1
        self.nl()
        self.parts.append(f'</{self.n(local)}>')

    def xtype(self, t: str, prim: bool = False) -> str:
        value = f'{self.style.xsd}:{t}' if prim else t
        return f' {self.style.xsi}:type={self.q(value)}'


def _val(w: _W, value: Value) -> None:
    s = w.style
    decl = ''
    if s.xsi_on_val:
        decl = f' xmlns:{s.xsi}={w.q(XSI)} xmlns:{s.xsd}={w.q(XSD)}'
    if value is None:
        return
    if isinstance(value, VNil):
        w.nl()
        w.parts.append(f'<{w.n("val")}{decl} {s.xsi}:nil={w.q("true")}/>')
    elif isinstance(value, VPrim):
        w.leaf('val', value.text, decl + w.xtype(value.xsd_type, prim=True))
    elif isinstance(value, VEnum):
        w.leaf('val', value.text, decl + w.xtype(value.type_name))
    elif isinstance(value, VMoRef):
        w.leaf('val', value.value, decl + f' type={w.q(value.mo_type)}' + w.xtype('ManagedObjectReference'))
    elif isinstance(value, VExtraConfig):
        w.open('val', decl + w.xtype('ArrayOfOptionValue'))
        for key, t, text in value.entries:
            w.open('OptionValue', w.xtype('OptionValue'))
            w.leaf('key', key)
            w.leaf('value', text, w.xtype(t, prim=True))
            w.close('OptionValue')
        w.close('val')
    elif isinstance(value, VDevices):
        w.open('val', decl + w.xtype('ArrayOfVirtualDevice'))
        for key, dtype, label in value.devices:
            w.open('VirtualDevice', w.xtype(dtype))
            w.leaf('key', str(key))
            w.open('deviceInfo', w.xtype('Description'))
            w.leaf('label', label)
            w.leaf('summary', label)
            w.close('deviceInfo')
            w.close('VirtualDevice')
        w.close('val')


Change = tuple[str, str, Value]
Update = tuple[str, str, list[Change]]


def body(updates: list[Update], *, version: str = '1', truncated: bool = False, style: Style = STYLES[0]) -> bytes:
    """A WaitForUpdatesExResponse with one filterSet holding `updates`."""
    w = _W(style)
    s = style
    ns = f' xmlns:{s.env}={w.q(SOAPENV)}'
    if not s.xsi_on_val:
        ns += f' xmlns:{s.xsi}={w.q(XSI)} xmlns:{s.xsd}={w.q(XSD)}'
    w.parts.append('<?xml version="1.0" encoding="UTF-8"?>')
    w.parts.append(f'<{s.env}:Envelope{ns}>')
    w.depth += 1
    w.nl()
    w.parts.append(f'<{s.env}:Body>')
    w.depth += 1
    vimns = f' xmlns:{s.vim}="urn:vim25"' if s.vim else ' xmlns="urn:vim25"'
    w.open('WaitForUpdatesExResponse', vimns)
    w.open('returnval')
    w.leaf('version', version)
    w.open('filterSet')
    w.leaf('filter', 'session[1]2', f' type={w.q("PropertyFilter")}')
    for moref, kind, changes in updates:
        w.open('objectSet')
        w.leaf('kind', kind)
        w.leaf('obj', moref, f' type={w.q("VirtualMachine")}')
        for path, op, value in changes:
            w.open('changeSet')
            w.leaf('name', path)
            w.leaf('op', op)
            _val(w, value)
            w.close('changeSet')
        w.close('objectSet')
    w.close('filterSet')
    if truncated:
        w.leaf('truncated', 'true')
    w.close('returnval')
    w.close('WaitForUpdatesExResponse')
    w.depth -= 1
    w.nl()
    w.parts.append(f'</{s.env}:Body>')
    w.depth -= 1
    w.nl()
    w.parts.append(f'</{s.env}:Envelope>')
    return ''.join(w.parts).encode()
