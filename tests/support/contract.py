"""The issue's pipeline.toml contract for the `rules` filter, shared by the tests of every mode.

`RULES_CONTRACT` is the `[[filter]]` table exactly as issue 2 writes it (its header rules
`HEADER_RULES` and its envelope rule `ENVELOPE_RULE`); `ARCHIVE_RULE` adds a recipient-adding
rule the Postfix tests use. The milter tests also run `HEADER_RULES` + `ARCHIVE_RULE` through
their test-only `probe-rules`, which matches headers only.
"""

HEADER_RULES = r'''
[[filter.rule]]
name = "BLOCKED_SUBJECT"
header = "Subject"
regex = "(?i)buy now"
action = "reject"
message = "550 5.7.1 Blocked by local policy"

[[filter.rule]]
name = "NEWSLETTER"
header = "List-Id"
regex = "."
score = 2.5
add_header = { name = "X-Newsletter", value = "yes" }
'''

ENVELOPE_RULE = r'''
[[filter.rule]]
name = "HOLD_FOR_REVIEW"
envelope_from = "(?i)@partner\\.example$"
action = "quarantine"
'''

RULES_CONTRACT = '''
[[filter]]
use = "rules"
''' + HEADER_RULES + ENVELOPE_RULE

ARCHIVE_RULE = '''
[[filter.rule]]
name = "ARCHIVE"
header = "X-Archive"
regex = "."
add_recipient = "archive@example.net"
'''


def spam_virus_contract(spamd_port: int, clamd_socket: str, backend: str = "sqlite") -> str:
    """Issue 4's pipeline.toml (without greylist, tested on its own) plus ``attachments``."""
    return f"""
[state]
backend = "{backend}"

[[filter]]
use = "spamassassin"
host = "127.0.0.1"
port = {spamd_port}
max_size = 512000

[[filter]]
use = "clamav"
socket = "{clamd_socket}"
action = "reject"
on_error = "tempfail"

[[filter]]
use = "attachments"

[actions]
add_header = 5.0
reject = 15.0
"""
