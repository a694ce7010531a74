"""Which test cites which statement of the MQTT server checklist: writes docs/CONFORMANCE.md.

Usage (from the repository root)::

    .venv/bin/python tests/support/checklist_coverage.py [CHECKLIST] [--check]

CHECKLIST defaults to /work/shared/MQTT-CHECKLIST.md. The checklist has two lists
of identifiers, MQTT 5 and the MQTT 3.1.1 differences; several 3.1.1 identifiers
reuse a v5 number with another meaning, so a test cites a 3.1.1 statement by
writing "3.1.1" before the identifier(s) in the same clause ("3.1.1 [MQTT-3.1.2-24]",
"(3.1.1 [MQTT-3.1.2-4])"), or "311-MQTT-..." in a parameter id. Every other
citation is a v5 one, except that an identifier only the 3.1.1 list has counts
for 3.1.1 however it is written.

A test cites an identifier in its node id (name and parameter ids, where it is
written ``MQTT-3.1.0-2``) or in its docstring (``[MQTT-3.1.0-2]``). Module
docstrings and comments do not count. Statements no test can check are listed
in ``NOT_TESTABLE`` with the reason; ``--check`` exits 1 if a statement has
neither a citing test nor a reason (and does not write the file).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKLIST = Path("/work/shared/MQTT-CHECKLIST.md")
OUTPUT = ROOT / "docs" / "CONFORMANCE.md"

V5 = "5"
V311 = "3.1.1"

SAME_STATEMENT: dict[tuple[str, str], str] = {
    (V5, "MQTT-4.2.0-1"): "MQTT-4.2-1",  # Appendix B numbers the body's [MQTT-4.2-1] this way
}
"""Identifiers that name the same statement as another: they share its tests."""

NOT_TESTABLE: dict[tuple[str, str], str] = {
    (V5, "MQTT-6.0.0-3"): "client rule; the server *may* refuse a handshake without \"mqtt\". kushi "
                          "accepts it (a choice, tested in test_listeners.py::test_websocket_subprotocol)",
    (V311, "MQTT-7.0.0-1"): "bridging: kushi never connects out to another server",
    (V311, "MQTT-7.0.0-2"): "interoperability without extensions: not a behaviour one test can observe; "
                            "kushi requires no extension (every conformance test uses plain paho clients)",
}

SKIPPED_LINES = ("- Omitted (client-only)", "- WebSocket rules are the same in both versions")
"""Checklist lines that name identifiers without stating anything new (the 3.1.1 WebSocket line
refers to the v5 [MQTT-6.0.0-*] statements)."""

ID_IN_BRACKETS = re.compile(r"\[(MQTT-[0-9][0-9.\-]*[0-9])\]")


@dataclass
class Statement:
    version: str
    ident: str
    text: str
    tests: list[str] = field(default_factory=list)


def read_checklist(path: Path) -> list[Statement]:
    """Every identifier of both lists, in checklist order, with its line (client-only lines skipped)."""
    v5_part, v311_part = path.read_text().split("## MQTT 3.1.1 differences", 1)
    statements: list[Statement] = []
    for version, part in ((V5, v5_part), (V311, v311_part)):
        seen: set[str] = set()
        for line in part.splitlines():
            if not line.startswith("- ") or line.startswith(SKIPPED_LINES):
                continue
            for ident in ID_IN_BRACKETS.findall(line):
                if ident not in seen:
                    seen.add(ident)
                    statements.append(Statement(version, ident, line[2:].strip()))
    return statements


def collected_node_ids() -> list[str]:
    """Every test node id under tests/, as pytest collects it."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    return [line for line in result.stdout.splitlines() if "::" in line]


def docstrings(path: Path) -> dict[str, str]:
    """Test function name -> its docstring, for one test file."""
    tree = ast.parse(path.read_text())
    return {
        node.name: ast.get_docstring(node) or ""
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")
    }


def docstring_citations(text: str) -> list[tuple[str, bool]]:
    """(identifier, marked 3.1.1) for every bracketed identifier in a docstring.

    "3.1.1" (or "3.1.1:") marks the identifiers after it up to the end of the clause: a closing
    parenthesis, or a word ending in "." or ";".
    """
    citations = []
    marked = False
    for token in re.findall(r"3\.1\.1:?|\[MQTT-[^\]]+\]|\)|[^\s()\[]+|\(", text):
        if token.startswith("3.1.1"):
            marked = True
        elif token.startswith("[MQTT-"):
            citations.append((token[1:-1], marked))
        elif token == ")" or token.endswith((".", ";")):
            marked = False
    return citations


def node_citations(node_id: str, known: re.Pattern[str]) -> list[tuple[str, bool]]:
    """(identifier, marked 3.1.1) for identifiers written in a node id (name and parameter ids).

    ``known`` matches the checklist's identifiers only: in a node id an identifier runs into
    the next part of the name ("MQTT-3.3.1-4-v4"), so the form alone cannot end it.
    """
    return [(match.group(), node_id[max(0, match.start() - 4):match.start()] == "311-")
            for match in known.finditer(node_id)]


def known_identifiers(statements: list[Statement]) -> re.Pattern[str]:
    """A pattern matching any identifier of the checklist, longest first, not followed by a digit."""
    idents = sorted({s.ident for s in statements}, key=len, reverse=True)
    return re.compile("(?:" + "|".join(map(re.escape, idents)) + r")(?![0-9])")


def group_name(node_id: str, from_parameter: bool) -> str:
    """How a citing test is shown: file::function, plus the parameter id when the citation is there
    (without its protocol-version suffix and 3.1.1 citation, so one row stands for both versions)."""
    path, _, rest = node_id.partition("::")
    name = Path(path).name + "::" + rest.split("[", 1)[0]
    if not from_parameter:
        return name
    parameter = rest.split("[", 1)[1].rstrip("]")
    parameter = re.sub(r"-v[345]$", "", parameter)
    parameter = re.sub(r"-311-MQTT-[0-9][0-9.\-]*[0-9]$", "", parameter)
    return f"{name}[{parameter}]"


def attribute(statements: list[Statement], node_ids: list[str]) -> list[str]:
    """Fill ``Statement.tests``; returns identifiers cited by tests that the checklist lacks."""
    by_key = {(s.version, s.ident): s for s in statements}
    only_311 = {s.ident for s in statements if s.version == V311} - \
               {s.ident for s in statements if s.version == V5}
    doc_cache: dict[str, dict[str, str]] = {}
    unknown: set[str] = set()
    cited: dict[tuple[str, str], set[str]] = defaultdict(set)
    known = known_identifiers(statements)
    for node_id in node_ids:
        path = node_id.split("::", 1)[0]
        if path not in doc_cache:
            doc_cache[path] = docstrings(ROOT / path)
        function = node_id.split("::")[-1].split("[", 1)[0]
        sources = [(c, False) for c in docstring_citations(doc_cache[path].get(function, ""))]
        sources += [(c, True) for c in node_citations(node_id, known)]
        for (ident, marked), from_parameter in sources:
            version = V311 if marked or ident in only_311 else V5
            if (version, ident) not in by_key:
                unknown.add(f"{version} {ident} in {node_id}")
                continue
            cited[(version, ident)].add(group_name(node_id, from_parameter))
    for (version, ident), same in SAME_STATEMENT.items():
        cited[(version, ident)] |= cited[(version, same)]
    for key, names in cited.items():
        if key in by_key:
            by_key[key].tests = sorted(names)
    return sorted(unknown)


def render(statements: list[Statement]) -> str:
    """The CONFORMANCE.md text."""
    lines = [
        "# Conformance: the checklist statements and the tests that check them",
        "",
        "Generated by `tests/support/checklist_coverage.py` from the server checklist",
        "(`MQTT-CHECKLIST.md`, every server-side normative statement of MQTT 5.0 and the MQTT 3.1.1",
        "differences) and the tests that cite each identifier in their name, parameter id or docstring.",
        "Regenerate it after adding tests; `--check` fails when a statement has neither a test nor a",
        "reason. Client-only statements are not in the checklist, so not here. The table says which",
        "test checks a statement, not that it passes today: run `pytest tests/worker -k mqtt` for that.",
        "",
        "Identifiers in the 3.1.1 table are MQTT 3.1.1 identifiers (several reuse a v5 number with",
        "another meaning). A test cites one as `3.1.1 [MQTT-x]`. Tests parametrized over protocol",
        "versions run the same check on each; a `[name-MQTT-x]` suffix is the parameter that cites.",
        "The WebSocket rules are the same in both versions: they are the v5 [MQTT-6.0.0-*] rows.",
        "",
    ]
    for version, title in ((V5, "MQTT 5.0"), (V311, "MQTT 3.1.1 differences")):
        rows = [s for s in statements if s.version == version]
        tested = sum(1 for s in rows if s.tests)
        lines += [f"## {title}", "",
                  f"{len(rows)} statements: {tested} checked by tests, {len(rows) - tested} not testable.",
                  "", "| id | statement | tests that cite it, or why none can |", "|---|---|---|"]
        for statement in rows:
            if statement.tests:
                cell = "<br>".join(f"`{name}`" for name in statement.tests)
            else:
                cell = "not testable: " + NOT_TESTABLE.get((version, statement.ident), "**NO TEST, NO REASON**")
            text = statement.text.removeprefix(f"[{statement.ident}] ").replace("|", "\\|")
            lines.append(f"| {statement.ident} | {text} | {cell} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [arg for arg in argv if not arg.startswith("--")]
    statements = read_checklist(Path(paths[0]) if paths else DEFAULT_CHECKLIST)
    unknown = attribute(statements, collected_node_ids())
    for line in unknown:
        print(f"cited but not in the checklist: {line}", file=sys.stderr)
    missing = [f"{s.version} {s.ident}" for s in statements
               if not s.tests and (s.version, s.ident) not in NOT_TESTABLE]
    stale = [f"{version} {ident}" for (version, ident) in NOT_TESTABLE
             if any(s.tests for s in statements if (s.version, s.ident) == (version, ident))]
    for line in missing:
        print(f"no test and no reason: {line}", file=sys.stderr)
    for line in stale:
        print(f"listed as not testable but a test cites it: {line}", file=sys.stderr)
    if check:
        return 1 if missing else 0
    OUTPUT.write_text(render(statements))
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(statements)} statements, {len(missing)} without test or reason")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
