"""Every command exits as README.md's exit-code table says: the table is parsed from the README and each
non-empty cell is run as `python -m rsp …` in a subprocess against a temporary RSP_HOME, so the
documentation and the behaviour cannot drift apart. Plus the promises around it: a bad checkpoint path
costs one line and no Prefect import, no command but the creating ones makes a ledger, and `rsp status` /
`rsp halt list` show where each halt's approval stands.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.policies import TINY_POLICY
from tests.plugins.slack_api import ROSTER_YAML, ApprovalWorld

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DOWN = "http://127.0.0.1:9/api"  # nothing listens on port 9: Prefect cannot be asked


# -- the table ------------------------------------------------------------------------------------------------


def readme_table() -> dict[str, dict[int, str]]:
    """command -> {exit code: when}, from the table under README.md's "Exit codes per command"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("Exit codes per command")
    rows: dict[str, dict[int, str]] = {}
    lines = text[start:].splitlines()
    body = [ln for ln in lines[next(i for i, ln in enumerate(lines) if ln.startswith("| command")):]]
    header = [c.strip() for c in body[0].strip("|").split("|")]
    assert header == ["command", "0", "1", "2"], header
    for line in body[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        command = re.fullmatch(r"`rsp ([a-z -]+)`", cells[0])
        assert command, f"README exit-code row without a `rsp …` command: {line}"
        rows[command.group(1)] = {code: cell for code, cell in zip((0, 1, 2), cells[1:], strict=True)
                                  if not cell.startswith("—")}
    return rows


TABLE = readme_table()
CELLS = [(cmd, code) for cmd, cells in TABLE.items() for code in cells]


# -- a home to run them in --------------------------------------------------------------------------------------


@dataclass
class World:
    home: Path
    env: dict[str, str]
    approvals: ApprovalWorld
    empty_ledger: str  # an existing ledger with nothing in it
    counter: list[int] = field(default_factory=lambda: [0])

    @property
    def url(self) -> str:
        return f"sqlite:///{self.home / 'ledger.db'}"

    def fresh(self, name: str) -> str:
        self.counter[0] += 1
        return f"{name}-{self.counter[0]}"

    def folder(self, name: str) -> Path:
        path = self.home.parent / self.fresh(name)
        path.mkdir()
        return path

    def halt(self, safeguard: str = "sg-sec3", run_id: str | None = None) -> str:
        """A halt of a run of its own (so it closes no other scenario's gate) that lifts once alice (rso) and
        bob (ceo) approve and `safeguard` verifies: sg-base is attested here, sg-sec3 never is."""
        run_id = run_id or self.fresh("run-h")
        return self.approvals.open_halt((safeguard,), run_id=run_id, runs=[run_id]).halt_id

    def vote(self, halt_id: str, person: str, *, channel: str = "cli-signed") -> Any:
        """An approval by `person`, signed with their key (cli-signed), or as delivered by another channel."""
        from tasks.approvals.votes import VoteRequest, record_vote

        req = (self.approvals.signed(halt_id, person) if channel == "cli-signed" else
               VoteRequest(halt_id=halt_id, decision="approve", person=person, justification="checked",
                           channel=channel))  # type: ignore[arg-type]
        return record_vote(req, ledger=self.approvals.ledger, roster=self.approvals.roster())

    def key(self, person: str) -> str:
        return str(self.approvals.keys[person])

    def checkpoint(self, compute: float) -> Path:
        """A new store folder holding one complete checkpoint of a new run."""
        from tasks.manifest import new_manifest
        from tasks.stores.base import checkpoint_key, from_uri

        store = self.folder("store")
        run_id = self.fresh("run-c")
        from_uri(str(store), create=True).put_checkpoint(
            checkpoint_key(run_id, 100), {"weights.bin": run_id.encode()}, new_manifest(run_id, 100, compute))
        return store


def _pipeline_policy(folder: Path) -> Path:
    """The tiny policy with command runners (tests/data/fake_runner.py): the pipeline runs in seconds."""
    data = yaml.safe_load((DATA / "tiny-policy.yaml").read_text())
    cmd = f"{sys.executable} {DATA / 'fake_runner.py'}"
    for b in data["benchmarks"]:
        b["runner"] = {"type": "command", "command": cmd}
        b["timeout_s"] = 60.0
    path = folder / "pipeline-policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from policy.loading import parse_policy
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    base = tmp_path_factory.mktemp("exit-codes")
    home = base / "home"
    home.mkdir()
    from tasks.trust.keys import generate_key_files

    keys: dict[str, Any] = {}  # throwaway ed25519 keys, listed in the roster: votes and attestations are signed
    roster_text = ROSTER_YAML
    for person in ("alice", "bob", "erin", "carol"):
        keys[person], line = generate_key_files(home / "keys", person)
        roster_text = roster_text.replace(f"  {person}: {{roles:", f"  {person}: {{public_keys: ['{line}'], roles:")
    (home / "roster.yaml").write_text(roster_text)
    policy_path = _pipeline_policy(base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSP_")}
    env.update({
        "RSP_HOME": str(home), "RSP_POLICY": str(policy_path), "RSP_ROSTER": str(home / "roster.yaml"),
        "RSP_NOTIFY": "file", "RSP_CONFIG": str(base / "no-config.yaml"), "RSP_NOTIFY_RETRY_BASE_S": "0",
        "PREFECT_API_URL": DOWN, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # fake_runner: bio crosses CBRN-3 around 1e24 FLOP; everything else stays far below.
        "FAKE_MIDPOINTS": '{"bio": 24.0, "chem": 30, "swe": 30, "ctf": 30}', "FAKE_ROWS": "60",
    })
    empty = f"sqlite:///{base / 'empty.db'}"
    (base / BLOCKED).mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("RSP_")]:
            mp.delenv(k)
        for k, v in env.items():
            # Not PREFECT_API_URL: the subprocesses get it from world.env. Set here before the session's
            # server started, its restore at module end would remove the server's URL from os.environ,
            # and later tests' subprocesses would start Prefect's temporary server instead.
            if k != "PREFECT_API_URL":
                mp.setenv(k, v)
        get_settings.cache_clear()
        Ledger(empty, create=True).close()
        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}", create=True)
        approvals = ApprovalWorld(home=home, ledger=ledger, policy=parse_policy(policy_path.read_text(), "p"),
                                  slack=None, keys=keys)
        approvals.attest("sg-base")
        _record_forecast_runs(ledger)
        try:
            yield World(home=home, env=env, approvals=approvals, empty_ledger=empty)
        finally:
            ledger.close()
            get_settings.cache_clear()


def _record_forecast_runs(ledger: Any) -> None:
    """run-rising: three determinations rising toward CBRN-3 (a forecast warning); run-flat: four flat ones."""
    from policy.loading import parse_policy
    from tests.test_forecast import RISING, recorded

    tiny = parse_policy(TINY_POLICY.read_text(), str(TINY_POLICY))
    for step in range(3):
        ledger.record(recorded(tiny, step, RISING[step], "run-rising"), f"file:///ck/run-rising/{step}/")
    for step in range(4):
        ledger.record(recorded(tiny, step, 0.02, "run-flat"), f"file:///ck/run-flat/{step}/")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def rsp(world: World, *argv: str, env: dict[str, str] | None = None, flags: tuple[str, ...] = ()) -> Result:
    proc = subprocess.run([sys.executable, *flags, "-m", "rsp", *argv], capture_output=True, text=True,
                          env={**world.env, **(env or {})}, cwd=world.home.parent, timeout=300, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# -- the scenarios: one or more per non-empty cell of the table -------------------------------------------------

Argv = Callable[[World], list[str]]


@dataclass(frozen=True)
class Scenario:
    label: str
    argv: Argv
    env: dict[str, str] | None = None


# The cells whose command runs flows or asks Prefect and must find it: the rest run with Prefect unreachable.
NEEDS_PREFECT = {("watch", 0), ("watch", 1), ("evaluate", 0), ("evaluate", 1), ("halt reconcile", 0)}


def _bad_policy(w: World) -> str:
    bad = w.folder("bad") / "bad.yaml"
    bad.write_text(TINY_POLICY.read_text().replace("early_warning: 0.5}", "early_warning: 0.9}"))
    return str(bad)


def _loosened(w: World) -> str:
    loose = w.folder("loose") / "loose.yaml"
    loose.write_text(TINY_POLICY.read_text().replace("quorum: 2", "quorum: 1"))
    return str(loose)


def _results(w: World) -> str:
    from tests.plugins.policies import make_table

    path = w.folder("results") / "r.jsonl"
    rows = make_table({"bio": (0.75, 100, 1), "chem": (0.2, 100, 1), "swe": (0.1, 50, 3), "ctf": (0.1, 50, 1)})
    path.write_text("\n".join(json.dumps(r) for r in rows.rows()) + "\n")
    return str(path)


def _checkpoint(w: World, compute: float) -> str:
    return str(next(w.checkpoint(compute).rglob("checkpoint.json")).parent)


def _store_with(w: World, compute: float) -> str:
    return str(w.checkpoint(compute))


def _halted_run(w: World) -> str:
    run_id = w.fresh("run-halted")
    w.halt(run_id=run_id)
    return run_id


def _with_halt(argv: list[str]) -> Argv:
    def build(w: World) -> list[str]:
        w.halt()
        return argv
    return build


def _quorum_then(w: World, safeguard: str) -> str:
    hid = w.halt(safeguard)
    assert w.vote(hid, "bob").ok
    return hid


def _ready_to_lift(w: World) -> str:
    hid = w.halt("sg-base")
    assert w.vote(hid, "bob").ok and w.vote(hid, "alice").tally.satisfied  # recorded in-process: no lift tried
    return hid


def _lifted(w: World) -> str:
    from tasks.approvals.lift import try_lift

    hid = _ready_to_lift(w)
    assert try_lift(hid, ledger=w.approvals.ledger, notify=False).lifted
    return hid


def _tampered(w: World) -> str:
    from tasks.ledger import Ledger

    path = w.folder("tampered") / "ledger.db"
    with Ledger(f"sqlite:///{path}", create=True) as ledger:
        for i in range(5):
            ledger.append("test.event", "s", {"i": i})
    conn = sqlite3.connect(path)
    conn.execute("UPDATE ledger_events SET payload = '{\"i\":70}' WHERE seq = 3")
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def _bad_evidence(w: World) -> str:
    folder = w.folder("evidence")
    (folder / "sg-base").mkdir()
    (folder / "sg-base" / "broken.json").write_text("{not json")
    return str(folder)


BLOCKED = "blocked-notify-file"  # a folder where the notification file should be: appending to it fails


def _pending_failure(w: World) -> list[str]:
    opened = rsp(w, "halt", "open", "--reason", "notify test", "--runs", w.fresh("run-n"), "--no-apply",
                 env={"RSP_NOTIFY_FILE": str(w.home.parent / BLOCKED)})
    assert opened.code == 0, opened.stderr
    return ["notify", "retry", "--force"]


NO_LEDGER = {"RSP_HOME": "{missing}"}


def _s(label: str, argv: Argv, env: dict[str, str] | None = None) -> Scenario:
    return Scenario(label, argv, env)


SCENARIOS: dict[tuple[str, int], list[Scenario]] = {
    ("init", 0): [_s("existing ledger", lambda w: ["init"]),
                  _s("new ledger", lambda w: ["init", "--ledger", f"sqlite:///{w.folder('new')}/l.db"])],
    ("init", 2): [_s("unusable URL", lambda w: ["init", "--ledger", "nosuchdialect://x/y"])],
    ("policy validate", 0): [_s("bundled and file", lambda w: ["policy", "validate", "anthropic-rsp", str(TINY_POLICY)])],
    ("policy validate", 1): [_s("invalid", lambda w: ["policy", "validate", str(TINY_POLICY), _bad_policy(w)])],
    ("policy validate", 2): [_s("missing file", lambda w: ["policy", "validate", str(w.home / "none.yaml")]),
                             _s("missing beats invalid", lambda w: ["policy", "validate", _bad_policy(w),
                                                                    str(w.home / "none.yaml")])],
    ("policy show", 0): [_s("shown", lambda w: ["policy", "show", str(TINY_POLICY)])],
    ("policy show", 2): [_s("missing", lambda w: ["policy", "show", str(w.home / "none.yaml")]),
                         _s("invalid", lambda w: ["policy", "show", _bad_policy(w)])],
    ("policy diff", 0): [_s("listed", lambda w: ["policy", "diff", str(TINY_POLICY), _loosened(w)])],
    ("policy diff", 1): [_s("loosening", lambda w: ["policy", "diff", str(TINY_POLICY), _loosened(w),
                                                    "--fail-on-loosening"])],
    ("policy diff", 2): [_s("missing", lambda w: ["policy", "diff", str(w.home / "none.yaml"), str(TINY_POLICY)])],
    ("classify", 0): [_s("classified", lambda w: ["classify", "-p", str(TINY_POLICY), "-r", _results(w)])],
    ("classify", 2): [_s("missing results", lambda w: ["classify", "-p", str(TINY_POLICY), "-r",
                                                       str(w.home / "none.jsonl")])],
    ("watch", 0): [_s("empty store", lambda w: ["watch", "--once", "--store", str(w.folder("store"))])],
    ("watch", 1): [_s("halting checkpoint", lambda w: ["watch", "--once", "--store", _store_with(w, 1e25)])],
    ("watch", 2): [_s("missing store", lambda w: ["watch", "--once", "--store", str(w.home / "no-store")]),
                   _s("bad s3 URI", lambda w: ["watch", "--once", "--store", "s3://Not_A_Bucket/x"])],
    ("evaluate", 0): [_s("proceed", lambda w: ["evaluate", _checkpoint(w, 1e21)])],
    ("evaluate", 1): [_s("halt", lambda w: ["evaluate", _checkpoint(w, 1e25)])],
    ("evaluate", 2): [_s("missing path", lambda w: ["evaluate", str(w.home / "no" / "run" / "step-000000001")]),
                      _s("bad s3 URI", lambda w: ["evaluate", "s3://bucket"]),
                      _s("no ledger", lambda w: ["evaluate", _checkpoint(w, 1e21)], NO_LEDGER)],
    ("report", 0): [_s("written", lambda w: ["report", "run-flat"])],
    ("report", 2): [_s("unknown run", lambda w: ["report", "run-nope"]),
                    _s("no ledger", lambda w: ["report", "run-flat"], NO_LEDGER)],
    ("forecast", 0): [_s("no warning", lambda w: ["forecast", "run-flat", "--policy", str(TINY_POLICY)])],
    ("forecast", 1): [_s("warning", lambda w: ["forecast", "run-rising", "--policy", str(TINY_POLICY)])],
    ("forecast", 2): [_s("unknown run", lambda w: ["forecast", "run-nope"]),
                      _s("no ledger", lambda w: ["forecast", "run-flat"], NO_LEDGER)],
    ("status", 0): [_s("no open halt", lambda w: ["status", "--ledger", w.empty_ledger, "--api-url", DOWN])],
    ("status", 1): [_s("halted, Prefect down", _with_halt(["status", "--api-url", DOWN]))],
    ("status", 2): [_s("no ledger", lambda w: ["status"], NO_LEDGER)],
    ("halt list", 0): [_s("listed", lambda w: ["halt", "list", "--all"])],
    ("halt list", 2): [_s("no ledger", lambda w: ["halt", "list"], NO_LEDGER)],
    ("halt open", 0): [_s("recorded", lambda w: ["halt", "open", "--reason", "drill", "--runs", w.fresh("run-o"),
                                                 "--no-apply"])],
    ("halt open", 1): [_s("Prefect down", lambda w: ["halt", "open", "--reason", "drill", "--runs",
                                                     w.fresh("run-o"), "--api-url", DOWN])],
    ("halt open", 2): [_s("bad activities", lambda w: ["halt", "open", "--reason", "x", "--activities", "eating"]),
                       _s("no ledger", lambda w: ["halt", "open", "--reason", "x", "--no-apply"], NO_LEDGER)],
    ("halt reconcile", 0): [_s("Prefect agrees", lambda w: ["halt", "reconcile"])],
    ("halt reconcile", 1): [_s("Prefect down", _with_halt(["halt", "reconcile", "--api-url", DOWN]))],
    ("halt reconcile", 2): [_s("no ledger", lambda w: ["halt", "reconcile"], NO_LEDGER)],
    ("gate check", 0): [_s("open", lambda w: ["gate", "check", "run-a", "--ledger", w.empty_ledger])],
    ("gate check", 1): [_s("halted", lambda w: ["gate", "check", _halted_run(w)])],
    ("gate check", 2): [_s("no ledger", lambda w: ["gate", "check", "run-a"], NO_LEDGER)],
    ("gate checkpoint", 0): [_s("recorded", lambda w: ["gate", "checkpoint", w.fresh("run-g"), "3"])],
    ("gate checkpoint", 2): [_s("bad step", lambda w: ["gate", "checkpoint", "run-g", "three"]),
                             _s("no ledger", lambda w: ["gate", "checkpoint", "run-g", "3"], NO_LEDGER)],
    ("evidence attest", 0): [_s("recorded", lambda w: ["evidence", "attest", "sg-base", "--by", "carol", "--role",
                                                       "ciso", "--evidence", "audit", "--key", w.key("carol")])],
    ("evidence attest", 2): [_s("person lacks role", lambda w: ["evidence", "attest", "sg-base", "--by", "alice",
                                                                "--role", "ciso", "--evidence", "audit"]),
                             _s("unknown safeguard", lambda w: ["evidence", "attest", "sg-nope", "--by", "carol",
                                                                "--role", "ciso", "--evidence", "audit"])],
    ("evidence list", 0): [_s("listed", lambda w: ["evidence", "list"])],
    ("evidence list", 1): [_s("unusable record", lambda w: ["evidence", "list", "--store", _bad_evidence(w)])],
    ("evidence list", 2): [_s("bad store URI", lambda w: ["evidence", "list", "--store", "s3://Not_A_Bucket/x"])],
    ("approve", 0): [_s("first vote", lambda w: ["approve", w.halt(), "--as", "bob", "-j", "ok"]),
                     _s("quorum and lift", lambda w: ["approve", _quorum_then(w, "sg-base"), "--as", "alice", "-j",
                                                      "ok", "--key", w.key("alice")])],
    ("approve", 1): [_s("not on roster", lambda w: ["approve", w.halt(), "--as", "mallory", "-j", "ok"]),
                     _s("no approver role", lambda w: ["approve", w.halt(), "--as", "carol", "-j", "ok"]),
                     _s("quorum, lift refused", lambda w: ["approve", _quorum_then(w, "sg-sec3"), "--as", "alice",
                                                           "-j", "ok", "--key", w.key("alice")])],
    ("approve", 2): [_s("unknown halt", lambda w: ["approve", "halt-nope", "--as", "bob", "-j", "ok"]),
                     _s("empty justification", lambda w: ["approve", w.halt(), "--as", "bob", "-j", " "]),
                     _s("no ledger", lambda w: ["approve", "halt-x", "--as", "bob", "-j", "ok"], NO_LEDGER)],
    ("reject", 0): [_s("recorded", lambda w: ["reject", w.halt(), "--as", "bob", "-j", "no"])],
    ("reject", 1): [_s("already lifted", lambda w: ["reject", _lifted(w), "--as", "bob", "-j", "no"]),
                    _s("no approver role", lambda w: ["reject", w.halt(), "--as", "carol", "-j", "no"])],
    ("reject", 2): [_s("unknown halt", lambda w: ["reject", "halt-nope", "--as", "bob", "-j", "no"])],
    ("resume", 0): [_s("lifted", lambda w: ["resume", _ready_to_lift(w)])],
    ("resume", 1): [_s("quorum not met", lambda w: ["resume", w.halt("sg-base")]),
                    _s("safeguard unmet", lambda w: ["resume", _quorum_then(w, "sg-sec3")])],
    ("resume", 2): [_s("unknown halt", lambda w: ["resume", "halt-nope"]),
                    _s("no ledger", lambda w: ["resume", "halt-x"], NO_LEDGER)],
    ("audit verify", 0): [_s("intact", lambda w: ["audit", "verify"])],
    ("audit verify", 1): [_s("tampered", lambda w: ["audit", "verify", "--ledger", _tampered(w)])],
    ("audit verify", 2): [_s("no ledger", lambda w: ["audit", "verify"], NO_LEDGER),
                          _s("missing export", lambda w: ["audit", "verify", "--file", str(w.home / "none.jsonl")])],
    ("audit export", 0): [_s("exported", lambda w: ["audit", "export", "--out", str(w.folder("out") / "l.jsonl")])],
    ("audit export", 2): [_s("no ledger", lambda w: ["audit", "export", "--out", "x.jsonl"], NO_LEDGER)],
    ("serve", 2): [_s("no PREFECT_API_URL", lambda w: ["serve"], {"PREFECT_API_URL": ""}),
                   _s("unreadable policy", lambda w: ["serve", "--policy", str(w.home / "none.yaml")])],
    ("serve-approvals", 2): [_s("no signing secret", lambda w: ["serve-approvals"],
                                {"RSP_SLACK_SIGNING_SECRET": ""})],
    ("notify retry", 0): [_s("nothing pending", lambda w: ["notify", "retry", "--ledger", w.empty_ledger])],
    ("notify retry", 1): [_s("still failing", _pending_failure, {"RSP_NOTIFY_FILE": BLOCKED})],
    ("notify retry", 2): [_s("no ledger", lambda w: ["notify", "retry"], NO_LEDGER)],
}


def test_every_cell_of_the_readme_table_has_a_scenario_and_every_scenario_a_cell() -> None:
    assert len(TABLE) >= 25 and "status" in TABLE and "approve" in TABLE
    assert sorted(set(SCENARIOS) - set(CELLS)) == [], "scenarios for exits the README does not document"
    assert sorted(set(CELLS) - set(SCENARIOS)) == [], "README exits no scenario runs"


@pytest.mark.parametrize(("command", "code"), CELLS, ids=[f"{c}-{k}" for c, k in CELLS])
def test_command_exits_as_the_readme_table_says(world: World, command: str, code: int,
                                                request: pytest.FixtureRequest) -> None:
    prefect = {"PREFECT_API_URL": request.getfixturevalue("prefect_server")} if (command, code) in NEEDS_PREFECT else {}
    for scenario in SCENARIOS[(command, code)]:
        env = {**prefect, **(scenario.env or {})}
        if env.get("RSP_HOME") == "{missing}":
            env["RSP_HOME"] = str(world.home.parent / world.fresh("no-home"))
        if env.get("RSP_NOTIFY_FILE") == BLOCKED:
            env["RSP_NOTIFY_FILE"] = str(world.home.parent / BLOCKED)
        argv = scenario.argv(world)
        out = rsp(world, *argv, env=env)
        where = f"rsp {' '.join(argv)} [{scenario.label}]: exit {out.code}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
        assert out.code == code, where
        assert "Traceback" not in out.stderr, where
        if code == 2 and out.stderr.strip() and "Usage:" not in out.stderr:  # click's own usage errors aside
            assert len(out.stderr.strip().splitlines()) == 1, where
        if "RSP_HOME" in env:
            assert not Path(env["RSP_HOME"]).exists(), f"{where}\na ledger (or its folder) was created"


# -- the promises around the table -----------------------------------------------------------------------------


def test_evaluate_uses_the_configured_policy_when_none_is_given(world: World, prefect_server: str) -> None:
    """RSP_POLICY (or the config's `policy`) is what `rsp evaluate` and `rsp watch` evaluate under without
    --policy: the policy the scaling gate reads, never the bundled default beside it."""
    from tasks.ledger import Ledger

    checkpoint = _checkpoint(world, 1e21)
    out = rsp(world, "evaluate", checkpoint, env={"PREFECT_API_URL": prefect_server})
    assert out.code == 0, out.stdout[-1500:] + out.stderr[-1500:]
    with Ledger(world.url) as ledger:
        dets = ledger.determinations(Path(checkpoint).parent.name)
    assert [d["policy"]["id"] for d in dets] == ["tiny"]
    assert {b["benchmark"] for b in dets[0]["benchmarks"]} == {"bio", "chem", "swe", "ctf"}


@pytest.mark.parametrize("argv", [
    ["evaluate", "{home}/no/such/run/step-000000001"],
    ["evaluate", "s3://Not_A_Bucket/run/step-1"],
    ["watch", "--once", "--store", "{home}/no/such/store"],
])
def test_a_bad_checkpoint_location_is_one_line_naming_it_without_importing_prefect(world: World,
                                                                                    argv: list[str]) -> None:
    argv = [a.replace("{home}", str(world.home)) for a in argv]
    out = rsp(world, *argv, flags=("-X", "importtime"))
    imported = {ln.split("|")[-1].strip() for ln in out.stderr.splitlines() if ln.startswith("import time:")}
    said = [ln for ln in out.stderr.splitlines() if not ln.startswith("import time:") and ln.strip()]
    assert out.code == 2 and len(said) == 1, out.stderr[-3000:]
    assert argv[-1] in said[0] and said[0].startswith(f"rsp {argv[0]}: "), said
    assert "sqlalchemy" in imported or argv[0] == "watch"  # the ledger was looked at (evaluate) ...
    assert not [m for m in imported if m.split(".")[0] in ("prefect", "great_expectations", "inspect_ai")]
    assert out.stdout == ""


def test_reading_commands_name_the_ledger_and_never_create_one(world: World, tmp_path: Path) -> None:
    ghost = tmp_path / "elsewhere"
    out = rsp(world, "status", env={"RSP_HOME": str(ghost)})
    assert out.code == 2 and f"no ledger at sqlite:///{ghost}/ledger.db" in out.stderr, out.stderr
    assert not ghost.exists()
    listed = rsp(world, "halt", "list")
    ledger_id = world.approvals.ledger.ledger_id
    assert listed.stdout.splitlines()[0] == f"ledger: {world.url} (id {ledger_id})"
    data = json.loads(rsp(world, "halt", "list", "--json").stdout)
    assert data["ledger"] == world.url and data["ledger_id"] == ledger_id


def test_status_and_halt_list_show_tally_votes_and_refusals(world: World) -> None:
    from tasks.approvals.lift import try_lift
    from tasks.approvals.votes import VoteRequest, record_vote

    hid = world.halt("sg-sec3")
    ledger, roster = world.approvals.ledger, world.approvals.roster()
    assert world.vote(hid, "bob", channel="slack").ok
    refused = record_vote(VoteRequest(halt_id=hid, decision="approve", person="mallory", justification="let me",
                                      channel="cli"), ledger=ledger, roster=roster)
    assert refused.code == "unknown_user"
    assert try_lift(hid, ledger=ledger, notify=False).status == "refused"  # quorum not met: a refused lift

    data = json.loads(rsp(world, "status", "--json", "--api-url", DOWN).stdout)
    halt = next(h for h in data["open_halts"] if h["halt_id"] == hid)
    a = halt["approvals"]
    assert a["round"] == 1 and a["rules"]["quorum"] == 2 and a["rules"]["must_include"] == ["rso"]
    assert len(a["votes"]) == 1, a["votes"]
    vote = a["votes"][0]
    assert (vote["person"], vote["decision"], vote["roles"], vote["channel"], vote["verified"]) == (
        "bob", "approve", ["ceo"], "slack", True)
    assert vote["at"] and vote["seq"] > 0
    roles = {r["role"]: r for r in a["tally"]["roles"]}
    assert (roles["rso"]["counted"], roles["rso"]["needed"]) == (0, 1)
    assert roles["ceo"]["approvers"] == ["bob"] and a["tally"]["counted"] == 1 and a["tally"]["quorum"] == 2
    assert "rso" in a["last_lift_refused"]["reason"]
    assert (a["last_vote_refused"]["person"], a["last_vote_refused"]["code"]) == ("mallory", "unknown_user")

    text = rsp(world, "halt", "list").stdout
    block = text[text.index(hid):].split("\n" + "halt-", 1)[0]
    assert "approvals (round 1): 1/2 approvals (bob); 1 more needed" in block, block
    assert "rso 0/1; ceo 1 (bob)" in block, block
    assert re.search(r"vote seq \d+ \S+: bob approves as ceo via slack \(verified\)", block), block
    assert "last refused lift: seq" in block and "last refused vote: seq" in block and "mallory via cli" in block
    status = rsp(world, "status", "--api-url", DOWN).stdout
    assert status.splitlines()[0].startswith(f"ledger: {world.url} (id ledger-")
    assert "bob approves as ceo via slack (verified)" in status
