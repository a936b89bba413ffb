"""Policy change control: every difference between two policies, and whether it loosens the policy.

A policy change is reviewed the way code is: someone proposes a new file, and the
reviewers need to see what it changes in words, with every loosening called out
(a higher threshold, a dropped safeguard, a smaller quorum). The diff therefore
has two layers:

1. A structural diff of the two policies' canonical data (`canonical_data`), so
   that nothing which changes `policy_sha256` can go unlisted. Lists of items with
   an id are matched by id, measures by benchmark and metric, lists of ids as
   sets (with a separate entry when only their order or repetition changed).
2. A rule per schema path (`thresholds[*].measures[*].threshold`) that says what
   the change means and whether it loosens the policy. Where the direction cannot
   be judged from the data alone (a new runner, a new benchmark version, a new
   bootstrap seed) the change is treated as loosening: in a safety gate an
   unflagged loosening costs more than a needless review.

A role renamed consistently is one change of kind "renamed", not a removal and an
addition in every approver rule and attester list (see `_role_renames` for what
"consistently" means). Everything else is then compared in the new role names.

Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from policy.identity import canonical_data
from policy.schema import Policy

ChangeKind = Literal["added", "removed", "changed", "renamed"]


@dataclass(frozen=True)
class Change:
    """One difference between two policies.

    `path` names list items by id where they have one (`thresholds[CBRN-3]`),
    measures by `benchmark:metric` when that is unique in both policies, entries of
    id lists by the id itself (`levels[ASL-3].requires[secure-weights]`), and by
    index otherwise. A path that ends at a list (`levels`) is a change of order.
    A role renamed consistently is one "renamed" change at `roles[<old id>]`, with
    the old and new ids as its values.
    """

    path: str
    kind: ChangeKind
    old: Any
    new: Any
    loosens: bool
    why: str


def diff_policies(old: Policy, new: Policy) -> list[Change]:
    """Every difference between `old` and `new`, ordered by path."""
    before, after = canonical_data(old), canonical_data(new)
    renames = _role_renames(before, after)
    differ = _Differ(old, new)
    differ.walk((), _with_roles_renamed(before, renames), after, ())
    for old_id, new_id in renames.items():
        differ.renamed(old_id, new_id, sorted(_role_uses(before)[old_id]))
    return [change for _, change in sorted(differ.found, key=lambda pair: pair[0])]


def summarize(changes: Sequence[Change]) -> str:
    """One line per change, loosening ones marked LOOSENS; the CLI adds totals."""
    if not changes:
        return "no changes"
    width = max(len(c.kind) for c in changes)
    return "\n".join(
        f"{'LOOSENS' if c.loosens else '       '}  {c.kind:<{width}}  {c.path}: {c.why}" for c in changes
    )


# --------------------------------------------------------------------------- structural diff


class _Seg(NamedTuple):
    item: bool  # False: a mapping key (".name"); True: a list entry ("[key]")
    key: str | int


Path = tuple[_Seg, ...]


def _render(path: Path) -> str:
    out = ""
    for seg in path:
        out += f"[{seg.key}]" if seg.item else ("." if out else "") + str(seg.key)
    return out


def _pattern(path: Path) -> str:
    out = ""
    for seg in path:
        out += "[*]" if seg.item else ("." if out else "") + str(seg.key)
    return out


def _sort_key(path: Path) -> tuple[tuple[int, str, int], ...]:
    # Indices sort as numbers (measures[2] before measures[10]); one list never mixes ids and indices.
    return tuple(
        (
            1 if seg.item else 0,
            seg.key if isinstance(seg.key, str) else "",
            seg.key if isinstance(seg.key, int) else -1,
        )
        for seg in path
    )


def _canon(value: Any) -> str:
    # Compare as the hash does: 1 and 1.0, or 1 and true, are different canonical values.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Free-form mappings whose keys the schema does not name: shown whole, as one change.
_OPAQUE = {"benchmarks[*].runner", "safeguards[*].verification.params", "approvals.trusted_unsigned_channels",
           "safeguards[*].verification.trusted_unsigned_channels"}
# Tagged unions: when the tag differs the other fields mean different things, so the value is one change.
_DISCRIMINATED = {"safeguards[*].verification": "method"}
_MEASURES = "thresholds[*].measures"


def _measure_key(measure: dict[str, Any]) -> str:
    return f"{measure['benchmark']}:{measure['metric']}"


class _Differ:
    def __init__(self, old: Policy, new: Policy) -> None:
        self.before = old
        self.after = new
        self.found: list[tuple[tuple[tuple[int, str, int], ...], Change]] = []

    def walk(self, path: Path, old: Any, new: Any, parents: tuple[tuple[Any, Any], ...]) -> None:
        if _canon(old) == _canon(new):
            return
        pattern = _pattern(path)
        tag = _DISCRIMINATED.get(pattern)
        if (
            isinstance(old, dict)
            and isinstance(new, dict)
            and pattern not in _OPAQUE
            and (tag is None or old.get(tag) == new.get(tag))
        ):
            inner = (*parents, (old, new))
            for name in sorted(old.keys() | new.keys()):
                sub = (*path, _Seg(False, name))
                if name not in new:
                    self.emit(sub, "removed", old[name], None, inner)
                elif name not in old:
                    self.emit(sub, "added", None, new[name], inner)
                else:
                    self.walk(sub, old[name], new[name], inner)
        elif isinstance(old, list) and isinstance(new, list):
            self.walk_list(path, old, new, parents)
        else:
            self.emit(path, "changed", old, new, parents)

    def walk_list(
        self, path: Path, old: list[Any], new: list[Any], parents: tuple[tuple[Any, Any], ...]
    ) -> None:
        inner = (*parents, (old, new))
        keys = _list_keys(_pattern(path), old, new)
        if keys is None:
            for i in range(max(len(old), len(new))):
                sub = (*path, _Seg(True, i))
                if i >= len(new):
                    self.emit(sub, "removed", old[i], None, inner)
                elif i >= len(old):
                    self.emit(sub, "added", None, new[i], inner)
                else:
                    self.walk(sub, old[i], new[i], inner)
            return
        old_keys, new_keys = keys
        old_by = dict(zip(old_keys, old, strict=True))
        new_by = dict(zip(new_keys, new, strict=True))
        renamed = _pair_measures(old_by, new_by) if _pattern(path) == _MEASURES else {}
        paired_old = set(renamed.values())
        for key, old_item in old_by.items():
            if key not in new_by and key not in paired_old:
                self.emit((*path, _Seg(True, key)), "removed", old_item, None, inner)
        for key, new_item in new_by.items():
            if key in old_by:
                self.walk((*path, _Seg(True, key)), old_by[key], new_item, inner)
            elif key in renamed:
                # A measure whose metric changed keeps its old key, so the change reads as "metric: a -> b".
                self.walk((*path, _Seg(True, renamed[key])), old_by[renamed[key]], new_item, inner)
            else:
                self.emit((*path, _Seg(True, key)), "added", None, new_item, inner)
        # Entries added or removed are listed above; what else differs is order (or, in id lists, repetition).
        new_as_old = [renamed.get(k, k) for k in new_keys]
        common = set(old_keys) & set(new_as_old)
        if [k for k in old_keys if k in common] != [k for k in new_as_old if k in common]:
            scalar = all(isinstance(v, str) for v in old + new)
            self.emit(path, "changed", old if scalar else old_keys, new if scalar else new_keys, parents)

    def emit(
        self, path: Path, kind: ChangeKind, old: Any, new: Any, parents: tuple[tuple[Any, Any], ...]
    ) -> None:
        site = _Site(path, kind, old, new, parents, self.before, self.after)
        loosens, why = _RULES.get(_pattern(path), _unjudged)(site)
        self.found.append((_sort_key(path), Change(_render(path), kind, old, new, loosens, why)))

    def renamed(self, old_id: str, new_id: str, places: list[str]) -> None:
        path: Path = (_Seg(False, "roles"), _Seg(True, old_id))
        where = f"in every place that names it ({', '.join(places)})" if places else "(no rule names it)"
        why = (
            f"role {old_id} renamed to {new_id} {where}, and {new_id} is not a role of the old policy: "
            f"the same rules bind under the new name; the roster must give {new_id} to the people who held "
            f"{old_id}, and evidence recorded as {old_id} no longer counts"
        )
        self.found.append((_sort_key(path), Change(_render(path), "renamed", old_id, new_id, False, why)))


def _list_keys(pattern: str, old: list[Any], new: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """How to match entries across the two lists, or None to match by index."""
    items = old + new
    if all(isinstance(v, str) for v in items):
        # Lists of ids are sets in meaning; repeats are matched by value and reported as a reordering.
        return list(old), list(new)
    if not all(isinstance(v, dict) for v in items):
        return None
    if pattern == _MEASURES and all("benchmark" in v and "metric" in v for v in items):
        old_keys, new_keys = [_measure_key(v) for v in old], [_measure_key(v) for v in new]
    elif all(isinstance(v.get("id"), str) for v in items):
        old_keys, new_keys = [v["id"] for v in old], [v["id"] for v in new]
    else:
        return None
    if len(set(old_keys)) != len(old_keys) or len(set(new_keys)) != len(new_keys):
        return None
    return old_keys, new_keys


def _pair_measures(old_by: dict[str, Any], new_by: dict[str, Any]) -> dict[str, str]:
    """New key -> old key for measures whose metric changed: a benchmark's only unmatched one per side."""
    gone: dict[str, list[str]] = {}
    came: dict[str, list[str]] = {}
    for key, measure in old_by.items():
        if key not in new_by:
            gone.setdefault(measure["benchmark"], []).append(key)
    for key, measure in new_by.items():
        if key not in old_by:
            came.setdefault(measure["benchmark"], []).append(key)
    return {
        came[b][0]: gone[b][0]
        for b in sorted(gone.keys() & came.keys())
        if len(gone[b]) == 1 and len(came[b]) == 1
    }


# --------------------------------------------------------------------------- role renames


def _role_uses(data: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Each role id -> the places that name it: every spot the schema lets a policy name a role.

    A role reference added to the schema must be added here too; until it is, a rename
    still shows up there as a removal and an addition, so nothing is hidden, only noisier.
    """
    uses: dict[str, set[str]] = {role["id"]: set() for role in data["roles"]}
    for sg in data["safeguards"]:
        if sg["verification"]["method"] == "attestation":
            for role in sg["verification"]["roles"]:
                uses.setdefault(role, set()).add(f"safeguards[{sg['id']}].verification.roles")
    for field in ("roles", "must_include"):
        for role in data["approvals"][field]:
            uses.setdefault(role, set()).add(f"approvals.{field}")
    return {role: frozenset(places) for role, places in uses.items()}


def _role_renames(old: dict[str, Any], new: dict[str, Any]) -> dict[str, str]:
    """Old role id -> new role id, for each role renamed consistently.

    Who holds a role is the roster's business, keyed by role id, so a role's powers are
    the places that name it. A rename from A to B is consistent, and changes no powers,
    only when all of these hold:

    - A is a role of the old policy and not of the new one; B is a role of the new policy
      and not of the old one. Renaming onto a role that exists (a merge), swapping two
      ids, or shifting ids along a chain would hand one role's powers to the holders of
      another, so none of them is a rename.
    - B is named in exactly the places A was: every safeguard A could attest and only
      those, approver roles if and only if A was one, must_include if and only if A was
      in it. A place left behind, dropped or added on the way is not a rename.
    - No other role that left has the same places, and no other new role: otherwise two
      roles could be folded into one (or one split in two) and called a rename.

    Anything that fails a condition is reported entry by entry, as without this rule.
    """
    old_uses, new_uses = _role_uses(old), _role_uses(new)
    gone = sorted(set(old_uses) - set(new_uses))
    came = sorted(set(new_uses) - set(old_uses))
    renames: dict[str, str] = {}
    for old_id in gone:
        same_gone = [r for r in gone if old_uses[r] == old_uses[old_id]]
        same_came = [r for r in came if new_uses[r] == old_uses[old_id]]
        if len(same_gone) == 1 and len(same_came) == 1:
            renames[old_id] = same_came[0]
    return renames


def _with_roles_renamed(data: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """`data` with each renamed role id replaced in every place `_role_uses` reads."""
    if not renames:
        return data

    def swap(ids: list[str]) -> list[str]:
        return [renames.get(r, r) for r in ids]

    out = copy.deepcopy(data)
    for role in out["roles"]:
        role["id"] = renames.get(role["id"], role["id"])
    for sg in out["safeguards"]:
        if sg["verification"]["method"] == "attestation":
            sg["verification"]["roles"] = swap(sg["verification"]["roles"])
    for field in ("roles", "must_include"):
        out["approvals"][field] = swap(out["approvals"][field])
    return out


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class _Site:
    path: Path
    kind: ChangeKind
    old: Any
    new: Any
    parents: tuple[tuple[Any, Any], ...]  # (old, new) of each enclosing container, outermost first
    before: Policy
    after: Policy

    def up(self, n: int) -> tuple[Any, Any]:
        """The (old, new) container n levels above the changed value (1: its parent)."""
        return self.parents[-n]

    @property
    def key(self) -> str | int:
        return self.path[-1].key


Verdict = tuple[bool, str]
Rule = Callable[[_Site], Verdict]


def _fmt(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # Two decimals read best for scores (0.50); anything finer is shown in full rather than rounded away.
        return f"{value:.2f}" if round(value, 2) == value else repr(value)
    if isinstance(value, (dict, list)):
        return _canon(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_to(site: _Site) -> str:
    return f"from {_fmt(site.old)} to {_fmt(site.new)}"


def _uncomparable(noun: str, site: _Site) -> Verdict:
    return True, f"{noun} changed {_from_to(site)}, which cannot be compared, so it counts as loosening"


def _unjudged(site: _Site) -> Verdict:
    # Reached only if the schema grows a field no rule knows: list it, and make a reviewer look.
    return True, f"{_pattern(site.path)} {site.kind}: no rule judges this field, so it counts as loosening"


def _descriptive(noun: str) -> Rule:
    def rule(site: _Site) -> Verdict:
        short = all(v is None or len(_fmt(v)) <= 60 for v in (site.old, site.new))
        values = f" {_from_to(site)}" if short else ""
        return False, f"{noun} changed{values}: descriptive, no effect on decisions"

    return rule


def _opaque(noun: str, reason: str) -> Rule:
    """A change whose direction the data cannot tell: it counts as loosening so a reviewer looks."""

    def rule(site: _Site) -> Verdict:
        short = all(len(_fmt(v)) <= 80 for v in (site.old, site.new))
        values = f" {_from_to(site)}" if short else ""
        return True, f"{noun} changed{values}: {reason}; no rule can judge that, so it counts as loosening"

    return rule


def _transitions(noun: str, table: dict[tuple[Any, Any], Verdict]) -> Rule:
    """A choice among a few values: each known (old, new) pair has its verdict; any other is uncomparable."""

    def rule(site: _Site) -> Verdict:
        known = table.get((site.old, site.new))
        return known if known is not None else _uncomparable(noun, site)

    return rule


def _scale(
    noun: str, loosen_when: Literal["raised", "lowered"] | None, if_raised: str, if_lowered: str
) -> Rule:
    """A number whose direction decides: `loosen_when` is the permissive direction (None: neither is)."""

    def rule(site: _Site) -> Verdict:
        if not (_is_number(site.old) and _is_number(site.new)):
            return _uncomparable(noun, site)
        moved: Literal["raised", "lowered"] = "raised" if site.new > site.old else "lowered"
        meaning = if_raised if moved == "raised" else if_lowered
        return moved == loosen_when, f"{noun} {moved} {_from_to(site)}: {meaning}"

    return rule


def _lag_bound(noun: str, index: int) -> Rule:
    """One bound of the evaluation-lag rule, judged with the defaults applied: stating the default, or
    removing a stated value equal to it, changes nothing; a larger bound lets a run go further unchecked."""

    def rule(site: _Site) -> Verdict:
        old, new = site.before.cadence.lag_bound()[index], site.after.cadence.lag_bound()[index]
        if new == old:
            return False, f"{noun} {_from_to(site)}: the same bound once defaults apply ({new})"
        moved = "raised" if new > old else "lowered"  # type: ignore[operator]
        meaning = ("a scaling run may go further without a determination" if moved == "raised"
                   else "a scaling run halts sooner without a determination")
        return moved == "raised", f"{noun} {moved} from {old} to {new} (defaults applied): {meaning}"

    return rule


def _noise_levels(site: _Site) -> Verdict:
    """The noise probe's levels, judged with the defaults applied: dropping (or changing) a level
    the old policy probed at is loosening; only adding levels is not."""
    old = site.before.anomaly_checks.noise_probe().levels
    new = site.after.anomaly_checks.noise_probe().levels
    dropped = sorted(set(old) - set(new))
    if not dropped:
        return False, f"noise-probe levels {list(old)} -> {list(new)} (defaults applied): none dropped"
    off = " (the probe is off)" if not new else ""
    return True, (f"noise-probe levels {list(old)} -> {list(new)} (defaults applied){off}: sigma "
                  f"{', '.join(f'{x:g}' for x in dropped)} no longer probed, so a lock that only breaks there "
                  "goes unflagged")


def _noise_setting(noun: str, loosen_when: Literal["raised", "lowered"], if_raised: str, if_lowered: str) -> Rule:
    """A numeric noise-probe setting, judged with the defaults applied (stating the default changes nothing)."""

    def rule(site: _Site) -> Verdict:
        old = getattr(site.before.anomaly_checks.noise_probe(), noun)
        new = getattr(site.after.anomaly_checks.noise_probe(), noun)
        if new == old:
            return False, f"noise-probe {noun} {_from_to(site)}: the same once defaults apply ({new:g})"
        moved: Literal["raised", "lowered"] = "raised" if new > old else "lowered"
        meaning = if_raised if moved == "raised" else if_lowered
        return moved == loosen_when, f"noise-probe {noun} {moved} from {old:g} to {new:g} (defaults applied): {meaning}"

    return rule


def _member(
    noun: str, loosen_when: Literal["added", "removed"] | None, if_added: str, if_removed: str
) -> Rule:
    """An entry appearing in or disappearing from a set (ids in a list, or items keyed by id)."""

    def rule(site: _Site) -> Verdict:
        if site.kind == "changed":
            # Only lists matched by index get here: an entry replaced is one removed and one added.
            return True, f"{noun} at position {site.key} replaced {_from_to(site)}, so it counts as loosening"
        meaning = if_added if site.kind == "added" else if_removed
        return site.kind == loosen_when, f"{noun} {site.key} {site.kind}: {meaning}"

    return rule


def _order(noun: str) -> Rule:
    def rule(site: _Site) -> Verdict:
        return False, f"order of {noun} changed: the order has no effect on decisions"

    return rule


def _levels_order(site: _Site) -> Verdict:
    why = f"safety levels reordered {_from_to(site)}: a level's rank decides what a crossed threshold demands"
    return True, f"{why}, so a reorder can lower it"


def _domain_status(site: _Site) -> Verdict:
    if site.old == "tracked":
        return True, f"domain status changed {_from_to(site)}: its thresholds no longer gate scaling"
    if site.new == "tracked":
        return False, f"domain status changed {_from_to(site)}: its thresholds now gate scaling"
    return False, f"domain status changed {_from_to(site)}: its thresholds never gate, either way"


def _triggers_level(site: _Site) -> Verdict:
    change = f"triggers_level changed {_from_to(site)}"
    if site.new is None:
        return True, f"{change}: crossing the threshold is reported but no longer demands a safety level"
    if site.old is None:
        return False, f"{change}: crossing the threshold now demands a safety level"
    # Rank in the new order is what the new policy will apply; fall back to the old order if a level left.
    for policy in (site.after, site.before):
        ranks = {lv.id: i for i, lv in enumerate(policy.levels)}
        if site.old in ranks and site.new in ranks:
            lower = ranks[site.new] < ranks[site.old]
            moved, level = ("lowered", "a lower") if lower else ("raised", "a higher")
            return lower, f"triggers_level {moved} {_from_to(site)}: crossing it now demands {level} level"
    # Neither order holds both levels: compare what they demand.
    old_requires = set(site.before.levels[site.before.level_rank(site.old)].requires)
    new_requires = set(site.after.levels[site.after.level_rank(site.new)].requires)
    lost = sorted(old_requires - new_requires)
    if lost:
        return True, f"{change}: the new level no longer demands {', '.join(lost)}"
    return False, f"{change}: the new level demands at least the old one's safeguards"


def _measure_presence(site: _Site) -> Verdict:
    # Under "any" a measure is one more way to cross; under "all", one more condition to meet.
    # If combine changed too, either reading may apply, so the loosening one wins.
    old_t, new_t = site.up(2)
    combines = {old_t["combine"], new_t["combine"]}
    bench = (site.old if site.kind == "removed" else site.new)["benchmark"]
    loosening = "any" if site.kind == "removed" else "all"
    loosens = loosening in combines
    combine = loosening if loosens else next(iter(combines))
    effect = {
        ("removed", "any"): "one fewer way to cross it",
        ("removed", "all"): "one fewer condition to meet, so it crosses more easily",
        ("added", "any"): "one more way to cross it",
        ("added", "all"): "one more condition to meet before it crosses",
    }[(site.kind, combine)]
    return loosens, f"measure on {bench} {site.kind} under combine '{combine}': {effect}"


def _upward(comparison: Any) -> bool:
    return comparison in (">=", ">")


def _comparison(site: _Site) -> Verdict:
    if _upward(site.old) != _upward(site.new):
        return True, (
            f"comparison reversed {_from_to(site)}: the rule now fires on the other side of the threshold, "
            "so it counts as loosening"
        )
    if site.old in (">=", "<=") and site.new in (">", "<"):
        return (
            True,
            f"comparison changed {_from_to(site)}: a score exactly at the threshold no longer crosses it",
        )
    return False, f"comparison changed {_from_to(site)}: a score exactly at the threshold now crosses it"


def _cutoff(noun: str, fires: str) -> Rule:
    """threshold / early_warning: which way is permissive depends on the measure's comparison."""

    def rule(site: _Site) -> Verdict:
        old_m, new_m = site.up(1)
        moved = "raised" if site.new > site.old else "lowered"
        if _upward(old_m["comparison"]) != _upward(new_m["comparison"]):
            return (
                True,
                f"{noun} {moved} {_from_to(site)} with the comparison reversed, so it counts as loosening",
            )
        up = _upward(new_m["comparison"])
        permissive = (moved == "raised") == up
        if permissive:
            meaning = f"a model must score {'higher' if up else 'lower'} before {fires}"
        else:
            meaning = f"{fires} at a {'lower' if up else 'higher'} score than before"
        return permissive, f"{noun} {moved} {_from_to(site)}: {meaning}"

    return rule


def _measure_min_samples(site: _Site) -> Verdict:
    # Unset means the benchmark's own minimum, so compare what each policy will actually require.
    old_m, new_m = site.up(1)
    old_eff = site.old if site.old is not None else site.before.benchmark(old_m["benchmark"]).min_samples
    new_eff = site.new if site.new is not None else site.after.benchmark(new_m["benchmark"]).min_samples

    def says(value: Any, eff: int) -> str:
        return str(value) if value is not None else f"unset (benchmark default {eff})"

    change = f"min_samples changed from {says(site.old, old_eff)} to {says(site.new, new_eff)}"
    if new_eff < old_eff:
        return True, f"{change}: less evidence is needed before a result counts"
    if new_eff > old_eff:
        return False, f"{change}: more evidence is needed before a result counts"
    return False, f"{change}: the effective minimum stays {new_eff}"


def _verification(site: _Site) -> Verdict:
    old, new = site.old, site.new
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return _uncomparable("verification", site)
    # The whole value is one change, so an older evidence age hidden inside a method change is judged here.
    old_age: Any = old.get("max_age_days")
    new_age: Any = new.get("max_age_days")
    older = _is_number(old_age) and _is_number(new_age) and new_age > old_age
    age = f"; evidence may now be {new_age} days old instead of {old_age}" if older else ""
    methods = (old.get("method"), new.get("method"))
    if methods == ("automated", "attestation"):
        return (
            True,
            f"verification changed from an automated check to a human attestation: weaker evidence{age}",
        )
    if methods == ("attestation", "automated"):
        # Whatever the check, no person in an accountable role vouches for the safeguard any more, and
        # how strong the check is cannot be read from the policy: the reverse is flagged, so is this.
        return (
            True,
            (
                f"verification changed from a human attestation to the automated check {new.get('check')}: "
                "no accountable person vouches for the safeguard any more, and the check's strength cannot "
                f"be judged from the policy{age}"
            ),
        )
    return _uncomparable("verification", site)


_combine = _transitions(
    "combine",
    {
        ("any", "all"): (
            True,
            "combine changed from any to all: the threshold now crosses only when every measure fires",
        ),
        ("all", "any"): (
            False,
            "combine changed from all to any: the threshold now crosses when any one measure fires",
        ),
    },
)
_metric = _transitions(
    "metric",
    {
        ("best_of_k", "mean"): (True, "metric changed from best_of_k to mean: weaker elicitation"),
        ("mean", "best_of_k"): (False, "metric changed from mean to best_of_k: stronger elicitation"),
    },
)
_escalate = _transitions(
    "escalate_on_early_warning",
    {
        (True, False): (True, "escalation turned off: an early warning no longer brings a full assessment"),
        (False, True): (False, "escalation turned on: an early warning now brings a full assessment"),
    },
)
_RULE_OUT_POINT = (
    "rule_out changed from upper_bound to point_estimate: a threshold is ruled out on the point estimate "
    "alone, however wide its interval"
)
_RULE_OUT_BOUND = (
    "rule_out changed from point_estimate to upper_bound: ruling a threshold out needs the whole interval "
    "below it"
)
_rule_out = _transitions(
    "rule_out",
    {
        ("upper_bound", "point_estimate"): (True, _RULE_OUT_POINT),
        ("point_estimate", "upper_bound"): (False, _RULE_OUT_BOUND),
    },
)
# The schema pins this to true; should that ever change, turning it off is the loosening it would be.
_fail_closed_switch = _transitions(
    "undetermined_counts_as_crossed",
    {
        (True, False): (
            True,
            "fail-closed turned off: an undetermined threshold no longer counts as crossed",
        ),
        (False, True): (False, "fail-closed turned on: an undetermined threshold counts as crossed"),
    },
)


def _trusted_pairs(value: Any) -> set[tuple[str, str]]:
    return {(str(role), str(ch)) for role, chans in (value or {}).items() for ch in chans or ()}


def _trusted_unsigned(noun: str) -> Rule:
    """Role -> unsigned channels whose word counts for it: any (role, channel) pair added loosens."""

    def rule(site: _Site) -> Verdict:
        old, new = _trusted_pairs(site.old), _trusted_pairs(site.new)
        added = sorted(new - old)
        removed = sorted(old - new)

        def shown(pairs: list[tuple[str, str]]) -> str:
            return ", ".join(f"{ch} for {role}" for role, ch in pairs)

        if added:
            return True, (f"{noun} now trusted unsigned: {shown(added)}; an unsigned claim of that role "
                          f"now counts" + (f" (no longer trusted: {shown(removed)})" if removed else ""))
        return False, f"{noun} no longer trusted unsigned: {shown(removed) or 'none'}; only signed ones count there"

    return rule


_RULES: dict[str, Rule] = {
    "schema_version": _descriptive("schema_version"),
    "framework.id": _descriptive("framework id"),
    "framework.name": _descriptive("framework name"),
    "framework.version": _descriptive("framework version"),
    "framework.source": _descriptive("framework source"),
    "framework.effective_date": _descriptive("effective date"),
    "framework.operationalisation": _descriptive("operationalisation note"),
    # Roles and domains only name things; who may approve or attest, and what gates, is judged where used.
    "roles": _order("roles"),
    "roles[*]": _member(
        "role",
        None,
        "it gains powers only where approvals or attestations name it",
        "where it was used, that use is listed separately",
    ),
    "roles[*].id": _descriptive("role id"),
    "roles[*].name": _descriptive("role name"),
    "domains": _order("domains"),
    "domains[*]": _member(
        "domain",
        None,
        "it gates only through thresholds that name it",
        "its thresholds and benchmarks are listed separately",
    ),
    "domains[*].id": _descriptive("domain id"),
    "domains[*].name": _descriptive("domain name"),
    "domains[*].status": _domain_status,
    "levels": _levels_order,
    "levels[*]": _member(
        "safety level",
        "removed",
        "it binds only when a threshold triggers it",
        "no rule can demand it any more",
    ),
    "levels[*].id": _descriptive("level id"),
    "levels[*].name": _descriptive("level name"),
    "levels[*].description": _descriptive("level description"),
    "levels[*].requires": _order("the level's required safeguards"),
    "levels[*].requires[*]": _member(
        "required safeguard", "removed", "the level now demands it", "the level no longer demands it"
    ),
    "benchmarks": _order("benchmarks"),
    "benchmarks[*]": _member(
        "benchmark", "removed", "it adds evidence", "its evidence is no longer gathered"
    ),
    "benchmarks[*].id": _descriptive("benchmark id"),
    "benchmarks[*].name": _descriptive("benchmark name"),
    "benchmarks[*].description": _descriptive("benchmark description"),
    "benchmarks[*].proxy_for": _descriptive("benchmark proxy_for"),
    "benchmarks[*].domain": _descriptive("benchmark domain"),
    "benchmarks[*].version": _opaque(
        "benchmark version", "thresholds set on the old version may not carry over"
    ),
    "benchmarks[*].attempts": _scale(
        "attempts",
        "lowered",
        "best-of-k elicitation gets more tries per sample",
        "best-of-k elicitation gets fewer tries per sample",
    ),
    "benchmarks[*].min_samples": _scale(
        "min_samples",
        "lowered",
        "more evidence is needed before a result counts",
        "less evidence is needed before a result counts",
    ),
    "benchmarks[*].chance_score": _opaque("chance_score", "it changes how scores are read against chance"),
    # A timeout makes a result undetermined, which counts as crossed: neither direction lets a model through.
    "benchmarks[*].timeout_s": _scale(
        "timeout_s",
        None,
        "fewer runs time out",
        "more runs may time out, and a timed-out run counts as crossed",
    ),
    "benchmarks[*].runner": _opaque("runner", "how the benchmark runs changed"),
    "thresholds": _order("thresholds"),
    "thresholds[*]": _member(
        "capability threshold",
        "removed",
        "one more rule can raise the required level",
        "the capability is no longer checked",
    ),
    "thresholds[*].id": _descriptive("threshold id"),
    "thresholds[*].name": _descriptive("threshold name"),
    "thresholds[*].description": _descriptive("threshold description"),
    # Whether the new domain gates shows up as a triggers_level change, which the schema forces alongside.
    "thresholds[*].domain": _descriptive("threshold domain"),
    "thresholds[*].combine": _combine,
    "thresholds[*].triggers_level": _triggers_level,
    "thresholds[*].additional_safeguards": _order("additional safeguards"),
    "thresholds[*].additional_safeguards[*]": _member(
        "additional safeguard",
        "removed",
        "crossing the threshold now also demands it",
        "crossing the threshold no longer demands it",
    ),
    "thresholds[*].measures": _order("measures"),
    "thresholds[*].measures[*]": _measure_presence,
    "thresholds[*].measures[*].benchmark": _opaque(
        "measured benchmark", "the rule now reads a different benchmark"
    ),
    "thresholds[*].measures[*].metric": _metric,
    "thresholds[*].measures[*].comparison": _comparison,
    "thresholds[*].measures[*].threshold": _cutoff("threshold", "the threshold counts as crossed"),
    "thresholds[*].measures[*].early_warning": _cutoff("early_warning", "the early warning fires"),
    "thresholds[*].measures[*].min_samples": _measure_min_samples,
    "safeguards": _order("safeguards"),
    "safeguards[*]": _member(
        "safeguard",
        "removed",
        "it binds only where a level or threshold requires it",
        "nothing can demand it any more",
    ),
    "safeguards[*].id": _descriptive("safeguard id"),
    "safeguards[*].name": _descriptive("safeguard name"),
    "safeguards[*].kind": _descriptive("safeguard kind"),
    "safeguards[*].standard": _descriptive("safeguard standard"),
    "safeguards[*].description": _descriptive("safeguard description"),
    "safeguards[*].verification": _verification,
    # A method change is reported on verification as a whole; listed so every schema field has a rule.
    "safeguards[*].verification.method": _verification,
    "safeguards[*].verification.roles": _order("attesting roles"),
    "safeguards[*].verification.roles[*]": _member(
        "attesting role",
        "added",
        "one more role can vouch for the safeguard",
        "one fewer role can vouch for the safeguard",
    ),
    "safeguards[*].verification.max_age_days": _scale(
        "max_age_days", "raised", "older evidence now counts as verified", "evidence must be fresher to count"
    ),
    "safeguards[*].verification.check": _opaque(
        "automated check", "a different check now verifies the safeguard"
    ),
    "safeguards[*].verification.params": _opaque(
        "check parameters", "the check now runs with other settings"
    ),
    "safeguards[*].halts": _order("halted activities"),
    "safeguards[*].halts[*]": _member(
        "halted activity",
        "removed",
        "the safeguard, required and unverified, now also stops it",
        "the safeguard, required and unverified, no longer stops it",
    ),
    "cadence.comprehensive_compute_factor": _scale(
        "comprehensive_compute_factor",
        "raised",
        "effective compute must grow further before a comprehensive assessment",
        "a comprehensive assessment comes after less compute growth",
    ),
    "cadence.comprehensive_max_interval_days": _scale(
        "comprehensive_max_interval_days",
        "raised",
        "comprehensive assessments may be further apart",
        "comprehensive assessments must be closer together",
    ),
    "cadence.escalate_on_early_warning": _escalate,
    "cadence.max_unevaluated_checkpoints": _lag_bound("max_unevaluated_checkpoints", 0),
    "cadence.max_evaluation_lag": _lag_bound("max_evaluation_lag", 1),
    "cadence.preliminary_benchmarks": _order("preliminary benchmarks"),
    "cadence.preliminary_benchmarks[*]": _member(
        "preliminary benchmark",
        "removed",
        "preliminary assessments now run it",
        "preliminary assessments no longer run it",
    ),
    "approvals.roles": _order("approver roles"),
    "approvals.roles[*]": _member(
        "approver role",
        "added",
        "one more role can approve lifting a halt",
        "one fewer role can approve lifting a halt",
    ),
    "approvals.quorum": _scale(
        "quorum",
        "lowered",
        "more approvals are needed to lift a halt",
        "fewer approvals are needed to lift a halt",
    ),
    "approvals.must_include": _order("mandatory approver roles"),
    "approvals.must_include[*]": _member(
        "mandatory approver role",
        "removed",
        "lifting a halt now needs its approval",
        "lifting a halt no longer needs its approval",
    ),
    "approvals.trusted_unsigned_channels": _trusted_unsigned("votes via"),
    "safeguards[*].verification.trusted_unsigned_channels": _trusted_unsigned("attestations"),
    # Reported whole (_OPAQUE); listed so every schema field has a rule.
    "approvals.trusted_unsigned_channels[*]": _trusted_unsigned("votes via"),
    "safeguards[*].verification.trusted_unsigned_channels[*]": _trusted_unsigned("attestations"),
    "fail_closed.undetermined_counts_as_crossed": _fail_closed_switch,
    "fail_closed.rule_out": _rule_out,
    "fail_closed.confidence": _scale(
        "confidence",
        "lowered",
        "intervals are wider, so ruling a threshold out needs more",
        "intervals are narrower, so a threshold is ruled out on less evidence",
    ),
    "fail_closed.bootstrap_resamples": _scale(
        "bootstrap_resamples",
        "lowered",
        "interval bounds are more precise",
        "interval bounds are noisier, and noise can fall on the permissive side",
    ),
    "fail_closed.max_error_rate": _scale(
        "max_error_rate",
        "raised",
        "more failed samples are tolerated before a run is undetermined",
        "fewer failed samples are tolerated before a run is undetermined",
    ),
    "fail_closed.seed": _opaque("bootstrap seed", "a seed can be chosen to land a favourable resample"),
    "anomaly_checks.score_drop_tolerance": _scale(
        "score_drop_tolerance",
        "raised",
        "a larger score drop passes without being flagged as possible sandbagging",
        "a smaller score drop is flagged as possible sandbagging",
    ),
    # The margin widens the at-chance band but also raises the bar an earlier score must clear: no direction.
    "anomaly_checks.chance_margin": _opaque("chance_margin", "it moves both edges of the collapse check"),
    "anomaly_checks.elicitation_gap_bound": _scale(
        "elicitation_gap_bound",
        "raised",
        "a wider best-of-k vs mean gap passes without being flagged",
        "a narrower best-of-k vs mean gap is flagged",
    ),
    "anomaly_checks.noise_levels": _noise_levels,
    "anomaly_checks.noise_levels[*]": _noise_levels,
    "anomaly_checks.noise_subset": _noise_setting(
        "subset", "lowered", "more questions are re-scored under noise", "fewer questions are re-scored under noise"),
    "anomaly_checks.noise_tolerance": _noise_setting(
        "tolerance", "raised", "a larger rise under noise passes without being flagged as possible sandbagging",
        "a smaller rise under noise is flagged as possible sandbagging"),
    "anomaly_checks.noise_scale": _opaque("noise_scale", "relative and absolute sigmas are not comparable"),
    "anomaly_checks.noise_seed": _opaque("noise seed", "a seed can be chosen to land a favourable draw"),
}
