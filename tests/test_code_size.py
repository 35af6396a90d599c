"""Short files, short functions (STYLE.md): no module over 400 lines, no function over 60 lines of
code (docstring, blank and comment lines not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "medfoundry"
MAX_MODULE_LINES = 400
MAX_FUNCTION_CODE_LINES = 60


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    first = node.body[0]
    has_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    start = first.end_lineno + 1 if has_docstring and first.end_lineno else first.lineno
    body = lines[start - 1 : node.end_lineno]
    return sum(1 for line in body if line.strip() and not line.strip().startswith("#"))


def test_no_module_or_function_is_too_long() -> None:
    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        name = path.relative_to(SRC)
        if len(lines) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _code_lines(node, lines)
                if n > MAX_FUNCTION_CODE_LINES:
                    too_long.append(f"{name}: {node.name}() has {n} lines of code")
    assert too_long == []
