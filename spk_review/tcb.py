"""The trusted computing base: how much code it is, and what it imports.

Ring 0 (``spk``) and ring 1 (``spgs``) are the TCB (docs/trust.md): a bug in
either breaks isolation or the chain of trust, so a reviewer wants their size
and the third-party code below them: what they import, and what the code
they run in a child process imports (the assembler: keystone), with each
distribution's version and the native libraries it installed. Sizes are
counted from the files of the *installed* packages (what runs, wherever it
was installed from), with the standard tokenizer, so a long docstring or a
comment block does not pass for code.

Errors: OSError when a package file cannot be read; SyntaxError (from
tokenize/ast) for a file that is not Python: neither happens to an installed
package that imports.
"""

from __future__ import annotations

import ast
import bisect
import importlib.metadata
import io
import sys
import token
import tokenize
from itertools import accumulate
from pathlib import Path
from types import ModuleType

from pygments.lexers import CLexer
from pygments.token import Comment, Text, Whitespace

from spk_review.model import Dependency, ModuleSize, PackageSize

COUNTING = (
    "every *.py file of the installed package directory, read with Python's tokenizer: "
    "a code line holds a token other than a comment or a docstring (a line with code and a trailing "
    "comment is code); comment lines hold only a comment; docstrings are the string statements that "
    "open a module, class or function; blank lines hold nothing. Every *.c file beside them (the "
    "native code the package builds and runs in its own process) the same way, read with "
    "pygments' C lexer (preprocessor lines are code; C has no docstrings)"
)
_NOT_CODE = {token.COMMENT, token.NL, token.NEWLINE, token.INDENT, token.DEDENT, token.ENCODING, token.ENDMARKER}


def _docstring_lines(tree: ast.Module) -> set[int]:
    """Line numbers of every module, class and function docstring."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def module_size(path: Path, name: str) -> ModuleSize:
    """Count one file's lines by kind (see :data:`COUNTING`)."""
    source = path.read_text(encoding="utf-8")
    docstrings = _docstring_lines(ast.parse(source, str(path)))
    code: set[int] = set()
    comments: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == token.COMMENT:
            comments.add(tok.start[0])
        elif tok.type not in _NOT_CODE:
            code.update(range(tok.start[0], tok.end[0] + 1))
    code -= docstrings
    comments -= code | docstrings
    total = len(source.splitlines())
    return ModuleSize(
        module=name, lines=total, code=len(code), comments=len(comments), docstrings=len(docstrings),
        blank=total - len(code) - len(comments) - len(docstrings),
    )  # fmt: skip


def c_source_size(path: Path, name: str) -> ModuleSize:
    """Count one C file's lines by kind (see :data:`COUNTING`): a comment token that is not a
    preprocessor directive is a comment, whitespace is nothing, any other token is code."""
    source = path.read_text(encoding="utf-8")
    starts = list(accumulate((len(line) for line in source.splitlines(keepends=True)), initial=0))
    code: set[int] = set()
    comments: set[int] = set()
    for offset, kind, text in CLexer(stripnl=False, ensurenl=False).get_tokens_unprocessed(source):
        if kind in Text or kind in Whitespace:
            continue
        first = bisect.bisect_right(starts, offset)
        lines = range(first, bisect.bisect_right(starts, offset + max(len(text), 1) - 1) + 1)
        is_comment = kind in Comment and not (kind in Comment.Preproc or kind in Comment.PreprocFile)
        (comments if is_comment else code).update(lines)
    comments -= code
    total = len(source.splitlines())
    return ModuleSize(module=name, lines=total, code=len(code), comments=len(comments), docstrings=0,
                      blank=total - len(code) - len(comments))  # fmt: skip


def package_size(package: ModuleType, ring: int) -> PackageSize:
    """Sizes of every module of an installed package (its directory, not subpackages), and of
    the C sources beside them (named ``package/file.c``)."""
    directory = Path(package.__file__ or "").parent
    modules = [module_size(f, f"{package.__name__}.{f.stem}") for f in sorted(directory.glob("*.py"))]
    modules += [c_source_size(f, f"{package.__name__}/{f.name}") for f in sorted(directory.glob("*.c"))]
    return PackageSize(
        package=package.__name__, ring=ring, path=str(directory), modules=modules,
        lines=sum(m.lines for m in modules), code=sum(m.code for m in modules),
    )  # fmt: skip


#: How :attr:`Dependency.imported_by` marks an import made by code a TCB module runs in a child process.
CHILD = " (in a child process)"
#: File names of native libraries (shared objects) a distribution may install.
_NATIVE = (".so", ".pyd", ".dylib", ".dll")


def _imports(tree: ast.AST) -> list[str]:
    """Top-level names of every absolute import in ``tree``."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return [name.split(".")[0] for name in names]


def _child_imports(tree: ast.AST) -> list[str]:
    """Imports of the Python source held in string constants: code a module runs in a child process
    (``python -c``, as ``spgs.assembler`` runs keystone). A string that is not Python imports nothing."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
            try:
                found += _imports(ast.parse(node.value))
            except SyntaxError:
                continue
    return found


def _native(distribution: str | None) -> list[str]:
    """The native libraries a distribution installed (its RECORD), by path inside site-packages."""
    if distribution is None:
        return []
    files = importlib.metadata.files(distribution) or []
    return sorted(str(f) for f in files if f.name.endswith(_NATIVE) or ".so." in f.name)


def dependencies(packages: list[ModuleType]) -> list[Dependency]:
    """Third-party modules the packages import, in their process or in a child process they run
    (standard library and the TCB itself left out), with version and native libraries."""
    own = {p.__name__ for p in packages}
    users: dict[str, set[str]] = {}
    for package in packages:
        directory = Path(package.__file__ or "").parent
        for path in sorted(directory.glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            user = f"{package.__name__}.{path.stem}"
            found = [(top, user) for top in _imports(tree)] + [(top, user + CHILD) for top in _child_imports(tree)]
            for top, by in found:
                if top not in own and top not in sys.stdlib_module_names and top != "__future__":
                    users.setdefault(top, set()).add(by)
    providers = importlib.metadata.packages_distributions()
    result = []
    for module in sorted(users):
        dist = next(iter(providers.get(module, [])), None)
        version = importlib.metadata.version(dist) if dist else None
        result.append(
            Dependency(module=module, distribution=dist, version=version, imported_by=sorted(users[module]),
                       native=_native(dist))
        )  # fmt: skip
    return result
