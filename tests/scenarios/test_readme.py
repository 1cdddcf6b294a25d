# SPDX-License-Identifier: Apache-2.0
"""The README's Python example runs as written against vcsim (only the placeholders are replaced)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from vmwatch.devenv import VcsimServer
from vmwatch.vsphere import Endpoint, Session
from vmwatch.vsphere import inventory as inv

README = Path(__file__).resolve().parents[2] / 'README.md'


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index('## Use it from Python') :]
    match = re.search(r'```python\n(.*?)```', section, re.S)
    assert match, 'the README lost its Python example'
    return match.group(1)


def _substitute(code: str, replacements: dict[str, str]) -> str:
    for placeholder, value in replacements.items():
        assert placeholder in code, f'the README example no longer contains {placeholder!r}: update this test'
        code = code.replace(placeholder, value)
    return code


def test_readme_example_prints_a_signal_from_vcsim(vcsim: VcsimServer, tmp_path: Path) -> None:
    session = Session(Endpoint(url=vcsim.url, user=vcsim.user, password_file=vcsim.password_file,
                               ca_file=vcsim.ca_file))  # fmt: skip
    session.login()
    try:
        folder = inv.create_folder(session, inv.vm_folder(session), 'readme')
        vm, _name = inv.vms_under(session, inv.vm_folder(session))[0]
        inv.move_into(session, folder, [vm])
        inv.set_extra_config(session, vm, {'vmservice.namespacedName': 'readme-ns/readme-vm'})
    finally:
        session.logout()
    code = _substitute(readme_example(), {
        "'https://vcenter.example.com/sdk'": repr(vcsim.url),
        "'svc-vmwatch'": repr(vcsim.user),
        "Path('/etc/vmwatch/password')": f'Path({str(vcsim.password_file)!r})',
        "Path('/etc/vmwatch/ca.pem')": f'Path({str(vcsim.ca_file)!r})',
        "'Folder:group-v42'": repr(f'Folder:{folder.value}'),
    })  # fmt: skip
    script = tmp_path / 'example.py'
    script.write_text(code)
    out = tmp_path / 'out.txt'
    with out.open('wb') as sink:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while 'readme-vm' not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait()
    printed = out.read_text()
    assert re.search(rf'^readme-ns readme-vm {vm.value} ', printed, re.M), printed
