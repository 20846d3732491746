"""From filter results to the final word: score thresholds, and the headers rohrpost writes.

Owns ``Outcome`` and ``decide``. After the last filter, the summed score is compared with the
``[actions]`` thresholds (Rspamd's model), and the changes that every mode applies are built:
the filters' own changes, removal of forged copies of our headers, one Authentication-Results
header merging every filter's results (RFC 8601), SpamAssassin-compatible X-Spam-* headers so
existing Sieve and procmail rules keep working, our status header, and the subject tag.
"""

from __future__ import annotations

from collections.abc import Sequence

from rohrpost.changes import AddHeader, Change, ChangeHeader, InsertHeader, clean_header_value
from rohrpost.config import ActionsSection, Config
from rohrpost.envelope import domain_of
from rohrpost.message import Message
from rohrpost.pipeline import StepRun
from rohrpost.record import Record
from rohrpost.result import Action, AuthResult, Symbol, Verdict

STATUS_HEADER = "X-Rohrpost-Result"
# written by `rohrpost run` on quarantined/discarded output (pipemode.py ACTION_HEADER, the same
# name); the documented procmail recipe drops such messages, so a forged copy must go
ACTION_HEADER = "X-Rohrpost-Action"
SPAM_HEADERS = ("X-Spam-Flag", "X-Spam-Status", "X-Spam-Score", "X-Spam-Level")


class Outcome(Record):
    """The pipeline's final word on one message."""

    _fields = ("verdict", "score", "symbols", "auth", "changes", "runs", "is_spam", "actions")
    verdict: Verdict
    score: float
    symbols: list[Symbol]
    auth: list[AuthResult]
    changes: list[Change]
    runs: list[StepRun]
    is_spam: bool
    actions: ActionsSection | None  # the thresholds used (after per-domain settings)

    def __init__(self, verdict: Verdict, score: float, symbols: list[Symbol] | None = None,  # noqa: PLR0917
                 auth: list[AuthResult] | None = None, changes: list[Change] | None = None,
                 runs: list[StepRun] | None = None, is_spam: bool = False,
                 actions: ActionsSection | None = None) -> None:
        self.verdict = verdict
        self.score = score
        self.symbols = [] if symbols is None else symbols
        self.auth = [] if auth is None else auth
        self.changes = [] if changes is None else changes
        self.runs = [] if runs is None else runs
        self.is_spam = is_spam
        self.actions = actions

    @property
    def action(self) -> Action:
        """The final action."""
        return self.verdict.action


def decide(config: Config, runs: Sequence[StepRun], message: Message | None,
           verdict: Verdict | None, rcpts: Sequence[str] = ()) -> Outcome:
    """Combine filter results into the final verdict and the changes to apply.

    :param rcpts: the message's (accepted) recipients; they select the
        ``[actions.domain."..."]`` thresholds (see ``ActionsSection.for_recipients``).
    """
    symbols = [s for r in runs for s in r.result.symbols]
    auth = [a for r in runs for a in r.result.auth]
    score = round(sum(s.score for s in symbols), 3)
    acts = config.actions.for_recipients(domain_of(r) for r in rcpts)
    if verdict is None:
        verdict = _threshold_verdict(acts, score)
    out = Outcome(verdict or Verdict.of(Action.ACCEPT), score, symbols, auth, runs=list(runs),
                  actions=acts)
    out.is_spam = acts.add_header is not None and score >= acts.add_header
    if message is None:
        return out
    for run in runs:
        out.changes.extend(run.result.changes)
    # count forged copies in the message as the filters' changes leave it, so that a header a
    # filter already removed is not counted again (the n-th-occurrence rule of apply.py)
    current = message
    if out.changes:
        from rohrpost.apply import apply_changes
        from rohrpost.envelope import Envelope

        current, _env = apply_changes(message, Envelope(), out.changes)
    out.changes.extend(remove_forged(config, current))
    if auth:
        value = authentication_results(config.authserv_id, auth)
        out.changes.append(InsertHeader(0, "Authentication-Results", value))
    out.changes.extend(spam_headers(config, out))
    if config.pipeline.status_header:
        out.changes.append(AddHeader(STATUS_HEADER, status_value(out)))
    if acts.rewrite_subject is not None and score >= acts.rewrite_subject:
        out.changes.extend(subject_tag(message, acts.subject_tag))
    return out


def _threshold_verdict(acts: ActionsSection, score: float) -> Verdict | None:
    why = f"score {score:g}"
    if acts.reject is not None and score >= acts.reject:
        return Verdict.of(Action.REJECT, acts.reject_message, why, "actions")
    if acts.tempfail is not None and score >= acts.tempfail:
        return Verdict.of(Action.TEMPFAIL, acts.tempfail_message, why, "actions")
    if acts.quarantine is not None and score >= acts.quarantine:
        return Verdict.of(Action.QUARANTINE, "", why, "actions")
    return None


def remove_forged(config: Config, message: Message) -> list[Change]:
    """Delete incoming copies of headers only we may write (highest occurrence first)."""
    changes: list[Change] = []
    spam = list(SPAM_HEADERS) if config.pipeline.spam_headers != "never" else []
    names = [STATUS_HEADER, ACTION_HEADER, *spam]
    for name in names:
        count = len(message.get_all(name))
        changes.extend(ChangeHeader(name, i, None) for i in range(count, 0, -1))
    ours = config.authserv_id.lower()
    ar = message.get_all("Authentication-Results")
    for i in range(len(ar), 0, -1):
        if authserv_id_of(ar[i - 1].value).lower() == ours:
            changes.append(ChangeHeader("Authentication-Results", i, None))
    return changes


def strip_comments(text: str) -> str:
    """Remove RFC 5322 comments (nested parentheses) outside quoted strings."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
        elif ch == '"' and depth == 0:
            quoted = not quoted
            out.append(ch)
        elif ch == "(" and not quoted:
            depth += 1
        elif ch == ")" and not quoted and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def authserv_id_of(value: str) -> str:
    """The authserv-id of an Authentication-Results value, as RFC 8601 parsers read it.

    Comments (CFWS) are skipped and a quoted-string is unquoted, so ``(x) mx; ...``,
    ``"mx"; ...`` and ``mx(x); ...`` all claim ``mx``: a forger must not get past our removal
    of such copies with a spelling that mail clients and ``authres`` (dkimpy's ARC sealing)
    still read as our id.
    """
    text = strip_comments(value).lstrip()
    if text.startswith('"'):
        out: list[str] = []
        escaped = False
        for ch in text[1:]:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                break
            else:
                out.append(ch)
        return "".join(out).strip()
    first = text.split(";", 1)[0].strip()
    return first.split()[0] if first else ""


def authentication_results(authserv_id: str, results: Sequence[AuthResult]) -> str:
    """One RFC 8601 value: ``authserv-id; method=result ...; ...``."""
    parts = [clean_header_value(authserv_id)] + [r.render() for r in results]
    return ";\n\t".join(parts) if len(parts) > 1 else parts[0] + "; none"


def spam_headers(config: Config, out: Outcome) -> list[Change]:
    """SpamAssassin-style headers: X-Spam-Flag, X-Spam-Status, X-Spam-Score, X-Spam-Level."""
    mode = config.pipeline.spam_headers
    if mode == "never" or (mode == "spam" and not out.is_spam):
        return []
    required = (out.actions or config.actions).add_header
    names = ",".join(sorted({s.name for s in out.symbols})) or "none"
    status = (f"{'Yes' if out.is_spam else 'No'}, score={out.score:.1f} "
              f"required={required if required is not None else 0:.1f} tests={names} "
              "autolearn=no version=rohrpost")
    changes: list[Change] = []
    if out.is_spam:
        changes.append(AddHeader("X-Spam-Flag", "YES"))
    changes.append(AddHeader("X-Spam-Status", status))
    changes.append(AddHeader("X-Spam-Score", f"{out.score:.1f}"))
    changes.append(AddHeader("X-Spam-Level", "*" * min(50, max(0, int(out.score)))))
    return changes


def status_value(out: Outcome) -> str:
    """Our own status header: action, score and symbols with scores."""
    syms = " ".join(f"{s.name}({s.score:g})" for s in out.symbols)
    return f"action={out.action.value} score={out.score:g}" + (f" symbols={syms}" if syms else "")


def subject_tag(message: Message, tag: str) -> list[Change]:
    """Prefix the Subject with ``tag`` once (no double tagging); add a Subject if missing."""
    tag = clean_header_value(tag)
    subjects = message.get_all("Subject")
    if not subjects:
        return [AddHeader("Subject", tag)]
    current = subjects[0].value
    if current.startswith(tag):
        return []
    return [ChangeHeader("Subject", 1, f"{tag} {current}".strip())]
