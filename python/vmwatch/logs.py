# SPDX-License-Identifier: Apache-2.0
"""Logging setup: text or JSON lines, with credentials kept out of every record."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import orjson

__all__ = ['RedactingFilter', 'configure_logging']

# vmware_soap_session="..." cookies, password=... pairs, and the session key vCenter embeds in the
# MoRefs of a session's PropertyCollector objects (`session[<key>]<id>`), wherever they end up in a message
_SECRETS = re.compile(
    r'(vmware_soap_session=)"?[^";\s]+"?|((?:password|passwd|pwd|token)\s*[=:]\s*)\S+|(session\[)[^\]\s]+(?=\])', re.I
)


def _redact(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + '<redacted>', text)


class RedactingFilter(logging.Filter):
    """Masks session cookies and password/token assignments in the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class TextFormatter(logging.Formatter):
    """The text format, redacted after formatting (so tracebacks are covered too)."""

    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            'time': datetime.fromtimestamp(record.created, UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ'),
            'level': record.levelname.lower(),
            'logger': record.name,
            'msg': _redact(record.getMessage()),
        }
        if record.exc_info:
            entry['error'] = _redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure_logging(*, level: str = 'INFO', json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ('urllib3', 'kubernetes'):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
