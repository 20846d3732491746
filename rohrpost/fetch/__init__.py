"""Retrieval: ``rohrpost fetch`` pulls mail over POP3/IMAP into the pipeline and delivers it.

Owns nothing itself; the parts are ``accounts`` ([[fetch]] tables, passwords, TLS contexts),
``remote`` (the mailbox interface and socket checks), ``pop3`` and ``imap`` (protocol
adapters, the only modules that import poplib/imaplib), ``seen`` (state-store keys and the crash
journal), ``job`` (one run of one account) and ``daemon`` (interval, jitter, IMAP IDLE,
SIGTERM). docs/fetch.md is the user's guide and holds the exactly-once argument.
"""

from rohrpost.fetch.accounts import Account, FetchError, load_accounts

__all__ = ["Account", "FetchError", "load_accounts"]
