"""``rohrpost serve``: the pipeline as an SMTP or LMTP server.

Owns the package's public names. SMTP mode is Postfix's after-queue ``content_filter``
receiver that reinjects through ``--deliver smtp:127.0.0.1:10026``; LMTP mode is a final
delivery agent (``--deliver maildir:...`` or ``lmtp:`` to Dovecot) answering once per
recipient. Modules: ``adapter`` (the only aiosmtpd import), ``conversation`` (one connection
driving a ``pipeline.Session``), ``replies`` (reply texts, delivery report to DATA replies),
``xforward`` (Postfix XFORWARD parsing), ``server`` (listening, limits, shutdown).
"""

from __future__ import annotations

from rohrpost.smtpd.server import READY_PREFIX, ServeOptions, Server, parse_hostport, serve

__all__ = ["READY_PREFIX", "ServeOptions", "Server", "parse_hostport", "serve"]
