# SPDX-License-Identifier: Apache-2.0
"""Real test servers on 127.0.0.1: vcsim (govmomi's vCenter simulator), etcd and kube-apiserver.

The binaries are built once from pinned Go modules with the machine's Go toolchain (through the Go
module proxy) and cached under ``~/.cache/vmwatch/bin`` (``VMWATCH_CACHE_DIR`` overrides the root).
Used by the pytest fixtures, ``vmwatch demo``, the benchmarks, and people through
``vmwatch devenv up`` / ``vmwatch devenv down``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    'ETCD_VERSION',
    'GOVMOMI_VERSION',
    'KUBERNETES_VERSION',
    'DevenvError',
    'KubeServer',
    'VcsimServer',
    'build_all',
    'cache_dir',
    'down',
    'ensure_binary',
    'free_port',
    'up',
]

log = logging.getLogger(__name__)

GOVMOMI_VERSION = 'v0.56.0'
KUBERNETES_VERSION = 'v1.34.2'
ETCD_VERSION = 'v3.6.5'

# binary name -> (Go module folder shipped in this package, package to build, version tag)
_BINARIES: dict[str, tuple[str, str, str]] = {
    'vcsim': ('vcsim', '.', GOVMOMI_VERSION),
    'etcd': ('etcd', 'go.etcd.io/etcd/server/v3', ETCD_VERSION),
    'kube-apiserver': ('kube', 'k8s.io/kubernetes/cmd/kube-apiserver', KUBERNETES_VERSION),
}
_GO_SOURCES = Path(__file__).with_name('go')

ADMIN_TOKEN = 'vmwatch-admin-token'  # a throwaway token for a throwaway API server on 127.0.0.1


class DevenvError(RuntimeError):
    """A test server could not be built or started; the message says which and where its log is."""


def cache_dir() -> Path:
    root = os.environ.get('VMWATCH_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'vmwatch')
    return Path(root)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def ensure_binary(name: str) -> Path:
    """Path of the cached binary `name`, building it first if needed (minutes on a fresh machine)."""
    folder, package, version = _BINARIES[name]
    target = cache_dir() / 'bin' / f'{name}-{version}'
    if target.is_file() and os.access(target, os.X_OK):
        return target
    go = shutil.which('go')
    if go is None:
        raise DevenvError(f'building {name} {version} needs the Go toolchain (`go`) on PATH')
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info('building %s %s with %s (first time only)', name, version, go)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f'vmwatch-build-{name}-') as tmp:
        # the package folder may be read-only (site-packages): build from a copy
        src = Path(tmp) / 'src'
        shutil.copytree(_GO_SOURCES / folder, src)
        partial = target.with_name(target.name + '.partial')
        env = {**os.environ, 'CGO_ENABLED': '0', 'GOFLAGS': '-mod=mod -trimpath'}
        cmd = [go, 'build', '-o', str(partial), *_ldflags(name, version), package]
        proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DevenvError(f'building {name} {version} failed ({" ".join(cmd)}):\n{proc.stderr[-4000:]}')
        partial.replace(target)
    log.info('built %s in %.0f s', target, time.monotonic() - started)
    return target


def _ldflags(name: str, version: str) -> list[str]:
    if name != 'kube-apiserver':
        return []
    # what Kubernetes' own build stamps, so /version reports the pinned release
    major, minor = version.lstrip('v').split('.')[:2]
    pkg = 'k8s.io/component-base/version'
    flags = [
        f'-X {pkg}.gitVersion={version}',
        f'-X {pkg}.gitMajor={major}',
        f'-X {pkg}.gitMinor={minor}',
        f'-X {pkg}.gitTreeState=clean',
    ]
    return ['-ldflags', ' '.join(flags)]


def build_all(names: Sequence[str] = ('vcsim', 'etcd', 'kube-apiserver')) -> dict[str, float]:
    """Build every missing binary; returns seconds spent per binary (0 when cached)."""
    times: dict[str, float] = {}
    for name in names:
        started = time.monotonic()
        ensure_binary(name)
        times[name] = round(time.monotonic() - started, 1)
    return times


def _wait_http(
    url: str,
    *,
    deadline: float,
    ctx: ssl.SSLContext | None,
    headers: dict[str, str],
    proc: subprocess.Popen[bytes],
    log_path: Path,
    what: str,
) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevenvError(f'{what} exited with code {proc.returncode}; log: {log_path}\n{_tail(log_path)}')
        try:
            req = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()  # an error status (e.g. /readyz 500 while starting) holds the response open
            last = e
        time.sleep(0.1)
    raise DevenvError(f'{what} did not answer {url} in time ({last}); log: {log_path}\n{_tail(log_path)}')


def _tail(path: Path, n: int = 30) -> str:
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-n:])
    except OSError:
        return ''


def _stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    if proc.stdout is not None:
        proc.stdout.close()


def _popen(
    cmd: Sequence[str], log_path: Path, *, detach: bool, pipe_stdout: bool = False
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log_file = log_path.open('ab')
    stdout: int | IO[bytes] = subprocess.PIPE if pipe_stdout else log_file
    proc = subprocess.Popen(
        list(cmd), stdout=stdout, stderr=log_file, stdin=subprocess.DEVNULL, start_new_session=detach
    )
    return proc, log_file


@dataclass
class VcsimServer:
    """A vcsim process (govmomi's simulator) on 127.0.0.1 with its own credentials and TLS certificate."""

    state_dir: Path
    args: tuple[str, ...] = ()
    user: str = 'vmwatch'
    password: str = field(default_factory=lambda: 'pw-' + os.urandom(6).hex())
    port: int = 0
    url: str = ''
    ca_file: Path = field(default_factory=Path)
    thumbprint: str = ''
    vms: int = 0
    pid: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return '127.0.0.1'

    @property
    def password_file(self) -> Path:
        return self.state_dir / 'vc-password'

    @property
    def log_path(self) -> Path:
        return self.state_dir / 'vcsim.log'

    def start(self, *, detach: bool = False, timeout_s: float = 60.0) -> VcsimServer:
        binary = ensure_binary('vcsim')
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(self.password + '\n')
        self.password_file.chmod(0o600)
        listen = f'127.0.0.1:{self.port}'
        cmd = [str(binary), '-l', listen, '-username', self.user, '-password', self.password, *self.args]
        self._proc, self._log = _popen(cmd, self.log_path, detach=detach, pipe_stdout=True)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = b''
        while time.monotonic() < deadline and not line:
            line = self._proc.stdout.readline()
            if not line and self._proc.poll() is not None:
                break
        if not line:
            self.stop()
            raise DevenvError(f'vcsim did not start; log: {self.log_path}\n{_tail(self.log_path)}')
        info: dict[str, Any] = json.loads(line)
        self.pid = int(info['pid'])
        self.vms = int(info['vms'])
        # strip the userinfo: callers log in with user + password file
        scheme, rest = info['url'].split('://', 1)
        hostport_path = rest.rsplit('@', 1)[-1]
        self.url = f'{scheme}://{hostport_path}'
        self.port = int(hostport_path.split('/', 1)[0].rsplit(':', 1)[1])
        cert = Path(info['cert_file'])
        self.ca_file = self.state_dir / 'vcsim-ca.pem'
        shutil.copyfile(cert, self.ca_file)
        cert.unlink(missing_ok=True)
        self.thumbprint = info['thumbprint_sha256']
        return self

    def stop(self) -> None:
        _stop(self._proc)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, *, password: str | None = None) -> VcsimServer:
        """Stop and start again on the same port (a fresh inventory), optionally with a new password."""
        self.stop()
        if password is not None:
            self.password = password
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def describe(self) -> dict[str, str]:
        return {
            'vc_url': self.url,
            'vc_user': self.user,
            'vc_password_file': str(self.password_file),
            'vc_ca_file': str(self.ca_file),
            'vc_thumbprint': self.thumbprint,
        }


def _openssl(*args: str) -> None:
    proc = subprocess.run(['openssl', *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DevenvError(f'openssl {" ".join(args)} failed: {proc.stderr[-2000:]}')


@dataclass
class KubeServer:
    """etcd + kube-apiserver on 127.0.0.1, with a static admin token and a generated kubeconfig."""

    state_dir: Path
    authorization_mode: str = 'AlwaysAllow'
    etcd_port: int = 0
    port: int = 0
    url: str = ''
    _etcd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _apiserver: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _logs: list[IO[bytes]] = field(default_factory=list, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / 'kubeconfig'

    @property
    def ca_file(self) -> Path:
        return self.state_dir / 'pki' / 'apiserver.crt'

    @property
    def token(self) -> str:
        return ADMIN_TOKEN

    @property
    def etcd_log(self) -> Path:
        return self.state_dir / 'etcd.log'

    @property
    def apiserver_log(self) -> Path:
        return self.state_dir / 'kube-apiserver.log'

    def start(self, *, detach: bool = False, timeout_s: float = 120.0) -> KubeServer:
        etcd_bin = ensure_binary('etcd')
        apiserver_bin = ensure_binary('kube-apiserver')
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start_etcd(etcd_bin, detach=detach, timeout_s=timeout_s)
        self._start_apiserver(apiserver_bin, detach=detach, timeout_s=timeout_s)
        self._write_kubeconfig()
        return self

    def _start_etcd(self, binary: Path, *, detach: bool, timeout_s: float) -> None:
        self.etcd_port = self.etcd_port or free_port()
        peer = free_port()
        client_url = f'http://127.0.0.1:{self.etcd_port}'
        cmd = [
            str(binary), '--name', 'vmwatch', '--data-dir', str(self.state_dir / 'etcd'),
            '--listen-client-urls', client_url, '--advertise-client-urls', client_url,
            '--listen-peer-urls', f'http://127.0.0.1:{peer}',
            '--initial-advertise-peer-urls', f'http://127.0.0.1:{peer}',
            '--initial-cluster', f'vmwatch=http://127.0.0.1:{peer}',
            '--unsafe-no-fsync', '--log-level', 'warn',
        ]  # fmt: skip
        self._etcd, log_file = _popen(cmd, self.etcd_log, detach=detach)
        self._logs.append(log_file)
        deadline = time.monotonic() + timeout_s
        _wait_http(
            f'{client_url}/health',
            deadline=deadline,
            ctx=None,
            headers={},
            proc=self._etcd,
            log_path=self.etcd_log,
            what='etcd',
        )

    def _start_apiserver(self, binary: Path, *, detach: bool, timeout_s: float) -> None:
        pki = self.state_dir / 'pki'
        pki.mkdir(exist_ok=True)
        sa_key = pki / 'sa.key'
        if not sa_key.exists():
            _openssl('genrsa', '-out', str(sa_key), '2048')
        tokens = pki / 'tokens.csv'
        tokens.write_text(f'{ADMIN_TOKEN},vmwatch-admin,vmwatch-admin-uid,system:masters\n')
        self.port = self.port or free_port()
        cmd = [
            str(binary),
            '--etcd-servers', f'http://127.0.0.1:{self.etcd_port}',
            '--bind-address', '127.0.0.1', '--advertise-address', '127.0.0.1',
            '--secure-port', str(self.port), '--cert-dir', str(pki),
            '--token-auth-file', str(tokens),
            '--service-account-key-file', str(sa_key), '--service-account-signing-key-file', str(sa_key),
            '--service-account-issuer', 'https://kubernetes.default.svc.cluster.local',
            '--service-cluster-ip-range', '10.0.0.0/24',
            '--authorization-mode', self.authorization_mode,
            '--enable-priority-and-fairness=false',
            '--disable-admission-plugins', 'ServiceAccount',
            '--v', '1',
        ]  # fmt: skip
        self._apiserver, log_file = _popen(cmd, self.apiserver_log, detach=detach)
        self._logs.append(log_file)
        self.url = f'https://127.0.0.1:{self.port}'
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the serving certificate is generated at start; trusted via kubeconfig
        deadline = time.monotonic() + timeout_s
        _wait_http(
            f'{self.url}/readyz',
            deadline=deadline,
            ctx=ctx,
            headers={'Authorization': f'Bearer {ADMIN_TOKEN}'},
            proc=self._apiserver,
            log_path=self.apiserver_log,
            what='kube-apiserver',
        )

    def _write_kubeconfig(self) -> None:
        config = {
            'apiVersion': 'v1',
            'kind': 'Config',
            'clusters': [
                {'name': 'vmwatch', 'cluster': {'server': self.url, 'certificate-authority': str(self.ca_file)}}
            ],
            'users': [{'name': 'vmwatch-admin', 'user': {'token': ADMIN_TOKEN}}],
            'contexts': [{'name': 'vmwatch', 'context': {'cluster': 'vmwatch', 'user': 'vmwatch-admin'}}],
            'current-context': 'vmwatch',
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    def stop(self) -> None:
        _stop(self._apiserver)
        _stop(self._etcd)
        self._apiserver = self._etcd = None
        for f in self._logs:
            f.close()
        self._logs.clear()

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port; etcd and its data stay."""
        _stop(self._apiserver)
        self._start_apiserver(ensure_binary('kube-apiserver'), detach=False, timeout_s=120.0)

    def pids(self) -> list[int]:
        return [p.pid for p in (self._apiserver, self._etcd) if p is not None]

    def describe(self) -> dict[str, str]:
        return {'kubeconfig': str(self.kubeconfig), 'kube_url': self.url}


def default_state_dir() -> Path:
    return cache_dir() / 'devenv'


def up(*, state_dir: Path | None = None, vcsim_args: Sequence[str] = (), kube: bool = True) -> dict[str, Any]:
    """Start detached servers for people (`vmwatch devenv up`); `down` stops them.

    The CLI installs the CRDs afterwards (only vmwatch.kube talks to Kubernetes).
    """
    state_dir = state_dir or default_state_dir()
    if (state_dir / 'state.json').exists():
        down(state_dir=state_dir)
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    vc = VcsimServer(state_dir=state_dir / 'vcsim', args=tuple(vcsim_args))
    pids: list[int] = []
    try:
        vc.start(detach=True)
        pids.append(vc.pid)
        info: dict[str, Any] = {**vc.describe(), 'kubeconfig': None, 'state_dir': str(state_dir)}
        if kube:
            k = KubeServer(state_dir=state_dir / 'kube')
            k.start(detach=True)
            pids.extend(k.pids())
            info.update(k.describe())
    except BaseException:
        _kill(pids)
        raise
    (state_dir / 'state.json').write_text(json.dumps({**info, 'pids': pids}, indent=2))
    return info


def _kill(pids: Sequence[int], timeout_s: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def down(*, state_dir: Path | None = None) -> bool:
    """Stop what `up` started; False when nothing was running."""
    state_file = (state_dir or default_state_dir()) / 'state.json'
    if not state_file.exists():
        return False
    _kill(json.loads(state_file.read_text()).get('pids', []))
    state_file.unlink()
    return True
