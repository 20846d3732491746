"""``make bench``: rohrpost beside the established mail filters, on one throwaway Postfix.

Modules: :mod:`bench.stats` (median, spread, ratios, the table), :mod:`bench.procstat` (CPU and
peak RSS of process trees from /proc), :mod:`bench.messages` (test messages), :mod:`bench.tools`
(configuration files of every tool), :mod:`bench.services` (daemons on loopback),
:mod:`bench.configs` (the declarative list of configurations), :mod:`bench.mta` (Postfix,
smtp-source and smtp-sink), :mod:`bench.pipe` (pipe-mode costs), :mod:`bench.netns` (the
network namespace whose resolv.conf points at the bench's DNS server), :mod:`bench.main`.
Nothing here runs under ``make test``; the helpers are unit-tested there without daemons.
"""
