"""Who holds which role: organisational data, kept apart from the policy.

The policy says *which roles* may attest a safeguard or approve a resume; the
roster says *which people* hold those roles today. Changing who the CISO is must
never mean editing (and re-hashing) the policy, so the two are separate files.

Format (YAML, at `<home>/roster.yaml` by default)::

    people:
      alice:
        roles: [ciso]
        slack_user_id: U012ABCDEF   # optional; used to map Slack actions to a person
        name: Alice Example         # optional, for display
        public_keys:                # optional; OpenSSH ed25519 lines whose signatures are alice's
          - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop
      bob:
        roles: [rso, ceo]

Strict: unknown keys, a person listed twice, a duplicated role, one Slack user id
or one public key shared by two people, or a key that is not an ed25519 OpenSSH
line are errors, because a misread roster could let one person count as two
approvers or claim a role they do not hold.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from policy.schema import Identifier
from tasks.safeguards._text import describe_validation, load_yaml
from tasks.trust.keys import KeyProblem, fingerprint, parse_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_ROSTER_BYTES = 1024 * 1024
ROSTER_FILE = "roster.yaml"
ROSTER_ENV = "RSP_ROSTER"

SlackUserId = Annotated[str, StringConstraints(strict=True, pattern=r"^[UW][A-Z0-9]{2,30}$")]


class RosterError(ValueError):
    """A roster that cannot be used; the message is one line naming the file."""


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    roles: list[Identifier] = Field(default_factory=list)
    slack_user_id: SlackUserId | None = None
    name: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)] | None = None
    public_keys: list[Annotated[str, StringConstraints(strict=True, max_length=4096)]] = Field(default_factory=list)

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("lists a role twice")
        return roles

    @field_validator("public_keys")
    @classmethod
    def _ed25519_lines(cls, lines: list[str]) -> list[str]:
        for i, line in enumerate(lines):
            try:
                parse_public_key(line)
            except KeyProblem as exc:
                raise ValueError(f"[{i}]: {exc}") from None
        return lines


class Roster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    people: dict[Identifier, Person] = Field(default_factory=dict)
    # person id -> {fingerprint: key}, parsed once at load
    _keys: dict[str, dict[str, Ed25519PublicKey]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique_keys(self) -> Roster:
        owner: dict[str, str] = {}
        for pid, person in self.people.items():
            mine: dict[str, Ed25519PublicKey] = {}
            for line in person.public_keys:
                key = parse_public_key(line)
                fp = fingerprint(key)
                if fp in owner and owner[fp] != pid:
                    raise ValueError(f"people.{pid}.public_keys: key {fp} is also people.{owner[fp]}'s; "
                                     "one key must never count as two people")
                owner[fp] = pid
                mine[fp] = key
            self._keys[pid] = mine
        return self

    def keys_of(self, person_id: str) -> dict[str, Ed25519PublicKey]:
        """{fingerprint: public key} the roster lists for this person (empty when none)."""
        return dict(self._keys.get(person_id, {}))

    def all_keys(self) -> list[tuple[str, str, Ed25519PublicKey]]:
        """(person id, fingerprint, key) for every listed key."""
        return [(pid, fp, key) for pid, keys in self._keys.items() for fp, key in keys.items()]

    def owner_of(self, key_fingerprint: str) -> str | None:
        return next((pid for pid, fp, _ in self.all_keys() if fp == key_fingerprint), None)

    @model_validator(mode="after")
    def _unique_slack_ids(self) -> Roster:
        seen: dict[str, str] = {}
        for pid, person in self.people.items():
            if person.slack_user_id is None:
                continue
            if person.slack_user_id in seen:
                raise ValueError(
                    f"people.{pid}.slack_user_id: {person.slack_user_id} is also "
                    f"people.{seen[person.slack_user_id]}'s; one Slack user must map to one person"
                )
            seen[person.slack_user_id] = pid
        return self

    def person(self, person_id: str) -> Person | None:
        return self.people.get(person_id)

    def roles_of(self, person_id: str) -> frozenset[str]:
        p = self.people.get(person_id)
        return frozenset() if p is None else frozenset(p.roles)

    def holds(self, person_id: str, role: str) -> bool:
        return role in self.roles_of(person_id)

    def people_with_role(self, role: str) -> list[str]:
        return sorted(pid for pid, p in self.people.items() if role in p.roles)

    def by_slack_user_id(self, slack_user_id: str) -> str | None:
        """The person id whose roster entry carries this Slack user id, or None."""
        for pid, p in self.people.items():
            if p.slack_user_id == slack_user_id:
                return pid
        return None


def parse_roster(text: str, source: str = "<roster>") -> Roster:
    try:
        data: Any = load_yaml(text)
    except ValueError as exc:
        raise RosterError(f"{source}: {exc}") from None
    if data is None:
        raise RosterError(f"{source}: empty roster")
    if not isinstance(data, dict):
        raise RosterError(f"{source}: expected a mapping with 'people' at the top level, got {type(data).__name__}")
    try:
        return Roster.model_validate(data)
    except ValidationError as exc:
        raise RosterError(f"{source}: {describe_validation(exc)}") from None


def load_roster(path: str | Path) -> Roster:
    """Read and validate a roster file. A missing or unreadable file is an error, never an empty roster:
    an empty roster would make every attestation 'forged', which is safe, but the message would mislead."""
    p = Path(path)
    try:
        if p.is_dir():
            raise RosterError(f"{p}: is a folder, expected a roster YAML file")
        size = p.stat().st_size
        if size > MAX_ROSTER_BYTES:
            raise RosterError(f"{p}: {size} bytes, over the {MAX_ROSTER_BYTES}-byte limit")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RosterError(f"{p}: no such roster file") from None
    except PermissionError:
        raise RosterError(f"{p}: permission denied") from None
    except UnicodeDecodeError:
        raise RosterError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise RosterError(f"{p}: {exc.strerror or exc}") from None
    return parse_roster(text, str(p))


def default_roster_path(settings: Any = None) -> Path:
    """`settings.roster` if that field exists and is set, else $RSP_ROSTER, else <home>/roster.yaml."""
    configured = getattr(settings, "roster", None) if settings is not None else None
    if configured:
        return Path(configured)
    env = os.environ.get(ROSTER_ENV)
    if env:
        return Path(env)
    home = getattr(settings, "home", None) if settings is not None else None
    return Path(home if home is not None else ".rsp") / ROSTER_FILE
