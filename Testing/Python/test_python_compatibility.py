"""The code Slicer loads (the core and both module folders) must run on Slicer 5.8's Python 3.9 + numpy 1.26 up to
Slicer 5.10's Python 3.12 + numpy 2.x. The project venv is newer than the oldest, so a 3.10+ feature would pass every
other test and break only for a Slicer 5.8 user. These checks read the source (no project imports, so they are fast
and run anywhere); scripts/check_oldest_python.sh runs the torch-free tests on a real Python 3.9."""
from __future__ import annotations

import ast
import functools
import io
import re
import sys
import tokenize
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLICER_LOADED = ("SlicerEssNet", "EssNetSlicerLib", "EssNetBatch", "CT2MRISynthesis", "LiverSegmentation")
OLDEST_PYTHON = (3, 9)

# Names that the oldest Python or numpy lacks (or the newest numpy removed), as `module.name` after resolving
# imports; both `import module` + `module.name` and `from module import name` are caught.
NEWER_NAMES = {
    **{f"typing.{name}": "Python 3.10" for name in (
        "TypeAlias", "ParamSpec", "ParamSpecArgs", "ParamSpecKwargs", "Concatenate", "TypeGuard", "is_typeddict")},
    **{f"typing.{name}": "Python 3.11" for name in (
        "Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required", "NotRequired",
        "Unpack", "TypeVarTuple", "dataclass_transform", "get_overloads", "clear_overloads")},
    **{f"typing.{name}": "Python 3.12+" for name in ("override", "TypeAliasType", "TypeIs", "ReadOnly")},
    "itertools.pairwise": "Python 3.10", "itertools.batched": "Python 3.12",
    "datetime.UTC": "Python 3.11 (use datetime.timezone.utc)",
    "types.NoneType": "Python 3.10", "types.EllipsisType": "Python 3.10", "types.UnionType": "Python 3.10",
    "types.NotImplementedType": "Python 3.10",
    "enum.StrEnum": "Python 3.11", "enum.verify": "Python 3.11", "enum.member": "Python 3.11",
    "contextlib.aclosing": "Python 3.10", "contextlib.chdir": "Python 3.11",
    "dataclasses.KW_ONLY": "Python 3.10",
    "hashlib.file_digest": "Python 3.11",
    "math.cbrt": "Python 3.11", "math.exp2": "Python 3.11", "math.sumprod": "Python 3.12",
    "asyncio.TaskGroup": "Python 3.11", "asyncio.timeout": "Python 3.11", "asyncio.Runner": "Python 3.11",
    "sys.exception": "Python 3.11", "sys.orig_argv": "Python 3.10", "sys.stdlib_module_names": "Python 3.10",
    "operator.call": "Python 3.11", "os.process_cpu_count": "Python 3.13",
    "logging.getLevelNamesMapping": "Python 3.11",
    "statistics.correlation": "Python 3.10", "statistics.covariance": "Python 3.10",
    "statistics.linear_regression": "Python 3.10",
    "tomllib": "Python 3.11",
    **{f"numpy.{name}": "numpy 2.x (Slicer 5.8 has numpy 1.26)" for name in (
        "trapezoid", "concat", "unique_values", "unique_counts", "unique_inverse", "unique_all", "isdtype", "astype",
        "cumulative_sum", "cumulative_prod", "bitwise_count", "permute_dims", "matrix_transpose", "vecdot", "matvec",
        "vecmat", "pow", "acos", "acosh", "asin", "asinh", "atan", "atanh", "atan2", "bitwise_left_shift",
        "bitwise_right_shift", "bitwise_invert", "strings")},
    **{f"numpy.linalg.{name}": "numpy 2.x (Slicer 5.8 has numpy 1.26)" for name in (
        "vector_norm", "matrix_norm", "vecdot", "matrix_transpose", "diagonal", "trace", "cross", "outer", "svdvals")},
    **{f"numpy.{name}": "removed from numpy 2.x" for name in (
        "float_", "complex_", "NaN", "NAN", "Inf", "Infinity", "infty", "NINF", "PINF", "NZERO", "PZERO",
        "longfloat", "singlecomplex", "cfloat", "longcomplex", "clongfloat", "string_", "unicode_", "product",
        "cumproduct", "sometrue", "alltrue", "round_", "asfarray", "find_common_type", "msort", "cast", "source",
        "lookfor", "who", "safe_eval", "set_string_function", "issubclass_", "deprecate", "deprecate_with_doc",
        "disp", "recfromcsv", "recfromtxt", "trapz", "in1d", "mat", "byte_bounds", "compare_chararrays",
        "format_parser", "fastCopyAndTranspose", "int0", "uint0", "bool8", "object0", "str0", "bytes0", "void0")},
}
NEWER_BUILTINS = {"aiter": "Python 3.10", "anext": "Python 3.10", "EncodingWarning": "Python 3.10",
                  "ExceptionGroup": "Python 3.11", "BaseExceptionGroup": "Python 3.11"}
# Methods found on objects of any name: `.bit_count()` is int's (numpy's is np.bitwise_count, itself 2.x only).
NEWER_METHODS = {"bit_count": "int.bit_count is Python 3.10", "add_note": "BaseException.add_note is Python 3.11",
                 "hardlink_to": "Path.hardlink_to is Python 3.10"}
# Keywords that the callee (matched by its last name) accepts only on newer versions.
NEWER_KEYWORDS = {
    "zip": {"strict": "Python 3.10"},
    "dataclass": {"slots": "Python 3.10", "kw_only": "Python 3.10", "match_args": "Python 3.10",
                  "weakref_slot": "Python 3.11"},
    "field": {"kw_only": "Python 3.10"},
    "glob": {"root_dir": "Python 3.10", "dir_fd": "Python 3.10", "include_hidden": "Python 3.11"},
    "iglob": {"root_dir": "Python 3.10", "dir_fd": "Python 3.10", "include_hidden": "Python 3.11"},
    "rmtree": {"onexc": "Python 3.12"},
    "TemporaryDirectory": {"ignore_cleanup_errors": "Python 3.10", "delete": "Python 3.12"},
    "NamedTemporaryFile": {"delete_on_close": "Python 3.12"},
    **{name: {"key": "Python 3.10"} for name in ("bisect", "bisect_left", "bisect_right", "insort", "insort_left",
                                                  "insort_right")},
    **{name: {"process_group": "Python 3.11"} for name in ("run", "Popen", "call", "check_call", "check_output")},
}
BUILTIN_TYPES = {"int", "float", "complex", "str", "bytes", "bytearray", "bool", "list", "dict", "tuple", "set",
                 "frozenset", "type", "object", "memoryview", "range", "slice"}
TYPE_ATTRIBUTES = re.compile(r"^(typing\.|collections\.abc\.)|^(os\.PathLike|pathlib\.(Pure)?Path|numpy\.(ndarray|"
                             r"dtype|generic|number|integer|floating|bool_|u?int\d+|float\d+|complex\d+)|"
                             r"torch\.(Tensor|device|dtype|nn\.Module))$")
FLAG_MODULES = {"re", "os", "stat", "signal", "errno", "enum", "qt", "ctk", "vtk"}  # CamelCase flags, not types
EVALUATED_ANNOTATIONS = {"parameterNodeWrapper", "parameterPack"}  # Slicer runs typing.get_type_hints on these


def slicer_loaded_files() -> list:
    return sorted(path for folder in SLICER_LOADED for path in (REPO / folder).rglob("*.py")
                  if "__pycache__" not in path.parts)


def _last_name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _is_type_checking_guard(test: ast.AST) -> bool:
    return _last_name(test) == "TYPE_CHECKING"


def _is_newer_python_guard(test: ast.AST) -> bool:
    """`if sys.version_info >= (3, 10):` - the body runs only where it works."""
    return (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Gt, ast.GtE))
            and _last_name(test.left) == "version_info")


def _guards_import_errors(node: ast.Try) -> bool:
    """`try: from typing import Self` / `except ImportError:` is the compatible way to use a newer name."""
    caught = []
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        caught += [_last_name(t) for t in types if t is not None]
    return any(name in ("ImportError", "ModuleNotFoundError", "AttributeError") for name in caught)


def _quote_of(token_text: str) -> str:
    body = token_text.lstrip("rRbBuUfF")
    return body[:3] if body[:3] in ('"""', "'''") else body[:1]


class _Checker:
    """Walks one file's tree and records `line: problem` for every use the oldest Python/numpy lacks."""

    def __init__(self, source: str, tree: ast.Module):
        self.problems: list = []
        self.aliases = self._aliases(tree)
        self.lines = source.splitlines()
        self.tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        self.token_index = {token.start: i for i, token in enumerate(self.tokens)}
        self.reported_unions: set = set()

    @staticmethod
    def _aliases(tree: ast.Module) -> dict:
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:  # `import a.b` binds `a`; `import a.b as c` binds `c` to a.b
                    local = alias.asname or alias.name.split(".")[0]
                    aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        return aliases

    def char_position(self, lineno: int, byte_col: int) -> tuple:
        """ast counts columns in UTF-8 bytes, tokenize in characters."""
        return lineno, len(self.lines[lineno - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    def problem(self, node: ast.AST, message: str) -> None:
        self.problems.append(f"line {node.lineno}: {message}")

    def dotted(self, node: ast.AST) -> str:
        """`np.linalg.norm` -> "numpy.linalg.norm" through the file's imports; "" for anything else."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return ""
        return ".".join([self.aliases[node.id]] + parts[::-1])

    # --- the walk ---------------------------------------------------------------------------------------------

    def walk(self, node: ast.AST, annotation: bool = False, guarded: bool = False,
             evaluated_annotations: bool = False) -> None:
        if isinstance(node, ast.If) and _is_type_checking_guard(node.test):
            self.walk_all(node.orelse, annotation, guarded, evaluated_annotations)
            return
        if isinstance(node, ast.If) and _is_newer_python_guard(node.test):
            self.walk(node.test)
            self.walk_all(node.orelse, annotation, guarded, evaluated_annotations)
            return
        self.check_node(node, annotation, guarded)
        if isinstance(node, ast.ClassDef):
            evaluated_annotations = any(_last_name(d.func if isinstance(d, ast.Call) else d) in EVALUATED_ANNOTATIONS
                                        for d in node.decorator_list)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            evaluated_annotations = False
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            child_annotation = annotation or (
                field == "annotation" and not (isinstance(node, ast.AnnAssign) and evaluated_annotations)
            ) or field == "returns"
            child_guarded = guarded or (isinstance(node, ast.Try) and field == "body" and _guards_import_errors(node))
            for child in children:
                if isinstance(child, ast.AST):
                    self.walk(child, child_annotation, child_guarded, evaluated_annotations)

    def walk_all(self, nodes: list, annotation: bool, guarded: bool, evaluated_annotations: bool) -> None:
        for node in nodes:
            self.walk(node, annotation, guarded, evaluated_annotations)

    def check_node(self, node: ast.AST, annotation: bool, guarded: bool) -> None:
        kind = type(node).__name__
        if kind in ("Match", "TryStar", "TypeAlias", "TypeVar"):
            self.problem(node, f"{kind} syntax is newer than Python 3.9")
        if isinstance(node, (ast.With, ast.AsyncWith)):
            self.check_with(node)
        if isinstance(node, ast.Call):
            self.check_call(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and not annotation:
            self.check_union(node)
        if isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS and not self.dotted(node):
            self.problem(node, f".{node.attr}(): {NEWER_METHODS[node.attr]}")
        if guarded or annotation:  # never evaluated: `from __future__ import annotations` keeps them strings
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in NEWER_NAMES:
                    self.problem(node, f"import {alias.name}: {NEWER_NAMES[alias.name]}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if name in NEWER_NAMES:
                    self.problem(node, f"{name}: {NEWER_NAMES[name]}")
        elif isinstance(node, ast.Attribute) and self.dotted(node) in NEWER_NAMES:
            self.problem(node, f"{self.dotted(node)}: {NEWER_NAMES[self.dotted(node)]}")
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS and node.id not in self.aliases:
            self.problem(node, f"{node.id}: {NEWER_BUILTINS[node.id]}")

    def check_call(self, node: ast.Call) -> None:
        callee = _last_name(node.func)
        keywords = {k.arg: k for k in node.keywords if k.arg}
        for keyword, version in NEWER_KEYWORDS.get(callee, {}).items():
            if keyword in keywords:
                self.problem(node, f"{callee}({keyword}=...): {version}")
        if callee in ("format_exception", "print_exception", "format_exception_only") and len(node.args) == 1 \
                and not node.keywords:
            self.problem(node, f"{callee}(exc) with one argument is Python 3.10; pass (type(exc), exc, tb)")
        if callee == "from_bytes" and len(node.args) < 2 and "byteorder" not in keywords:
            self.problem(node, "int.from_bytes without byteorder is Python 3.11")
        if callee == "to_bytes" and len(node.args) < 2 and "byteorder" not in keywords:
            self.problem(node, "int.to_bytes without length and byteorder is Python 3.11")
        copy = keywords.get("copy")
        if self.dotted(node.func) == "numpy.asarray" and copy is not None:
            self.problem(node, "np.asarray(copy=...) is numpy 2.x (Slicer 5.8 has numpy 1.26)")
        if self.dotted(node.func) == "numpy.array" and copy is not None and isinstance(copy.value, ast.Constant) \
                and copy.value.value is False:
            self.problem(node, "np.array(copy=False) raises on numpy 2.x when a copy is needed; use np.asarray")
        if callee in ("isinstance", "issubclass") and len(node.args) == 2:
            self.check_union(node.args[1], always=True)
        if callee == "cast" and node.args:
            self.check_union(node.args[0], always=True)

    def is_type(self, node: ast.AST) -> bool:
        """Whether an operand of `|` is surely a type, so the `|` builds a union (TypeError on Python 3.9)."""
        if isinstance(node, ast.Constant):
            return node.value is None
        if isinstance(node, ast.Name):
            resolved = self.aliases.get(node.id, "")
            class_like = node.id[:1].isupper() and not node.id.isupper()  # `Path`, `Volume`; not `O_EXCL`
            return node.id in BUILTIN_TYPES or bool(TYPE_ATTRIBUTES.search(resolved)) \
                or (class_like and resolved.split(".")[0] not in FLAG_MODULES)
        if isinstance(node, ast.Attribute):
            return bool(TYPE_ATTRIBUTES.search(self.dotted(node)))
        if isinstance(node, ast.Subscript):
            return self.is_type(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.is_type(node.left) or self.is_type(node.right)
        return False

    def check_union(self, node: ast.AST, always: bool = False) -> None:
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)) or id(node) in self.reported_unions:
            return
        if always or self.is_type(node):
            for part in ast.walk(node):
                self.reported_unions.add(id(part))
            self.problem(node, f"`{ast.unparse(node)}` builds a type union at run time: Python 3.10; "
                               "use Optional/Union")

    def check_with(self, node: ast.AST) -> None:
        """`with (a as x, b as y):` is Python 3.10 syntax even though CPython 3.9's parser lets it through."""
        items = node.items
        if len(items) == 1 and items[0].optional_vars is None:
            return
        i = self.token_index.get(self.char_position(node.lineno, node.col_offset))
        if i is None:
            return
        i += 2 if self.tokens[i].string == "async" else 1
        if self.tokens[i].string != "(":
            return
        depth = 0
        for token in self.tokens[i:]:
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    close = token.start
                    break
        else:
            return
        last = items[-1].optional_vars or items[-1].context_expr
        if self.char_position(last.end_lineno, last.end_col_offset) <= close:
            self.problem(node, "parenthesised context managers are Python 3.10; use nested `with` or ExitStack")

    def check_fstrings(self) -> None:
        """Python 3.12 (PEP 701) lets f-strings reuse their own quotes and hold backslashes and comments inside
        braces; older parsers refuse the file. Only a 3.12+ tokenizer shows f-string insides (earlier ones fail
        to parse such a file at all, which the grammar check reports)."""
        fstring_start = getattr(tokenize, "FSTRING_START", None)
        if fstring_start is None:
            return
        open_quotes: list = []
        for token in self.tokens:
            if token.type == fstring_start:
                if open_quotes and _quote_of(token.string) in open_quotes:
                    self.problems.append(f"line {token.start[0]}: f-string reuses its enclosing quotes: Python 3.12")
                open_quotes.append(_quote_of(token.string))
            elif token.type == tokenize.FSTRING_END:
                open_quotes.pop()
            elif open_quotes and token.type == tokenize.STRING and (
                    _quote_of(token.string) in open_quotes or "\\" in token.string):
                self.problems.append(f"line {token.start[0]}: quotes or backslash inside an f-string's braces: "
                                     "Python 3.12")
            elif open_quotes and token.type == tokenize.COMMENT:
                self.problems.append(f"line {token.start[0]}: comment inside an f-string: Python 3.12")


def grammar_problems(source: str) -> list:
    try:
        ast.parse(source, feature_version=OLDEST_PYTHON)
    except SyntaxError as error:
        return [f"line {error.lineno}: does not parse as Python 3.9: {error.msg}"]
    return []


def newer_feature_problems(source: str) -> list:
    """Every use of a feature that parses on Python 3.9 but fails there (or on numpy 1.26 / 2.x) at run time."""
    tree = ast.parse(source, feature_version=OLDEST_PYTHON)
    checker = _Checker(source, tree)
    checker.walk(tree)
    checker.check_fstrings()
    return checker.problems


def future_import_problems(source: str) -> list:
    """`from __future__ import annotations` must open the file (after the docstring): it keeps `X | None`,
    `list[int]` and forward references in annotations from being evaluated on Python 3.9."""
    body = ast.parse(source, feature_version=OLDEST_PYTHON).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    futures = []
    for node in body:
        if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            break
        futures += [alias.name for alias in node.names]
    return [] if "annotations" in futures else ["does not start with `from __future__ import annotations`"]


def compile_warning_problems(source: str, path: str) -> list:
    """Invalid escape sequences ("\\d" outside a raw string) warn on 3.12 and become errors later."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            compile(source, path, "exec", dont_inherit=True)
        except SyntaxError as error:
            return [f"line {error.lineno}: {error.msg}"]
    return []


FILES = slicer_loaded_files()
IDS = [path.relative_to(REPO).as_posix() for path in FILES]


def test_the_slicer_loaded_files_are_all_found():
    assert {"SlicerEssNet/__init__.py", "SlicerEssNet/pipeline.py", "SlicerEssNet/networks/unet.py",
            "CT2MRISynthesis/CT2MRISynthesis.py", "EssNetSlicerLib/nodes.py", "EssNetBatch/EssNetBatch.py",
            "LiverSegmentation/LiverSegmentation.py"} <= set(IDS)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_runs_on_python_3_9(path):
    source = path.read_text(encoding="utf-8")
    problems = grammar_problems(source)
    if not problems:
        problems = future_import_problems(source) + newer_feature_problems(source) \
            + compile_warning_problems(source, str(path))
    assert not problems, f"{path.relative_to(REPO)}:\n  " + "\n  ".join(problems)


# --- the checks themselves catch what they claim, and leave ordinary code alone --------------------------------

FUTURE = "from __future__ import annotations\n"
REFUSED = {
    "match": "match x:\n    case 1:\n        pass\n",
    "except star": "try:\n    pass\nexcept* ValueError:\n    pass\n",
    "zip strict": "pairs = list(zip(a, b, strict=True))\n",
    "dataclass slots": "import dataclasses\n@dataclasses.dataclass(frozen=True, slots=True)\nclass A:\n    x: int\n",
    "dataclass kw_only": "from dataclasses import dataclass, field\n@dataclass(kw_only=True)\nclass A:\n    x: int\n",
    "field kw_only": "from dataclasses import dataclass, field\n@dataclass\nclass A:\n"
                     "    x: int = field(kw_only=True)\n",
    "bit_count": "ones = (n & mask).bit_count()\n",
    "union in isinstance": "ok = isinstance(x, int | float)\n",
    "union of lower-case names in isinstance": "ok = isinstance(x, a | b)\n",
    "union in cast": "from typing import cast\ny = cast(Path | None, x)\n",
    "union as default": "def f(kind=int | str):\n    return kind\n",
    "union alias": "from pathlib import Path\nPathLike = str | Path\n",
    "subscripted union": "Shape = tuple[int, ...] | None\n",
    "TypeAlias": "from typing import TypeAlias\nShape: TypeAlias = tuple\n",
    "typing.Self": "from typing import Self\n",
    "typing.Self at run time": "import typing\nSELF = typing.Self\n",
    "ParamSpec": "from typing import ParamSpec\nP = ParamSpec('P')\n",
    "pairwise": "import itertools\nsteps = list(itertools.pairwise(xs))\n",
    "pairwise imported": "from itertools import pairwise\n",
    "datetime.UTC": "import datetime\nnow = datetime.datetime.now(datetime.UTC)\n",
    "tomllib": "import tomllib\n",
    "parenthesised with": "with (open(a) as f, open(b) as g):\n    pass\n",
    "parenthesised with, one item": "with (open(a) as f):\n    pass\n",
    "parenthesised with, no names": "with (lock_a, lock_b):\n    pass\n",
    "one-argument format_exception": "import traceback\ntext = traceback.format_exception(error)\n",
    "from_bytes without byteorder": "n = int.from_bytes(data)\n",
    "anext": "value = anext(iterator)\n",
    "numpy 2 name": "import numpy as np\narea = np.trapezoid(y, x)\n",
    "numpy 2 linalg name": "import numpy\nn = numpy.linalg.vector_norm(v)\n",
    "removed numpy name": "import numpy as np\nx = np.float_(1)\n",
    "numpy asarray copy": "import numpy as np\na = np.asarray(x, copy=False)\n",
    "numpy array copy False": "import numpy as np\na = np.array(x, copy=False)\n",
    "union in parameterNodeWrapper": "@parameterNodeWrapper\nclass P:\n    volume: vtkMRMLScalarVolumeNode | None\n",
    "3.12 f-string quotes": 'd = {}\ntext = f"{d["k"]}"\n',
    "3.12 type statement": "type Shape = tuple\n",
}
ACCEPTED = {
    "unions in annotations": "from pathlib import Path\ndef f(x: int | None, p: Path | str = '') -> list[int] | None:\n"
                             "    y: dict[str, int] | None = None\n    return y\n",
    "bitwise or of masks and flags": "import os\nimport re\nimport numpy as np\nm = a | b\n"
                                     "flags = os.O_CREAT | os.O_EXCL\n"
                                     "rx = re.compile('x', re.I | re.M)\nlive = (m > 0) | np.isnan(m)\n",
    "set and dict union": "both = set(a) | set(b)\nmerged = {**a} | extra\n",
    "plain zip and dataclass": "from dataclasses import dataclass, field\n@dataclass(frozen=True)\nclass A:\n"
                               "    x: list = field(default_factory=list)\npairs = list(zip(a, b))\n",
    "guarded newer names": "import sys\nfrom typing import TYPE_CHECKING\n"
                           "if TYPE_CHECKING:\n    from typing import Self\n"
                           "try:\n    from itertools import pairwise\nexcept ImportError:\n    pairwise = None\n"
                           "if sys.version_info >= (3, 11):\n    import tomllib\n",
    "nested with and plain parentheses": "with open(a) as f, open(b) as g:\n    pass\nwith (open(a)) as f:\n    pass\n"
                                         "with (lock):\n    pass\nwith (a), (b):\n    pass\n",
    "three-argument format_exception": "import traceback\n"
                                        "t = traceback.format_exception(type(e), e, e.__traceback__)\n",
    "numpy 1.26 names": "import numpy as np\na = np.asarray(x, dtype=float)\nb = np.array(x, copy=True)\n"
                        "n = np.linalg.norm(a)\nu = np.unique(a)\n",
    "parameterNodeWrapper with Optional": "from typing import Optional\n@parameterNodeWrapper\nclass P:\n"
                                          "    volume: Optional[vtkMRMLScalarVolumeNode]\n    names: list[str]\n",
    "newer typing names only in annotations": "import typing\ndef f(x) -> typing.Self:\n    return x\n",
    "f-string with other quotes": "d = {}\ntext = f\"{d['k']}\" + f'{x!r:>{width}}'\n",
}


def _all_problems(source: str) -> list:
    return grammar_problems(source) or (newer_feature_problems(source) + compile_warning_problems(source, "<test>"))


@pytest.mark.parametrize("source", REFUSED.values(), ids=REFUSED.keys())
def test_each_newer_feature_is_caught(source):
    assert _all_problems(FUTURE + source)


@pytest.mark.parametrize("source", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_code_that_runs_on_python_3_9_is_accepted(source):
    assert _all_problems(FUTURE + source) == []


def test_the_future_import_must_come_first():
    assert future_import_problems('"""Doc."""\nfrom __future__ import annotations\nimport os\n') == []
    assert future_import_problems("from __future__ import division, annotations\n") == []
    assert future_import_problems('"""Doc."""\nimport os\n')
    assert future_import_problems("from __future__ import division\nimport os\n")
    assert future_import_problems("")


def test_invalid_escape_sequences_are_caught():
    assert compile_warning_problems('pattern = "\\d+"\n', "<test>")
    assert compile_warning_problems('pattern = r"\\d+"\n', "<test>") == []


# --- a real Python 3.9, where the machine has one (pyenv puts one beside the project's Python) -------------------
GRAMMAR_CASES = ("match", "except star", "3.12 f-string quotes", "3.12 type statement")
COMPILE_ON_THE_OLDEST = r"""
import json, sys, warnings
warnings.simplefilter("ignore")  # a SyntaxWarning is not what is asked; compile_warning_problems covers it
assert sys.version_info[:2] == (3, 9), sys.version
outcome = {}
for name, source in json.load(sys.stdin).items():
    try:
        compile(source, name, "exec", dont_inherit=True)
        outcome[name] = None
    except SyntaxError as error:
        outcome[name] = "line %s: %s" % (error.lineno, error.msg)
print(json.dumps(outcome))
"""


@functools.lru_cache(maxsize=None)
def _python_3_9() -> str | None:
    """A python3.9 that really runs: this one, one on PATH (a pyenv shim is on PATH even where that version is not
    active, so each candidate is tried), or one of pyenv's versions; None where there is none."""
    import glob
    import os
    import shutil
    import subprocess

    if sys.version_info[:2] == OLDEST_PYTHON:
        return sys.executable
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [os.environ.get("PYTHON39"), shutil.which("python3.9"),
                  *sorted(glob.glob(os.path.join(root, "versions", "3.9.*", "bin", "python3.9")))]
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run([candidate, "-I", "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.strip() == "True":
            return candidate
    return None


def compile_on_python_3_9(sources: dict) -> dict:
    """``{name: None, or 'line N: message' of the SyntaxError}``: each source compiled by a real Python 3.9."""
    import json
    import subprocess

    python = _python_3_9()
    if python is None:
        pytest.skip("no Python 3.9 on PATH or in pyenv's versions (pyenv install 3.9, or set PYTHON39=/path)")
    done = subprocess.run([python, "-I", "-c", COMPILE_ON_THE_OLDEST], input=json.dumps(sources), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_python_3_9_itself_refuses_the_grammar_cases_and_compiles_the_accepted_ones():
    """What the source checks claim of 3.9's grammar, asked of 3.9 itself (not of the newer Python running the
    suite): the grammar cases are syntax errors there, and every snippet called fine for 3.9 compiles."""
    refused = compile_on_python_3_9({name: FUTURE + REFUSED[name] for name in GRAMMAR_CASES})
    assert all(refused[name] for name in GRAMMAR_CASES), refused
    accepted = compile_on_python_3_9({name: FUTURE + source for name, source in ACCEPTED.items()})
    assert accepted == {name: None for name in ACCEPTED}


def test_python_3_9_itself_compiles_every_file_slicer_loads():
    """The hand-written checks above read the source with this newer Python's parser; a real 3.9 compiles it."""
    outcome = compile_on_python_3_9({str(path.relative_to(REPO)): path.read_text(encoding="utf-8")
                                     for path in FILES})
    assert len(outcome) == len(FILES) >= 6
    problems = {name: problem for name, problem in outcome.items() if problem}
    assert not problems, problems
