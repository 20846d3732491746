"""``rohrpost milter``: the pipeline served to Postfix/Sendmail over the milter protocol.

Owns the milter mode. ``adapter`` is the only module in rohrpost that imports pymilter;
``connection`` maps callbacks to pipeline stages and verdicts to libmilter answers;
``mchanges`` applies changes with libmilter calls; ``loop`` runs stages on one asyncio loop per
process; ``server`` opens the socket, pre-forks workers and supervises them; ``metricspipe``
carries the workers' metrics to the parent.
"""
