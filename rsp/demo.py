"""`make demo`: the main job on embedded defaults — no cloud account, no Slack token.

Stage 1 (this file grows with the pipeline): validate every bundled framework
and classify its bundled example results, printing each determination.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "policy" / "examples"
EXAMPLE_FOR = {
    "anthropic-rsp": "results-anthropic.jsonl",
    "openai-preparedness": "results-openai.jsonl",
    "gdm-fsf": "results-gdm.jsonl",
}


def classify_examples() -> int:
    from policy.engine import classify
    from rsp.render import render_determination
    from tasks.inputs import bundled_frameworks, read_policy, read_results

    frameworks = bundled_frameworks()
    if not frameworks:
        print("error: no bundled frameworks found under policy/frameworks", file=sys.stderr)
        return 2
    for fid, path in frameworks.items():
        policy = read_policy(path)
        print(f"\n=== {policy.framework.name} v{policy.framework.version} — {path.name} validates")
        example = EXAMPLES / EXAMPLE_FOR.get(fid, f"results-{fid}.jsonl")
        if not example.exists():
            print(f"(no example results for {fid})")
            continue
        det = classify(policy, read_results(example))
        render_determination(det)
    return 0


def main() -> int:
    return classify_examples()


if __name__ == "__main__":
    sys.exit(main())
