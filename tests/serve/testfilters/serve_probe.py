"""Test-only EOM filter for the serve tests: shows what the pipeline saw, acts on the Subject."""

from __future__ import annotations

from dataclasses import dataclass

from rohrpost.changes import AddHeader
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.result import Action, AuthResult, FilterResult, Symbol, Verdict


@dataclass(frozen=True)
class Options:
    score: float = 1.5


class ServeProbe(Filter):
    name = "serve-probe"
    description = "test probe: X-Serve-Probe header; verdict from the Subject"
    stage = Stage.EOM
    Options = Options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        env = mail.envelope
        assert mail.message is not None
        subject = mail.message.get("Subject").lower()
        seen = (f"client={env.client_ip} name={env.client_name or '-'} helo={env.helo} "
                f"queue={env.queue_id} from={env.mail_from or '<>'} rcpts={','.join(env.rcpts)} "
                f"proto={env.macros.get('proto', '-')}")
        verdict = None
        if "buy now" in subject:
            verdict = Verdict.of(Action.REJECT, "550 5.7.1 No spam please", "buy now", self.name)
        elif "tempfail me" in subject:
            verdict = Verdict.of(Action.TEMPFAIL, "451 4.7.1 Come back later", "t", self.name)
        elif "quarantine me" in subject:
            verdict = Verdict.of(Action.QUARANTINE, "", "held for review", self.name)
        elif "discard me" in subject:
            verdict = Verdict.of(Action.DISCARD, "", "dropped", self.name)
        elif "crash me" in subject:
            raise RuntimeError("probe crashed with secret detail")
        return FilterResult(verdict=verdict,
                            symbols=[Symbol("SERVE_PROBE", self.options.score, "probe")],
                            changes=[AddHeader("X-Serve-Probe", seen)],
                            auth=[AuthResult("x-probe", "pass",
                                             props=(("smtp.client", env.client_ip),))])


FILTER = ServeProbe
