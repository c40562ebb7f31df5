#!/usr/bin/env bash
# readme-example.sh — the README's worked example (examples/toy_krmd.c) prints exactly the line
# README.md says it prints ("It prints `h_{T-K} = …`"), so neither can change without the other.
#
#   bash tests/readme-example.sh EXAMPLE README REAL
#
# REAL is the build's real type: the README quotes the double build, so a float build skips
# (exit 77, meson's "skipped").  Exit status 0 when the lines agree, 1 otherwise.
set -uo pipefail

exe=$1 readme=$2 real=$3
if [ "$real" != double ]; then
  echo "skipped: README.md quotes the double build's output, this build is $real"
  exit 77
fi
# The README's sentence may be wrapped anywhere: read it as one line, spaces squeezed.
# shellcheck disable=SC2016 # the backquotes are the README's, not a command
quoted=$(tr '\n' ' ' <"$readme" | sed -n 's/.*It prints `\(h_{T-K} = [^`]*\)`.*/\1/p' | tr -s ' ')
if [ -z "$quoted" ]; then
  echo "$readme: no sentence 'It prints \`h_{T-K} = ...\`' quoting the example's output"
  exit 1
fi
out=$("$exe")
status=$?
if [ "$status" -ne 0 ]; then
  echo "$exe exited with status $status"
  exit 1
fi
out=$(printf '%s' "$out" | tr '\n' ' ' | tr -s ' ' | sed 's/ $//')
if [ "$out" != "$quoted" ]; then
  echo "the example prints: $out"
  echo "README.md says:     $quoted"
  exit 1
fi
echo "the example prints what README.md says: $out"
