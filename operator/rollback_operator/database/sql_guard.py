"""The one-transaction guard, where the operator sees the SQL itself: a down.sql (from the
ConfigMap Preflight reads) or a dump's text must hold nothing that could end, split or leave
the rollback's one transaction.

psql runs these files, so they are read the way psql reads them, then parsed by PostgreSQL's
own parser (pglast, libpg_query) rather than matched with regular expressions:

1. A psql-aware scan (`_Scan`) walks the text as psql's lexer does: quotes, E'' strings,
   quoted identifiers, dollar quotes, `--` and nested `/* */` comments, parentheses, and COPY
   ... FROM stdin data up to its `\\.` line. Outside of those, a backslash starts a psql
   meta-command (`\\set ON_ERROR_STOP off`, `\\connect`, `\\!`, `\\i`, ...) wherever it is on a
   line, and `:name` is a psql variable: both are refused. A string whose end depends on
   standard_conforming_strings (a backslash before a quote, which a `SET` earlier in the file
   could change for psql) is refused too, so that the scan and psql cannot disagree on where a
   string ends. Each statement ends at a `;` as psql ends it (outside parentheses, and outside
   the BEGIN ... END of a SQL-standard function body).
2. Each statement goes to pglast: transaction control (BEGIN, START TRANSACTION, COMMIT, END,
   ROLLBACK, ABORT, SAVEPOINT, RELEASE, PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED), CREATE
   or DROP DATABASE, and COMMIT/ROLLBACK inside a DO block are refused, and so is anything
   PostgreSQL would not parse.

One shape is accepted in a down.sql, because `prisma migrate diff` writes it: an enum rebuilt
inside its own block, a line `-- AlterEnum`, then `BEGIN;`, `CREATE TYPE "<Enum>_new" AS ENUM
(...)`, the rebuild, and `COMMIT;`, each on a line of its own. The Job folds that pair into
the run's one transaction (database/sql_guard_job.py, which checks the same rules in the Job);
any other BEGIN or COMMIT is refused. In a dump, pg_dump's own `\\restrict KEY` before the
first statement and `\\unrestrict KEY` after the last are accepted, and nothing else of psql.

Each refusal names the line (number and text) and says what to do.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast
from pglast.enums import TransactionStmtKind

PRISMA_ENUM_MARKER = "-- AlterEnum"
_PRISMA_LINES = {("BEGIN;", False), ("COMMIT;", False)}  # each alone on its line
_IDENT = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]")
_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_RESTRICT = re.compile(r"\\(restrict|unrestrict) ([A-Za-z0-9]+)")
_PRISMA_ENUM_NEW = re.compile(r'CREATE TYPE ("[^"]+"\.)?"[^"]*_new" AS ENUM \(.*')
_ROUTINE_WORDS = ("create", "function", "procedure", "or", "replace")
_SHOWN = 60  # characters of an offending line quoted in a message

_KINDS = {
    TransactionStmtKind.TRANS_STMT_BEGIN: "BEGIN",
    TransactionStmtKind.TRANS_STMT_START: "START TRANSACTION",
    TransactionStmtKind.TRANS_STMT_COMMIT: "COMMIT",
    TransactionStmtKind.TRANS_STMT_ROLLBACK: "ROLLBACK",
    TransactionStmtKind.TRANS_STMT_SAVEPOINT: "SAVEPOINT",
    TransactionStmtKind.TRANS_STMT_RELEASE: "RELEASE SAVEPOINT",
    TransactionStmtKind.TRANS_STMT_ROLLBACK_TO: "ROLLBACK TO SAVEPOINT",
    TransactionStmtKind.TRANS_STMT_PREPARE: "PREPARE TRANSACTION",
    TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED: "COMMIT PREPARED",
    TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED: "ROLLBACK PREPARED",
}

DOWN_SQL_REMEDY = (
    "remove it from the down.sql: every down.sql runs inside the rollback's one transaction "
    "(only Prisma's own '-- AlterEnum' BEGIN;/COMMIT; block is folded into it)"
)
DUMP_REMEDY = (
    "make the snapshot with a plain pg_dump of the one database (no --create, no large "
    "objects), or restore this file by hand"
)

PLAIN_SQL_REMEDY = "remove it: the file must be plain SQL"
ONE_DATABASE_REMEDY = (
    "restore it by hand, or use a dump of the one database (pg_dump without --create)"
)
CONNECT_REASON = "switches database (\\connect)"
DATABASE_REASON = "creates or drops a database (CREATE/DROP DATABASE)"
VARIABLE_REASON = "uses a psql variable (:name), which psql replaces before PostgreSQL sees it"
AMBIGUOUS_STRING_REASON = (
    "holds a string whose end depends on standard_conforming_strings (a backslash before a quote)"
)
AMBIGUOUS_STRING_REMEDY = "write it as E'...' with the backslash doubled, so it reads one way only"
UNCLOSED_REASON = "opens a string, quoted identifier, dollar quote or comment that never closes"
PRISMA_BEGIN_REASON = "follows a BEGIN that is not Prisma's enum block"
NEVER_CLOSED_REASON = "opens a transaction never closed"
COPY_LINE_REASON = "puts more on the line of a COPY ... FROM stdin"
AFTER_UNRESTRICT_REASON = "comes after pg_dump's closing \\unrestrict"
DO_REASON = "commits or rolls back inside a DO block"


def control_reason(kind: str, *, dump: bool) -> str:
    """Why a transaction-control statement is refused."""
    return (
        f"controls the transaction ({kind}): it would end or split the run's one transaction, "
        "and make part of it permanent even if a later statement fails"
        + (" (pg_dump writes these around large objects)" if dump else "")
    )


def meta_command_reason(command: str) -> str:
    """Why a psql meta-command is refused."""
    return (
        f"is a psql meta-command ({command}), which psql runs itself, outside SQL (\\set "
        "ON_ERROR_STOP off would let the run go on after an error)"
    )


@dataclass(frozen=True)
class Refusal:
    """Why a file cannot run in the one transaction: the line, what is on it, what to do."""

    line: int
    text: str
    reason: str
    remedy: str

    def message(self, what: str) -> str:
        shown = self.text.strip()
        if len(shown) > _SHOWN:
            shown = shown[: _SHOWN - 3] + "..."
        return (
            f"{what} cannot run in one transaction: line {self.line} ({shown}) {self.reason}; "
            f"{self.remedy}"
        )


class _RefusedError(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def check_down_sql(text: str) -> Refusal | None:
    """Why this down.sql cannot run in the rollback's one transaction, or None if it can."""
    return _Scan(text, dump=False).run()


def check_dump(text: str) -> Refusal | None:
    """Why this plain-format dump cannot be restored in one transaction, or None if it can."""
    return _Scan(text, dump=True).run()


class _Scan:
    """One pass over the text, as psql reads it (see the module's docstring)."""

    def __init__(self, text: str, *, dump: bool) -> None:
        self.text = text
        self.dump = dump
        self.remedy = DUMP_REMEDY if dump else DOWN_SQL_REMEDY
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.statements = 0
        self.restrict_key: str | None = None
        self.unrestricted = False
        self.prisma_begin: int | None = None  # the line of an open Prisma enum block
        self.expect_enum = False

    # --- positions and refusals

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.line_starts, offset)

    def line_text(self, line: int) -> str:
        start = self.line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start : end if end >= 0 else len(self.text)].rstrip("\r")

    def refuse(self, offset: int, reason: str, remedy: str | None = None) -> _RefusedError:
        line = self.line_of(offset)
        return _RefusedError(Refusal(line, self.line_text(line), reason, remedy or self.remedy))

    # --- the scan

    def run(self) -> Refusal | None:
        try:
            self._scan()
        except _RefusedError as refused:
            return refused.refusal
        return None

    def _scan(self) -> None:  # noqa: PLR0915 - one lexer, one loop: easier to check whole
        text, n, i = self.text, len(self.text), 0
        start, first, paren, begin_depth, words = 0, -1, 0, 0, []
        while i < n:
            c = text[i]
            if c in " \t\r\n\f\v":
                i += 1
                continue
            if text.startswith("--", i):
                end = text.find("\n", i)
                i = n if end < 0 else end
                continue
            if text.startswith("/*", i):
                i = self._block_comment(i)
                continue
            if self.unrestricted:
                raise self.refuse(i, AFTER_UNRESTRICT_REASON)
            if c == "\\":
                i = self._meta_command(i, alone=first < 0)
                start = i  # only pg_dump's own lines come back, before any statement's text
                continue
            if first < 0:
                first = i
            if c == "'":
                i = self._quote(i, escapes=self._e_prefix(i))
            elif c == '"':
                i = self._closing(i, '"')
            elif c == "$" and (m := _DOLLAR.match(text, i)):
                end = text.find(m.group(0), m.end())
                if end < 0:
                    raise self.refuse(i, UNCLOSED_REASON)
                i = end + len(m.group(0))
            elif c == ":" and text.startswith("::", i):
                i += 2
            elif c == ":" and i + 1 < n and (text[i + 1] in "'\"" or _IDENT.match(text, i + 1)):
                raise self.refuse(i, VARIABLE_REASON, PLAIN_SQL_REMEDY)
            elif m := _IDENT.match(text, i):
                word = m.group(0).lower()
                words.append(word)
                begin_depth = _begin_depth(words, word, begin_depth, paren)
                i = m.end()
            elif c == "(":
                paren, i = paren + 1, i + 1
            elif c == ")":
                paren, i = max(0, paren - 1), i + 1
            elif c == ";" and paren == 0 and begin_depth == 0:
                i = self._statement(start, first, i + 1)
                start, first, words = i, -1, []
            else:
                i += 1
        if first >= 0:
            self._statement(start, first, n)  # psql sends what is left at the end
        if self.prisma_begin is not None:
            line = self.prisma_begin
            raise _RefusedError(
                Refusal(line, self.line_text(line), NEVER_CLOSED_REASON, self.remedy)
            )

    def _block_comment(self, i: int) -> int:
        depth, i = 1, i + 2
        while depth:
            close, open_ = self.text.find("*/", i), self.text.find("/*", i)
            if close < 0:
                raise self.refuse(i, UNCLOSED_REASON)
            if 0 <= open_ < close:
                depth, i = depth + 1, open_ + 2
            else:
                depth, i = depth - 1, close + 2
        return i

    def _closing(self, i: int, quote: str) -> int:
        j = i + 1
        while True:
            end = self.text.find(quote, j)
            if end < 0:
                raise self.refuse(i, UNCLOSED_REASON)
            if self.text.startswith(quote * 2, end):
                j = end + 2
                continue
            return end + 1

    def _e_prefix(self, i: int) -> bool:
        """Whether the quote at i opens an E'' string (E alone, right before it)."""
        return (
            i > 0
            and self.text[i - 1] in "eE"
            and (i < 2 or not _IDENT_CHAR.match(self.text[i - 2]))
        )

    def _quote(self, i: int, *, escapes: bool) -> int:
        plain = self._closing(i, "'") if not escapes else -1
        j = i + 1
        while True:  # the end as an escape string: where psql ends a plain one once a SET
            end = self.text.find("'", j)  # has turned standard_conforming_strings off
            if end < 0:
                if escapes:
                    raise self.refuse(i, UNCLOSED_REASON)
                break
            backslashes = len(self.text[j:end]) - len(self.text[j:end].rstrip("\\"))
            if backslashes % 2:
                j = end + 1
            elif self.text.startswith("''", end):
                j = end + 2
            else:
                break
        if escapes:
            return end + 1
        if end != plain - 1:
            raise self.refuse(i, AMBIGUOUS_STRING_REASON, AMBIGUOUS_STRING_REMEDY)
        return plain

    def _meta_command(self, i: int, *, alone: bool) -> int:
        line = self.line_of(i)
        shape = _RESTRICT.fullmatch(self.line_text(line).strip())
        if self.dump and alone and shape:
            name, key = shape.groups()
            if name == "restrict" and self.statements == 0 and self.restrict_key is None:
                self.restrict_key = key
                return self.line_starts[line] if line < len(self.line_starts) else len(self.text)
            if name == "unrestrict" and key == self.restrict_key:
                self.unrestricted = True
                return self.line_starts[line] if line < len(self.line_starts) else len(self.text)
        word = re.match(r"\\[A-Za-z!?.;]*", self.text[i:])
        command = word.group(0) if word and len(word.group(0)) > 1 else "\\"
        if command in ("\\c", "\\connect"):
            raise self.refuse(i, CONNECT_REASON, ONE_DATABASE_REMEDY)
        raise self.refuse(
            i,
            meta_command_reason(command),
            PLAIN_SQL_REMEDY if not self.dump else self.remedy,
        )

    # --- one statement, as psql sends it

    def _statement(self, start: int, first: int, end: int) -> int:
        if first < 0:
            return end
        self.statements += 1
        sql = self.text[start:end]
        try:
            parsed = pglast.parse_sql(sql)
        except pglast.parser.ParseError as error:
            raise self.refuse(
                first, f"is not SQL PostgreSQL parses ({error.args[0]})", "correct the SQL"
            ) from None
        for raw in parsed:
            statement = raw.stmt
            if self.expect_enum:
                self.expect_enum = False
                if not _is_prisma_enum_copy(statement, self.line_text(self.line_of(first))):
                    raise self.refuse(first, PRISMA_BEGIN_REASON)
            if isinstance(statement, ast.TransactionStmt):
                self._transaction_control(statement, first)
            elif isinstance(statement, (ast.CreatedbStmt, ast.DropdbStmt)):
                raise self.refuse(first, DATABASE_REASON, ONE_DATABASE_REMEDY)
            elif isinstance(statement, ast.DoStmt) and _do_ends_transaction(statement):
                raise self.refuse(first, DO_REASON)
            elif (
                isinstance(statement, ast.CopyStmt) and statement.is_from and not statement.filename
            ):
                return self._copy_data(end)
        return end

    def _transaction_control(self, statement: ast.TransactionStmt, first: int) -> None:
        kind = (
            _KINDS.get(statement.kind, "transaction control") if statement.kind is not None else "?"
        )
        line = self.line_of(first)
        text = self.line_text(line)
        prisma = not self.dump and line > 1 and (text, statement.chain) in _PRISMA_LINES
        if prisma and kind == "BEGIN" and self.prisma_begin is None:
            if self.line_text(line - 1) == PRISMA_ENUM_MARKER:
                self.prisma_begin, self.expect_enum = line, True
                return
        elif prisma and kind == "COMMIT" and self.prisma_begin is not None:
            self.prisma_begin = None
            return
        raise self.refuse(first, control_reason(kind, dump=self.dump))

    def _copy_data(self, end: int) -> int:
        """psql reads the lines after COPY ... FROM stdin as data, up to a line `\\.`."""
        rest = self.text.find("\n", end)
        if self.text[end : len(self.text) if rest < 0 else rest].strip():
            raise self.refuse(end, COPY_LINE_REASON)
        if rest < 0:
            return len(self.text)
        i = rest + 1
        while i < len(self.text):
            nl = self.text.find("\n", i)
            line_end = len(self.text) if nl < 0 else nl
            if self.text[i:line_end].rstrip("\r") == "\\.":
                return line_end
            i = line_end + 1
        return len(self.text)


def _begin_depth(words: list[str], word: str, depth: int, paren: int) -> int:
    """psql's own rule: in CREATE [OR REPLACE] FUNCTION|PROCEDURE, a BEGIN (ATOMIC) ... END
    body keeps its semicolons (CASE ... END inside it too)."""
    head = [w[0] if w in _ROUTINE_WORDS else "" for w in words[:4]]
    routine = head[:1] == ["c"] and (
        head[1:2] in (["f"], ["p"]) or (head[1:3] == ["o", "r"] and head[3:4] in (["f"], ["p"]))
    )
    if not routine or paren:
        return depth
    if word == "begin" or (word == "case" and depth):
        return depth + 1
    if word == "end" and depth:
        return depth - 1
    return depth


def _copies_from_stdin(statement: Any) -> bool:
    """COPY ... FROM stdin: psql reads the lines that follow as its data."""
    return (
        isinstance(statement, ast.CopyStmt) and bool(statement.is_from) and not statement.filename
    )


def _is_prisma_enum_copy(statement: Any, line: str) -> bool:
    """`CREATE TYPE "<Enum>_new" AS ENUM (...)`, the first statement of Prisma's enum block."""
    return isinstance(statement, ast.CreateEnumStmt) and bool(_PRISMA_ENUM_NEW.fullmatch(line))


def _do_ends_transaction(statement: ast.DoStmt) -> bool:
    """A DO block of PL/pgSQL with a COMMIT or ROLLBACK in it (PostgreSQL refuses those inside
    a transaction block anyway; refused here to say so before anything runs)."""
    body, language = "", "plpgsql"
    for option in statement.args or ():
        if option.defname == "as":
            body = option.arg.sval
        elif option.defname == "language":
            language = option.arg.sval.lower()
    if language != "plpgsql":
        return False
    tag = "$guard$"
    while tag in body:
        tag = tag[:-1] + "x$"
    try:
        tree = pglast.parse_plpgsql(
            f"CREATE FUNCTION guard() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}"
        )
    except pglast.parser.ParseError:
        return True  # not PL/pgSQL that parses: PostgreSQL would refuse it too
    return _mentions(tree, ("PLpgSQL_stmt_commit", "PLpgSQL_stmt_rollback"))


def _mentions(tree: Any, keys: tuple[str, ...]) -> bool:
    if isinstance(tree, dict):
        return any(k in keys or _mentions(v, keys) for k, v in tree.items())
    if isinstance(tree, list):
        return any(_mentions(v, keys) for v in tree)
    return False
