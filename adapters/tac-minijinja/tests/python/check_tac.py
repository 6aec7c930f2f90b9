"""Checks rendered tacs for injected code; runs under Python 2.7 and 3.

Reads JSON from stdin: a list of cases, each
{"name": ..., "tac": <source>, "reference": <source>, "expected": {var: value}}.
"tac" was rendered from hostile values, "reference" from the same template
with harmless ones. A case passes when "tac" is ASCII, parses, has exactly
the statements of "reference" once every string constant is blanked out (so
no value became code), and assigns each expected module-level variable
exactly once, to a literal equal to the expected value.
"""
import ast
import json
import sys


class Blank(ast.NodeTransformer):
    """Replaces every string constant by '', keeping the code around it."""

    def visit_Constant(self, node):  # Python 3.8+
        if isinstance(node.value, str):
            return ast.copy_location(ast.Constant(value=""), node)
        return node

    def visit_Str(self, node):  # Python 2
        return ast.copy_location(ast.Str(s=""), node)


def parse(source):
    return compile(source.encode("ascii"), "buildbot.tac", "exec", ast.PyCF_ONLY_AST)


def shape(tree):
    return ast.dump(Blank().visit(tree))


def assignments(tree):
    found = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            found.setdefault(stmt.targets[0].id, []).append(stmt.value)
    return found


def check(case):
    problems = []
    tree = parse(case["tac"])
    if shape(tree) != shape(parse(case["reference"])):
        problems.append("statements differ from the template's")
    found = assignments(parse(case["tac"]))
    for var, want in sorted(case["expected"].items()):
        nodes = found.get(var, [])
        if len(nodes) != 1:
            problems.append("%s assigned %d times" % (var, len(nodes)))
            continue
        got = ast.literal_eval(nodes[0])
        if got != want:
            problems.append("%s = %r, want %r" % (var, got, want))
    return problems


def main():
    failed = False
    for case in json.load(sys.stdin):
        try:
            problems = check(case)
        except Exception as e:  # a SyntaxError is a finding, not a crash
            problems = ["%s: %s" % (type(e).__name__, e)]
        for problem in problems:
            failed = True
            # JSON keeps the report ASCII, which Python 2's stderr needs.
            sys.stderr.write(json.dumps([case["name"], problem]) + "\n")
    sys.exit(1 if failed else 0)


main()
