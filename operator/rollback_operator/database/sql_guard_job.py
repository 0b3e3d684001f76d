"""The one-transaction guard where it runs in the Job, before psql sees a down.sql or a dump.

The Job's image has sh and awk (POSIX awk: mawk in Debian's postgres images, busybox awk in
Alpine's), not Python, so sql_guard.py's rules are checked here by an awk program that reads
the file as psql does: quotes, E'' strings, quoted identifiers, dollar quotes, comments,
parentheses, the BEGIN ... END of SQL-standard function bodies, and COPY ... FROM stdin data.
It refuses what sql_guard.py refuses, with the same words: any psql meta-command (a backslash
outside quotes and comments, anywhere on a line), psql variables (`:name`), strings whose end
depends on standard_conforming_strings, transaction control at the start of any statement
(BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, PREPARE
TRANSACTION), CREATE/DROP DATABASE, and quotes or comments left open. COMMIT or ROLLBACK inside
a DO block or a procedure is refused by PostgreSQL itself inside the run's transaction block.

For a down.sql, the program writes the copy psql runs: Prisma's `-- AlterEnum` BEGIN;/COMMIT;
pair turned into comments (same line numbers), so the enum rebuild runs in the one
transaction. psql runs that copy, read once, never the file again. In a dump, pg_dump's own
`\\restrict KEY` (before the first statement) and `\\unrestrict KEY` (after the last) pass.
"""

from __future__ import annotations

from rollback_operator.database import sql_guard as g


def _awk_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Placeholders @NAME@ are sql_guard's own words, so that both guards say the same.
_PROGRAM = r"""
function refuse(line, text, reason, remedy) {
  sub(/^[ \t\r]+/, "", text); sub(/[ \t\r]+$/, "", text)
  if (length(text) > @SHOWN@) text = substr(text, 1, @SHOWN@ - 3) "..."
  printf "%s cannot run in one transaction: line %d (%s) %s; %s\n", what, line, text, reason, remedy
  failed = 1
  exit 1
}
function here(reason) { refuse(NR, $0, reason, remedy_default) }
function at_first(reason) { refuse(first_nr, first_text, reason, remedy_default) }
function bare(s) { sub(/\r$/, "", s); return s }
function statement_end(    kind) {
  if (ntok == 0) return
  if (expect_enum) {
    expect_enum = 0
    if (bare(first_text) !~ /^CREATE TYPE ("[^"]+"\.)?"[^"]*_new" AS ENUM \(/) \
      at_first(@PRISMA_BEGIN@)
  }
  kind = ""
  if (w1 == "begin" || w1 == "commit" || w1 == "end" || w1 == "rollback" || w1 == "abort" || \
      w1 == "savepoint" || w1 == "release") kind = toupper(w1)
  else if (w1 == "start" && w2 == "transaction") kind = "START TRANSACTION"
  else if (w1 == "prepare" && w2 == "transaction") kind = "PREPARE TRANSACTION"
  if (kind == "BEGIN" && mode == "down" && ntok == 2 && bare(first_text) == "BEGIN;" && \
      first_nr == NR && bare(previous) == "@MARKER@" && prisma_begin == 0) {
    prisma_begin = NR; expect_enum = 1; fold = 1
  } else if (kind == "COMMIT" && mode == "down" && ntok == 2 && bare(first_text) == "COMMIT;" && \
      first_nr == NR && prisma_begin > 0) {
    prisma_begin = 0; fold = 1
  } else if (kind != "") {
    at_first(control(kind))
  }
  if ((w1 == "create" || w1 == "drop") && w2 == "database") \
    refuse(first_nr, first_text, @DATABASE@, @ONE_DATABASE@)
  if (w1 == "copy" && copy_stdin) {
    if (substr($0, j + 1) !~ /^[ \t\r]*$/) here(@COPY_LINE@)
    copying = 1
  }
  ntok = 0; nwords = 0; w1 = ""; w2 = ""; copy_stdin = 0; prev_word = ""; paren = 0; bdepth = 0
  r1 = ""; r2 = ""; r3 = ""; r4 = ""
}
function control(kind) {
  return "controls the transaction (" kind "): it would end or split the run's one " \
    "transaction, and make part of it permanent even if a later statement fails" \
    (mode == "dump" ? " (pg_dump writes these around large objects)" : "")
}
function word(w,    r) {
  w = tolower(w); nwords++
  if (nwords == 1) w1 = w; else if (nwords == 2) w2 = w
  if (prev_word == "from" && w == "stdin") copy_stdin = 1
  prev_word = w
  r = (w == "create" || w == "function" || w == "procedure" || w == "or" || w == "replace") ? \
    substr(w, 1, 1) : "-"
  if (nwords == 1) r1 = r; else if (nwords == 2) r2 = r; else if (nwords == 3) r3 = r
  else if (nwords == 4) r4 = r
  if (r1 == "c" && paren == 0 && \
      (r2 == "f" || r2 == "p" || (r2 == "o" && r3 == "r" && (r4 == "f" || r4 == "p")))) {
    if (w == "begin") bdepth++
    else if (w == "case" && bdepth >= 1) bdepth++
    else if (w == "end" && bdepth > 0) bdepth--
  }
}
function token() {
  if (unrestricted) here(@AFTER_UNRESTRICT@)
  if (ntok == 0) { first_nr = NR; first_text = $0 }
  ntok++
}
BEGIN {
  what = ENVIRON["GUARD_WHAT"]; mode = ENVIRON["GUARD_MODE"]; out = ENVIRON["GUARD_OUT"]
  remedy_default = (mode == "dump") ? @DUMP_REMEDY@ : @DOWN_REMEDY@
  st = ""; ntok = 0; statements = 0
}
{
  line = $0; n = length(line); j = 1; fold = 0; bs = 0
  if (copying) {
    if (bare(line) == "\\.") copying = 0
    n = 0
  }
  while (j <= n) {
    c = substr(line, j, 1)
    if (st == "c") {
      if (substr(line, j, 2) == "*/") { depth--; j += 2; if (depth == 0) st = ""; continue }
      if (substr(line, j, 2) == "/*") { depth++; j += 2; continue }
      j++; continue
    }
    if (st == "q" || st == "e") {
      if (c == "\\") {
        if (st == "e") { j += 2; continue }
        bs++; j++; continue
      }
      if (c == "'") {
        if (st == "q" && bs % 2 == 1) refuse(open_nr, open_text, @AMBIGUOUS@, @AMBIGUOUS_REMEDY@)
        bs = 0
        if (substr(line, j + 1, 1) == "'") { j += 2; continue }
        st = ""; j++; continue
      }
      bs = 0; j++; continue
    }
    if (st == "d") {
      if (c == "\"") {
        if (substr(line, j + 1, 1) == "\"") { j += 2; continue }
        st = ""
      }
      j++; continue
    }
    if (st == "$") {
      k = index(substr(line, j), tag)
      if (k == 0) { j = n + 1; continue }
      j += k - 1 + length(tag); st = ""; continue
    }
    if (c == " " || c == "\t" || c == "\r" || c == "\f" || c == "\v") { j++; continue }
    if (substr(line, j, 2) == "--") break
    if (substr(line, j, 2) == "/*") {
      st = "c"; depth = 1; open_nr = NR; open_text = line; j += 2; continue
    }
    if (c == "\\") {
      if (mode == "dump" && ntok == 0 && bare(line) ~ /^[ \t]*\\restrict [A-Za-z0-9]+[ \t]*$/ && \
          statements == 0 && key == "") {
        key = bare(line); sub(/^[ \t]*\\restrict /, "", key); sub(/[ \t]*$/, "", key); break
      }
      if (mode == "dump" && ntok == 0 && key != "" && \
          bare(line) ~ /^[ \t]*\\unrestrict [A-Za-z0-9]+[ \t]*$/) {
        k = bare(line); sub(/^[ \t]*\\unrestrict /, "", k); sub(/[ \t]*$/, "", k)
        if (k == key) { unrestricted = 1; break }
      }
      cmd = substr(line, j)
      if (match(cmd, /^\\[A-Za-z!?.;]+/)) cmd = substr(cmd, 1, RLENGTH); else cmd = "\\"
      if (cmd == "\\c" || cmd == "\\connect") refuse(NR, line, @CONNECT@, @ONE_DATABASE@)
      refuse(NR, line, "is a psql meta-command (" cmd @META_TAIL@, \
        mode == "dump" ? remedy_default : @PLAIN_SQL@)
    }
    token()
    if (c == "'") {
      pc = (j > 1) ? substr(line, j - 1, 1) : ""; ppc = (j > 2) ? substr(line, j - 2, 1) : ""
      st = ((pc == "e" || pc == "E") && (j == 2 || ppc !~ /[A-Za-z0-9_$\200-\377]/)) ? "e" : "q"
      bs = 0; open_nr = NR; open_text = line; j++; continue
    }
    if (c == "\"") { st = "d"; open_nr = NR; open_text = line; j++; continue }
    if (c == "$" && match(substr(line, j), /^\$([A-Za-z_\200-\377][A-Za-z0-9_\200-\377]*)?\$/)) {
      tag = substr(line, j, RLENGTH); st = "$"; open_nr = NR; open_text = line; j += RLENGTH
      continue
    }
    if (c == ":") {
      if (substr(line, j + 1, 1) == ":") { j += 2; continue }
      if (substr(line, j + 1, 1) ~ /[A-Za-z_\200-\377'"]/) refuse(NR, line, @VARIABLE@, @PLAIN_SQL@)
      j++; continue
    }
    if (match(substr(line, j), /^[A-Za-z_\200-\377][A-Za-z0-9_$\200-\377]*/)) {
      word(substr(line, j, RLENGTH)); j += RLENGTH; continue
    }
    if (c == "(") { paren++; j++; continue }
    if (c == ")") { if (paren > 0) paren--; j++; continue }
    if (c == ";" && paren == 0 && bdepth == 0) { statements++; statement_end(); j++; continue }
    j++
  }
  if (out != "") {
    if (fold) print "-- " line " (folded into the run's one transaction)" > out
    else print line > out
  }
  previous = line
}
END {
  if (failed) exit 1
  if (st != "") refuse(open_nr, open_text, @UNCLOSED@, remedy_default)
  statement_end()
  if (prisma_begin > 0) refuse(prisma_begin, "BEGIN;", @NEVER_CLOSED@, remedy_default)
}
"""

_WORDS = {
    "SHOWN": str(g._SHOWN),
    "MARKER": g.PRISMA_ENUM_MARKER,
    "PRISMA_BEGIN": _awk_string(g.PRISMA_BEGIN_REASON),
    "DATABASE": _awk_string(g.DATABASE_REASON),
    "ONE_DATABASE": _awk_string(g.ONE_DATABASE_REMEDY),
    "COPY_LINE": _awk_string(g.COPY_LINE_REASON),
    "AFTER_UNRESTRICT": _awk_string(g.AFTER_UNRESTRICT_REASON),
    "DUMP_REMEDY": _awk_string(g.DUMP_REMEDY),
    "DOWN_REMEDY": _awk_string(g.DOWN_SQL_REMEDY),
    "AMBIGUOUS": _awk_string(g.AMBIGUOUS_STRING_REASON),
    "AMBIGUOUS_REMEDY": _awk_string(g.AMBIGUOUS_STRING_REMEDY),
    "CONNECT": _awk_string(g.CONNECT_REASON),
    "META_TAIL": _awk_string(g.meta_command_reason("\0").split("\0", 1)[1]),
    "PLAIN_SQL": _awk_string(g.PLAIN_SQL_REMEDY),
    "VARIABLE": _awk_string(g.VARIABLE_REASON),
    "UNCLOSED": _awk_string(g.UNCLOSED_REASON),
    "NEVER_CLOSED": _awk_string(g.NEVER_CLOSED_REASON),
}


def _program() -> str:
    text = _PROGRAM
    for name, value in _WORDS.items():
        text = text.replace(f"@{name}@", value)
    return text


GUARD_AWK = _program()
