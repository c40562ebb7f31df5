#!/usr/bin/env bash
# guide.sh — docs/guide.md shows what the code is and prints now, so the guide cannot rot.
#
#   bash tests/guide.sh EXAMPLES_DIR SOURCE_ROOT REAL [--update]
#
# The guide marks what it quotes with HTML comments (invisible when rendered), each followed by
# the fenced block it vouches for:
#   <!-- output: guide-scalar [ARGS] -->   what EXAMPLES_DIR/guide-scalar ARGS prints (stdout and
#                                          stderr, as a terminal shows them); it must exit 0
#   <!-- source: examples/guide_scalar.c --> that file, whole
#   <!-- quote: ad/grad.c collect [NAME...] --> those definitions, from the line that defines NAME
#                                          to the first "}" or "};" at the start of a line,
#                                          separated by a blank line; a NAME written /TEXT/ is
#                                          the first line that contains TEXT
#   <!-- figure: guide-before guide-horizon --dot before -->
#                                          (no block) docs/figures/guide-before.dot is what the
#                                          command prints on stdout (what scripts/guide-figures.sh
#                                          keeps; stderr is shown, not compared), guide-before.png
#                                          was drawn from it (below), and the guide shows it
# and it links definitions by line: [`collect`](../ad/grad.c#L208) must point at the line that
# defines collect.  Every examples/guide_*.c must be quoted whole and its output shown.
#
# A PNG is checked against its .dot twice.  docs/figures/guide-figures.sha256, which
# scripts/guide-figures.sh writes, holds the SHA-256 of every .dot and .png it drew and the
# Graphviz version it drew them with: both files must still be the pair it drew (a PNG copied
# over another, or a .dot changed without a redraw, fails on any machine).  And where the local
# `dot -V` is that version (Debian 12's in CI), `dot -Tpng` of the .dot must give the PNG byte
# for byte; another version may lay out differently, so there that comparison is skipped, said.
#
# README.md: a line that runs a guide program, `build/double/examples/guide-NAME [ARGS]  # ...`,
# quotes figures in its comment; every number there (commas dropped) must be a word of what
# the program prints now.
#
# With --update the blocks and line anchors are rewritten from the code instead of checked
# (figures: scripts/guide-figures.sh).  REAL is the build's real type: the guide quotes the double
# build, so another build skips (exit 77, meson's "skipped").  Exit status 0 when all agrees.
set -uo pipefail

if [ $# -lt 3 ] || [ $# -gt 4 ] || { [ $# -eq 4 ] && [ "$4" != --update ]; }; then
  echo "usage: bash tests/guide.sh EXAMPLES_DIR SOURCE_ROOT REAL [--update]" >&2
  exit 2
fi
exdir=$1 root=$2 real=$3 update=${4:-}
if [ "$real" != double ]; then
  echo "skipped: docs/guide.md quotes the double build's output, this build is $real"
  exit 77
fi
exdir=$(cd "$exdir" && pwd) && root=$(cd "$root" && pwd) || exit 1  # the programs run elsewhere
guide=$root/docs/guide.md
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "docs/guide.md:$1"; failures=$((failures + 1)); }

# define_line FILE NAME: the number of the line that defines NAME (a function, or a struct or
# array at file scope): it starts a line, names NAME followed by "(", " {" or " =", and does not
# end in ";" (a declaration).  Empty when there is none.
define_line() {
  awk -v name="$2" '
    index($0, name) && $0 ~ /^[A-Za-z_]/ && $0 !~ /;[ \t]*$/ {
      rest = $0
      while ((at = index(rest, name)) > 0) {
        before = at > 1 ? substr(rest, at - 1, 1) : " "
        after = substr(rest, at + length(name), 2)
        if (before !~ /[A-Za-z0-9_]/ && (after ~ /^\(/ || after == " {" || after == " =")) {
          print NR; exit
        }
        rest = substr(rest, at + length(name))
      }
    }' "$1"
}

# quote FILE NAME...: the definitions, as the quote marker says.
quote() {
  local file=$1 first=1 name line
  shift
  for name in "$@"; do
    if [[ $name == /*/ ]]; then  # /TEXT/: the first line that contains TEXT
      [ $first -eq 1 ] || echo
      first=0
      grep -F -m 1 -- "${name:1:${#name}-2}" "$root/$file" || echo "(no line with ${name} in $file)"
      continue
    fi
    line=$(define_line "$root/$file" "$name")
    if [ -z "$line" ]; then
      echo "(no definition of $name in $file)"
      continue
    fi
    [ $first -eq 1 ] || echo
    first=0
    awk -v from="$line" 'NR >= from { print } NR >= from && /^}/ { exit }' "$root/$file"
  done
}

# produce KIND ARGS...: the text a marker vouches for, into $tmp/want; 1 if it cannot be made.
# KIND output: what the program prints, stdout and stderr as a terminal shows them; KIND drawing:
# its stdout alone (a figure's .dot), its stderr into $tmp/err.
produce() {
  local kind=$1
  shift
  case $kind in
    output | drawing)
      local prog=$1 rc=0
      shift
      if [ ! -x "$exdir/$prog" ]; then
        echo "no program $exdir/$prog" >"$tmp/want"
        return 1
      fi
      if [ "$kind" = output ]; then
        (cd "$tmp" && "$exdir/$prog" "$@") >"$tmp/want" 2>&1 || rc=$?
      else
        (cd "$tmp" && "$exdir/$prog" "$@") >"$tmp/want" 2>"$tmp/err" || rc=$?
      fi
      [ $rc -eq 0 ] || {
        [ "$kind" = output ] || tail -n 3 "$tmp/err" >>"$tmp/want"
        echo "($prog${*:+ $*} exited with status $rc)" >>"$tmp/want"
        return 1
      } ;;
    source)
      cat "$root/$1" >"$tmp/want" 2>/dev/null || { echo "(no file $1)" >"$tmp/want"; return 1; } ;;
    quote)
      quote "$@" >"$tmp/want"
      ! grep -q '^(no \(definition of\|line with\) ' "$tmp/want" || return 1 ;;
  esac
  return 0
}

# The figures' record (scripts/guide-figures.sh): "SHA256  FILE" lines, and "# graphviz: VERSION".
record=$root/docs/figures/guide-figures.sha256
drawn_with=$(sed -n 's/^# graphviz: //p' "$record" 2>/dev/null)
local_dot=$(dot -V 2>&1) || local_dot=""
redraw=0
if [ -n "$drawn_with" ] && [ "$local_dot" = "$drawn_with" ]; then
  redraw=1
else
  echo "note: PNGs not redrawn to compare (figures drawn with '${drawn_with:-?}', here '${local_dot:-no dot}'); their checksums are checked"
fi
# recorded FILE: 0 when docs/figures/FILE is what the record says scripts/guide-figures.sh drew.
recorded() {
  local want
  want=$(awk -v f="$1" '$2 == f { print $1; exit }' "$record" 2>/dev/null)
  [ -n "$want" ] && [ "$(sha256sum <"$root/docs/figures/$1" | cut -d' ' -f1)" = "$want" ]
}

mapfile -t lines <"$guide"
out=()          # the guide as it should read (written back with --update)
shown=()        # the programs whose output the guide shows, and the files it quotes whole
n=${#lines[@]}
i=0
while ((i < n)); do
  line=${lines[$i]}
  out+=("$line")
  i=$((i + 1))
  if [[ $line =~ ^'<!-- figure: '([^ ]+)' '(.*)' -->'$ ]]; then
    name=${BASH_REMATCH[1]}
    read -ra cmd <<<"${BASH_REMATCH[2]}"
    if ! produce drawing "${cmd[@]}"; then
      fail "$i: figure $name: ${cmd[*]} failed: $(tail -n 1 "$tmp/want")"
    elif ! cmp -s "$tmp/want" "$root/docs/figures/$name.dot"; then
      fail "$i: docs/figures/$name.dot is not what ${cmd[*]} prints now (scripts/guide-figures.sh)"
    fi
    [ ! -s "$tmp/err" ] || { echo "note: ${cmd[*]} wrote on stderr:"; head -n 5 "$tmp/err"; }
    if [ ! -f "$root/docs/figures/$name.png" ]; then
      fail "$i: docs/figures/$name.png is missing"
    elif ! recorded "$name.dot" || ! recorded "$name.png"; then
      fail "$i: docs/figures/$name.png and $name.dot are not the pair scripts/guide-figures.sh drew (docs/figures/guide-figures.sha256)"
    elif [ $redraw -eq 1 ] && ! dot -Tpng "$root/docs/figures/$name.dot" | cmp -s - "$root/docs/figures/$name.png"; then
      fail "$i: docs/figures/$name.png is not what dot -Tpng draws from $name.dot (scripts/guide-figures.sh)"
    fi
    grep -q "(figures/$name.png)" "$guide" || fail "$i: the guide never shows figures/$name.png"
    continue
  fi
  [[ $line =~ ^'<!-- '(output|source|quote)': '(.*)' -->'$ ]] || continue
  kind=${BASH_REMATCH[1]}
  read -ra what <<<"${BASH_REMATCH[2]}"
  [ "$kind" = quote ] || shown+=("$kind:${what[0]}")
  # the fenced block that follows (blank lines may come between)
  while ((i < n)) && [ -z "${lines[$i]}" ]; do out+=(""); i=$((i + 1)); done
  if ((i >= n)) || [[ ${lines[$i]} != '```'* ]]; then
    fail "$i: $kind marker without a fenced block after it"
    continue
  fi
  out+=("${lines[$i]}")
  start=$i
  i=$((i + 1))
  block=()
  while ((i < n)) && [ "${lines[$i]}" != '```' ]; do block+=("${lines[$i]}"); i=$((i + 1)); done
  made=1
  if ! produce "$kind" "${what[@]}"; then
    fail "$((start + 1)): $kind ${what[*]}: $(tail -n 1 "$tmp/want")"
    made=0
  fi
  if [ ${#block[@]} -gt 0 ]; then printf '%s\n' "${block[@]}" >"$tmp/have"; else : >"$tmp/have"; fi
  if [ $made -eq 0 ]; then
    :  # reported above; an update keeps the old block
  elif ! cmp -s "$tmp/want" "$tmp/have"; then
    if [ "$update" = --update ]; then
      echo "docs/guide.md:$((start + 1)): $kind ${what[*]}: updated"
    else
      fail "$((start + 1)): the block differs from $kind ${what[*]} (< guide, > now):"
      diff "$tmp/have" "$tmp/want" | head -n 20
    fi
  fi
  mapfile -t fresh <"$tmp/want"
  if [ "$update" = --update ] && [ $made -eq 1 ]; then out+=("${fresh[@]}"); else out+=("${block[@]}"); fi
  if ((i < n)); then out+=("${lines[$i]}"); i=$((i + 1)); fi
done

# Line anchors: [`name`](../path#Lnnn) must point at name's definition.
text=$(printf '%s\n' "${out[@]}")
# shellcheck disable=SC2016 # the backquotes are Markdown's, not a command
link_pattern='\[`[A-Za-z_][A-Za-z0-9_]*\(()\)\?`\](\.\./[^)]*#L[0-9]*)'
while read -r link; do
  [ -n "$link" ] || continue
  [[ $link =~ ^\[\`([A-Za-z_][A-Za-z0-9_]*)(\(\))?\`\]\(\.\./([^#\)]+)#L([0-9]+)\)$ ]] || continue
  name=${BASH_REMATCH[1]} file=${BASH_REMATCH[3]} at=${BASH_REMATCH[4]}
  if [ ! -f "$root/$file" ]; then
    fail " link to $file, which does not exist"
    continue
  fi
  now=$(define_line "$root/$file" "$name")
  if [ -z "$now" ]; then
    fail " link to $name in $file, which does not define it"
  elif [ "$now" != "$at" ]; then
    if [ "$update" = --update ]; then
      echo "docs/guide.md: $name: $file#L$at -> #L$now"
      text=${text//"$link"/"${link%#L*}#L$now)"}
    else
      fail " [\`$name\`](../$file#L$at): $name is defined at line $now now (tests/guide.sh --update)"
    fi
  fi
done < <(grep -o "$link_pattern" <<<"$text" | sort -u)
# Plain links into the repository must lead somewhere.
while read -r target; do
  [ -e "$root/docs/${target%%#*}" ] || fail " link to ${target%%#*}, which does not exist"
done < <(grep -o '](\(\.\./\|figures/\)[^)]*)' <<<"$text" | sed 's/^](//; s/)$//' | sort -u)

# Every step is in the guide: its program quoted whole, and what it prints.
for src in "$root"/examples/guide_*.c; do
  base=$(basename "$src" .c)
  prog=guide-${base#guide_}
  [[ " ${shown[*]} " == *" source:examples/$base.c "* ]] || fail " examples/$base.c is never quoted whole"
  [[ " ${shown[*]} " == *" output:$prog "* ]] || fail " the output of $prog is never shown"
done
# No figure without a marker (a stale one would go on being shown).
for dot in "$root"/docs/figures/guide-*.dot; do
  [ -e "$dot" ] || continue
  name=$(basename "$dot" .dot)
  grep -q "^<!-- figure: $name " "$guide" || fail " docs/figures/$name.dot has no figure marker"
done

# README.md's figures from the guide's programs.
while IFS= read -r line; do
  [[ $line =~ ^build/double/examples/(guide-[a-z0-9]+)([^#]*)'#'(.*)$ ]] || continue
  read -ra cmd <<<"${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
  quoted=${BASH_REMATCH[3]}
  if ! produce output "${cmd[@]}"; then
    fail " README.md: ${cmd[*]} failed: $(tail -n 1 "$tmp/want")"
    continue
  fi
  for number in $(grep -oE '[0-9][0-9,]*(\.[0-9]+)?' <<<"$quoted" | tr -d ,); do
    grep -qwF -- "$number" "$tmp/want" ||
      fail " README.md quotes $number beside ${cmd[*]}, which no longer prints it"
  done
done < <(cat "$root/README.md" 2>/dev/null)

if [ "$update" = --update ]; then
  printf '%s\n' "$text" >"$guide"
  echo "docs/guide.md rewritten ($failures other problems)"
fi
if [ $failures -gt 0 ]; then
  echo "$failures problems: the guide no longer shows what the code does"
  exit 1
fi
echo "docs/guide.md agrees with the code: ${#shown[@]} programs and files quoted"
