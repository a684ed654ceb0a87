"""The values a Python config file binds at its top level, found without executing it.

mmengine configs are Python, and an mmengine dump (``Config.dump``, ``pretty_text``) is plain data:
literals and ``dict(...)`` calls. Executing a config from a group-writable data root to read its LR
would run whatever a colleague put there, and would need mmengine on a login node. This reads the
syntax tree instead: constants, ``dict(...)`` with keyword arguments, dict/list/tuple displays,
names bound by earlier top-level assignments, unary ``-``/``+``/``not``, ``+ - * / // %`` on numbers
(``+`` also joins strings, lists, tuples), subscripts and slices, comparisons and conditional
expressions of plain values. Anything else is ``UNKNOWN``, and so is whatever depends on it.

Bounded whatever the file holds (a colleague's file must not hang the report): containers are never
compared, hashed or tested for truth (``n = [n, n]``, line after line, makes that exponential);
``+``, slices and member tests only take strings, lists and tuples of at most ``MAX_LENGTH`` items,
and numbers of at most 128 bits. What a file builds is bounded as a whole, not per statement: at
most ``MAX_ELEMENTS`` items (of every list, tuple and dict made, and characters of every string
joined) per file; beyond that every value is ``UNKNOWN`` (``a = [0, ...500]`` then ``x = [a + a, ...]``
250,000 times would otherwise build 250 million items). Python's own parser is bounded first: a
file of more than ``MAX_TOKENS`` tokens (a real config has a few thousand) is not parsed at all,
since ``ast.parse`` alone takes 2 s and 580 MB for 1 MB of ``a+a,``.

What the report takes from those values goes through :class:`Checker` (``CONFIG_FIELDS``: each field's type
and range), so a literal of 4,000 digits is one warning, not a ValueError in the table.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prove_jobs.values import MAX_COUNT, MAX_ITERS, NAME, Real, Spec, Text, Whole, checked, problem

MAX_LENGTH = 1000  # far beyond a pipeline, a class list or a path; a line repeated cannot copy more
_MAX_INT_BITS = 128  # far beyond any iteration count: stops a file that squares a number line after line
MAX_ELEMENTS = 200_000  # items built per file: a flat mmseg config builds a few thousand
MAX_TOKENS = 1 << 16  # a flat mmseg config dump has 2,000-8,000; ast.parse costs ~0.5 KB and 2 µs a token
# Each byte as a class: "a" a name's or number's, " " space, "!" punctuation (each one token).
_CLASSES = bytes(ord("a") if c >= 128 or chr(c).isalnum() or chr(c) in "_." else ord(" ") if chr(c).isspace()
                 else ord("!") for c in range(256))


def _tokens(source: bytes) -> int:
    """Names, numbers and punctuation in ``source``: an upper bound on its syntax tree's nodes, counted in C
    with one copy of the file (a regular expression's ``subn`` kept 70 MB of pieces for 1 MB)."""
    classes = source.translate(_CLASSES)
    return classes.count(b"!") + classes.count(b"a ") + classes.count(b"a!") + classes.endswith(b"a")


class _Budget:
    """The items a file may still build (see the module's docstring)."""

    def __init__(self) -> None:
        self.left = MAX_ELEMENTS

    def take(self, count: int) -> bool:
        self.left -= count
        return self.left >= 0


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()  # the value of anything the evaluator does not follow


# Every field read from a recorded config, its type and its range (values.py): a value out of it is left out
# (the template's stands in) and said once. 4,000-digit numbers (or 0x... of any length: no limit on those)
# overflowed `f"{n:,}"` and the total-samples product for everyone reading the report.
CONFIG_FIELDS: dict[str, Spec] = {
    "max_iters": Whole(1, MAX_ITERS, optional=True), "max_epochs": Whole(1, MAX_ITERS, optional=True),
    "batch_size": Whole(1, MAX_COUNT, optional=True),
    "crop": Whole(1, 1 << 20, optional=True), "lr": Real(0.0, 1e3, optional=True),
    "warmup": Whole(0, MAX_ITERS, optional=True), "val_interval": Whole(1, MAX_ITERS, optional=True),
    "checkpoint_interval": Whole(1, MAX_ITERS, optional=True), "seed": Whole(0, (1 << 64) - 1, optional=True),
    "optimizer": Text(NAME, optional=True), "scheduler": Text(NAME, optional=True),
    "init": Text(NAME, optional=True), "gpus": Whole(1, MAX_COUNT, optional=True),
}


class Checker:
    """Reads a config's values through ``CONFIG_FIELDS``, keeping why each one left out was."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.rejected: dict[str, str] = {}

    def __call__(self, field: str, value: object) -> Any:
        """``value`` when it fits ``field``; else ``None``, and noted. ``UNKNOWN`` and other types: ``None``."""
        spec = CONFIG_FIELDS[field]
        if value is UNKNOWN or value is None or (isinstance(spec, Text) and not isinstance(value, str)):
            return None
        if isinstance(spec, Whole | Real) and (isinstance(value, bool) or not isinstance(value, int | float)):
            return None  # not a number: the config does not say it plainly (as before: left out, nothing said)
        why = problem(spec, value)
        if why is not None:
            self.rejected.setdefault(field, f"unreadable: {field} in {self.source} ({why}): left out")
            return None
        return checked(spec, value)




def module_values(source: bytes) -> dict[str, object] | None:
    """The names a config binds at its top level, each to its value or ``UNKNOWN``; ``None``: not Python.

    A plain assignment (``name = ...``, ``name += ...``) is followed. Any other statement (``a['k'] = 1``,
    ``cfg.update(...)``, an ``if``, an import) makes the names it binds or mentions unknown and, when it
    mentions a dict or list, every name bound to one (an alias may change it). The side effects of a
    call in an assignment's value are not followed: mmengine's dumps and prove's template have none.
    """
    if len(source) > MAX_TOKENS and _tokens(source) > MAX_TOKENS:
        return None  # counted in a few milliseconds a megabyte: parsing it would take seconds
    try:
        tree = ast.parse(source.decode())
    except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    env: dict[str, object] = {}
    containers: set[str] = set()  # names bound to a dict, list or tuple
    budget = _Budget()
    for stmt in tree.body:
        value, names, nodes = _assignment(stmt, env, budget)
        changed = {n.id for n in nodes if isinstance(n, ast.Name) and (isinstance(n.ctx, ast.Store) or n.id in env)}
        changed |= {(n.asname or n.name).split(".")[0] for n in nodes if isinstance(n, ast.alias)}
        changed |= {n.name for n in nodes if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        if "*" in changed:  # `from x import *` may rebind any name
            env.clear()
            containers = set()
        if any(name in containers for name in changed):  # (not isdisjoint: that may walk all of `containers`)
            changed |= containers
            containers = set()
        for name in changed | set(names):
            env[name] = UNKNOWN
            containers.discard(name)
        for name in names:
            env[name] = value
            if isinstance(value, dict | list | tuple):
                containers.add(name)
    return env


def _assignment(stmt: ast.stmt, env: Mapping[str, object], budget: _Budget) -> tuple[object, list[str], list[ast.AST]]:
    """A plain assignment's value and names, and the nodes that may change others: in its value only
    the names a walrus binds; in any other statement, everything it mentions."""
    if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
        names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        names = [stmt.target.id]
    else:
        return UNKNOWN, [], list(ast.walk(stmt))
    try:
        value = _eval(stmt.value, env, budget)
        if isinstance(stmt, ast.AugAssign):
            value = _binop(stmt.op, env.get(names[0], UNKNOWN), value, budget)
    except RecursionError:
        value = UNKNOWN
    return value, names, [n for n in ast.walk(stmt.value) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


_ARITH: dict[type[ast.operator], Callable[..., object]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[..., object]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


def _number(value: object) -> bool:
    return isinstance(value, float) or (isinstance(value, int) and value.bit_length() <= _MAX_INT_BITS)


def _scalar(value: object) -> bool:
    """Only these are compared, tested or used as keys: never a (possibly shared, deep) container."""
    return value is None or _number(value) or (isinstance(value, str) and len(value) <= MAX_LENGTH)


def _short(value: object) -> bool:
    return isinstance(value, list | tuple | dict | str) and len(value) <= MAX_LENGTH


def _binop(op: ast.operator, left: object, right: object, budget: _Budget) -> object:
    if isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, str | list | tuple):
        size = len(left) + len(right)  # type: ignore[arg-type]
        if size > MAX_LENGTH or not budget.take(size):
            return UNKNOWN  # a line that doubles a list, line after line, or copies a long one
        return left + right  # type: ignore[operator]
    if not (_number(left) and _number(right)) or type(op) not in _ARITH:
        return UNKNOWN
    try:
        result = _ARITH[type(op)](left, right)
    except ArithmeticError:
        return UNKNOWN
    return result if _number(result) else UNKNOWN


def _eval(node: ast.expr, env: Mapping[str, object], budget: _Budget) -> object:
    """``node``'s value when it is plain data (see the module's docstring), else ``UNKNOWN``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id, UNKNOWN)
    if isinstance(node, ast.Call):
        plain = isinstance(node.func, ast.Name) and node.func.id == "dict" and "dict" not in env and not node.args
        if plain and all(k.arg is not None for k in node.keywords) and budget.take(len(node.keywords)):
            built = {k.arg: _eval(k.value, env, budget) for k in node.keywords}
            return built if budget.left >= 0 else UNKNOWN  # spent while its items were built: not all of it is known
        return UNKNOWN
    if isinstance(node, ast.Dict):
        if not budget.take(len(node.keys)):
            return UNKNOWN
        keys = [UNKNOWN if k is None else _eval(k, env, budget) for k in node.keys]
        if not all(_scalar(k) for k in keys):
            return UNKNOWN
        values = [_eval(v, env, budget) for v in node.values]
        return dict(zip(keys, values, strict=True)) if budget.left >= 0 else UNKNOWN
    if isinstance(node, ast.List | ast.Tuple):
        if any(isinstance(e, ast.Starred) for e in node.elts) or not budget.take(len(node.elts)):
            return UNKNOWN
        items = [_eval(e, env, budget) for e in node.elts]
        if budget.left < 0:
            return UNKNOWN
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, env, budget)
        if isinstance(node.op, ast.USub | ast.UAdd) and _number(operand):
            return -operand if isinstance(node.op, ast.USub) else operand  # type: ignore[operator]
        return (not operand) if isinstance(node.op, ast.Not) and _scalar(operand) else UNKNOWN
    if isinstance(node, ast.BinOp):
        return _binop(node.op, _eval(node.left, env, budget), _eval(node.right, env, budget), budget)
    if isinstance(node, ast.Compare):
        return _compare(node, env, budget)
    if isinstance(node, ast.IfExp):
        test = _eval(node.test, env, budget)
        return _eval(node.body if test else node.orelse, env, budget) if _scalar(test) else UNKNOWN
    if isinstance(node, ast.Subscript):
        container, index = _eval(node.value, env, budget), _index(node.slice, env, budget)
        if not isinstance(container, list | tuple | dict | str) or not (
                _scalar(index) or (isinstance(index, slice) and _short(container))):
            return UNKNOWN
        if isinstance(index, slice) and not budget.take(len(container)):
            return UNKNOWN
        try:
            return container[index]  # type: ignore[index,call-overload]
        except (LookupError, TypeError, ValueError):
            return UNKNOWN
    return UNKNOWN


def _compare(node: ast.Compare, env: Mapping[str, object], budget: _Budget) -> object:
    """``a < b``, ``a in (...)``: of scalars only (a member test: a scalar in a list, tuple, dict or str)."""
    left = _eval(node.left, env, budget)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _eval(right_node, env, budget)
        member = isinstance(op, ast.In | ast.NotIn) and _short(right)
        if member and not budget.take(len(right)):  # type: ignore[arg-type]  # a member test walks the container
            return UNKNOWN
        if type(op) not in _COMPARE or not _scalar(left) or not (member or _scalar(right)):
            return UNKNOWN
        try:
            if not _COMPARE[type(op)](left, right):
                return False
        except TypeError:
            return UNKNOWN
        left = right
    return True


def _index(node: ast.expr, env: Mapping[str, object], budget: _Budget) -> object:
    if not isinstance(node, ast.Slice):
        return _eval(node, env, budget)
    bounds = [None if part is None else _eval(part, env, budget) for part in (node.lower, node.upper, node.step)]
    return slice(*bounds) if all(b is None or isinstance(b, int) for b in bounds) else UNKNOWN
