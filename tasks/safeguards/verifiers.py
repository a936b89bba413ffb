"""The verifier interface, the registry, and the round that checks every required safeguard.

A verifier is a callable `(safeguard, ctx) -> Verdict`. Attestation-verified
safeguards go to the verifier registered as "attestation"; automated ones go to
the verifier registered under their `check` name. The two namespaces are apart,
so an automated check called "attestation" can never reach the attestation
verifier.

`verify_safeguards` is the fail-closed shell around them: a missing verifier, a
verifier that raises, or one that returns something other than a `Verdict` all
give `unknown`, which the engine counts as unmet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from policy.determination import SafeguardCheck, SafeguardRequirement, SafeguardState
from policy.schema import Policy, Safeguard
from tasks.registry import Registry
from tasks.safeguards._text import one_line
from tasks.safeguards.context import VerificationContext

Method = Literal["attestation", "automated"]
MAX_EVIDENCE_CHARS = 2000
_STATES = frozenset(get_args(SafeguardState))


@dataclass(frozen=True)
class Verdict:
    state: SafeguardState
    evidence: str

    @classmethod
    def met(cls, evidence: str) -> Verdict:
        return cls("met", evidence)

    @classmethod
    def unmet(cls, evidence: str) -> Verdict:
        return cls("unmet", evidence)

    @classmethod
    def expired(cls, evidence: str) -> Verdict:
        return cls("expired", evidence)

    @classmethod
    def unknown(cls, evidence: str) -> Verdict:
        return cls("unknown", evidence)


class SafeguardVerifier(Protocol):
    def __call__(self, safeguard: Safeguard, ctx: VerificationContext) -> Verdict: ...


def _name(method: Method, check: str) -> str:
    # Registered as "<method>:<name>": an automated check called "attestation" never reaches attestations.
    return f"{method}:{check}"


# Built-ins by module path; boto3 and httpx are imported only when their check runs.
VERIFIERS: Registry[SafeguardVerifier] = Registry(
    "verifier",
    entry_point_group="rsp_gate.verifiers",
    builtins={
        _name("attestation", "attestation"): "tasks.safeguards.attestation",
        _name("automated", "checkpoint_bucket_hardening"): "tasks.safeguards.bucket_hardening",
        _name("automated", "misuse_classifier_probe"): "tasks.safeguards.probe",
    },
)


def _method(name: str, method: Method | None) -> Method:
    return method or ("attestation" if name == "attestation" else "automated")


def register_verifier(name: str, *, method: Method | None = None, replace: bool = False
                      ) -> Callable[[SafeguardVerifier], SafeguardVerifier]:
    """Decorator: `@register_verifier("attestation")` or `@register_verifier("<check name>")`.

    `method` defaults to "attestation" for the name "attestation" and "automated"
    otherwise. Registering a name twice is an error unless `replace=True`, so two
    modules cannot silently fight over one check.
    """
    return VERIFIERS.register(_name(_method(name, method), name), replace=replace)


def unregister_verifier(name: str, *, method: Method | None = None) -> None:
    VERIFIERS.remove(_name(_method(name, method), name))


def _key(safeguard: Safeguard) -> tuple[Method, str]:
    v = safeguard.verification
    if v.method == "attestation":
        return "attestation", "attestation"
    return "automated", v.check


def verifier_for(safeguard: Safeguard) -> SafeguardVerifier | None:
    return VERIFIERS.find(_name(*_key(safeguard)))


def _clip(text: str) -> str:
    text = one_line(text)
    return text if len(text) <= MAX_EVIDENCE_CHARS else text[: MAX_EVIDENCE_CHARS - 1] + "…"


def verify_safeguard(safeguard: Safeguard, ctx: VerificationContext) -> SafeguardCheck:
    """Run one safeguard's verifier. Never raises for anything the verifier does."""
    def check(state: SafeguardState, evidence: str) -> SafeguardCheck:
        return SafeguardCheck(id=safeguard.id, state=state, evidence=_clip(evidence), checked_at=ctx.checked_at)

    method, name = _key(safeguard)
    verifier = verifier_for(safeguard)
    if verifier is None:
        what = "attestations" if method == "attestation" else f"check '{name}'"
        return check("unknown", f"no verifier registered for {what}")
    try:
        verdict = verifier(safeguard, ctx)
    except Exception as exc:  # noqa: BLE001 - fail closed: any failure of a verifier reads as unknown
        return check("unknown", f"verifier for {method} '{name}' failed: {type(exc).__name__}: {exc}")
    if not isinstance(verdict, Verdict) or verdict.state not in _STATES or not isinstance(verdict.evidence, str):
        return check("unknown", f"verifier for {method} '{name}' returned {verdict!r}, not a Verdict")
    return check(verdict.state, verdict.evidence or "(no evidence given)")


def verify_safeguards(
    policy: Policy, requirements: Iterable[SafeguardRequirement | str], ctx: VerificationContext
) -> dict[str, SafeguardCheck]:
    """Check each required safeguard; returns {safeguard id: SafeguardCheck} for `classify`/`decide`.

    A requirement naming a safeguard the policy does not define reads `unknown`.
    """
    out: dict[str, SafeguardCheck] = {}
    for req in requirements:
        sid = req if isinstance(req, str) else req.id
        if sid in out:
            continue
        try:
            safeguard = policy.safeguard(sid)
        except KeyError:
            out[sid] = SafeguardCheck(id=sid, state="unknown", checked_at=ctx.checked_at,
                                      evidence=f"safeguard '{sid}' is not defined in policy {policy.framework.id}")
            continue
        out[sid] = verify_safeguard(safeguard, ctx)
    return out
